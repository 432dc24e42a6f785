//! Route filters (Gateway API `HTTPRouteFilter`): header modifiers, redirects, URL rewrites,
//! request mirrors and extension references (to a FaultInjection or a RateLimit) on a rule or
//! on one backend. HTTPRoute and GRPCRoute share the types; which filter types a place allows
//! is checked in [`validate_filters`].

mod check;

pub(crate) use check::{FilterScope, validate_filters};

use std::fmt;

use serde::de::IgnoredAny;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::bounded;

/// One filter: its `type` and the config field of that type (the others are left out).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HttpRouteFilter {
    /// Which filter this is; the field of the same name holds its config.
    #[serde(rename = "type")]
    pub filter_type: HttpRouteFilterType,
    /// Config of a `RequestHeaderModifier`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_header_modifier: Option<HttpHeaderFilter>,
    /// Config of a `ResponseHeaderModifier`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub response_header_modifier: Option<HttpHeaderFilter>,
    /// Config of a `RequestRedirect`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_redirect: Option<HttpRequestRedirectFilter>,
    /// Config of a `URLRewrite`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url_rewrite: Option<HttpUrlRewriteFilter>,
    /// Config of a `RequestMirror`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_mirror: Option<HttpRequestMirrorFilter>,
    /// Config of an `ExtensionRef`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub extension_ref: Option<ExtensionRef>,
    /// Config of a `CORS` filter, which Trellis rejects.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cors: Option<UnsupportedFilterConfig>,
}

/// The type of an [`HttpRouteFilter`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum HttpRouteFilterType {
    /// Sets, adds and removes request headers.
    RequestHeaderModifier,
    /// Sets, adds and removes response headers.
    ResponseHeaderModifier,
    /// Answers with a redirect instead of forwarding.
    RequestRedirect,
    /// Rewrites the host and path before forwarding.
    #[serde(rename = "URLRewrite")]
    UrlRewrite,
    /// Sends a copy of requests to another Service, ignoring its responses.
    RequestMirror,
    /// A Trellis resource applied to the rule's requests: a FaultInjection or a RateLimit.
    ExtensionRef,
    /// Cross-origin resource sharing; not supported by Trellis.
    #[serde(rename = "CORS")]
    Cors,
}

impl HttpRouteFilterType {
    /// Every type, in the order Gateway API lists them.
    pub(crate) const ALL: [HttpRouteFilterType; 7] = [
        Self::RequestHeaderModifier,
        Self::ResponseHeaderModifier,
        Self::RequestRedirect,
        Self::UrlRewrite,
        Self::RequestMirror,
        Self::ExtensionRef,
        Self::Cors,
    ];

    /// The name as written in YAML, e.g. `URLRewrite`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::RequestHeaderModifier => "RequestHeaderModifier",
            Self::ResponseHeaderModifier => "ResponseHeaderModifier",
            Self::RequestRedirect => "RequestRedirect",
            Self::UrlRewrite => "URLRewrite",
            Self::RequestMirror => "RequestMirror",
            Self::ExtensionRef => "ExtensionRef",
            Self::Cors => "CORS",
        }
    }

    /// The field of [`HttpRouteFilter`] holding this type's config, as written in YAML.
    pub(crate) fn config_field(self) -> &'static str {
        match self {
            Self::RequestHeaderModifier => "requestHeaderModifier",
            Self::ResponseHeaderModifier => "responseHeaderModifier",
            Self::RequestRedirect => "requestRedirect",
            Self::UrlRewrite => "urlRewrite",
            Self::RequestMirror => "requestMirror",
            Self::ExtensionRef => "extensionRef",
            Self::Cors => "cors",
        }
    }
}

impl fmt::Display for HttpRouteFilterType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl HttpRouteFilter {
    /// Whether the config field of `t` is given.
    pub(crate) fn has_config(&self, t: HttpRouteFilterType) -> bool {
        match t {
            HttpRouteFilterType::RequestHeaderModifier => self.request_header_modifier.is_some(),
            HttpRouteFilterType::ResponseHeaderModifier => self.response_header_modifier.is_some(),
            HttpRouteFilterType::RequestRedirect => self.request_redirect.is_some(),
            HttpRouteFilterType::UrlRewrite => self.url_rewrite.is_some(),
            HttpRouteFilterType::RequestMirror => self.request_mirror.is_some(),
            HttpRouteFilterType::ExtensionRef => self.extension_ref.is_some(),
            HttpRouteFilterType::Cors => self.cors.is_some(),
        }
    }
}

/// The config of a filter type Trellis does not implement (`cors`). It is read
/// so that the error names the unsupported type rather than an unknown field; nothing is kept.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct UnsupportedFilterConfig;

impl<'de> Deserialize<'de> for UnsupportedFilterConfig {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        IgnoredAny::deserialize(d)?;
        Ok(Self)
    }
}

impl Serialize for UnsupportedFilterConfig {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_unit()
    }
}

/// Gateway API `LocalObjectReference` of an `ExtensionRef` filter: a Trellis resource in the
/// route's namespace.
///
/// A reference to a resource that does not exist is no load error: as Gateway API asks, the
/// rule then answers every request with an error (500, or 503 on a GRPCRoute) and the route's
/// status says which reference is missing.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ExtensionRef {
    /// `trellis.dev` once validated.
    #[serde(default)]
    pub group: String,
    /// The kind of resource.
    pub kind: ExtensionKind,
    /// The resource's name, in the route's namespace.
    pub name: String,
}

/// The kinds an [`ExtensionRef`] may name.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum ExtensionKind {
    /// A `FaultInjection`: delays and aborts. At most one per rule.
    FaultInjection,
    /// A `RateLimit`: a token bucket for the rule's requests. At most one per rule.
    RateLimit,
}

impl ExtensionKind {
    /// The kind as written in YAML.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::FaultInjection => "FaultInjection",
            Self::RateLimit => "RateLimit",
        }
    }
}

impl fmt::Display for ExtensionKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The API group of the kinds an [`ExtensionRef`] may name.
pub(crate) const EXTENSION_GROUP: &str = "trellis.dev";

/// Gateway API `HTTPHeaderFilter`: header changes, applied as remove, then set, then add.
///
/// Each list has at most 16 entries, and a name (compared case-insensitively) appears at most
/// once across the three lists.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HttpHeaderFilter {
    /// Headers to overwrite (or add when absent).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub set: Vec<HttpHeader>,
    /// Headers to append to any existing values.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub add: Vec<HttpHeader>,
    /// Names of headers to remove.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub remove: Vec<String>,
}

/// A header name and value.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HttpHeader {
    /// The name: an HTTP token, compared case-insensitively.
    pub name: String,
    /// The value, without CR, LF or NUL.
    pub value: String,
}

/// Gateway API `HTTPRequestRedirectFilter`: answer with a redirect to a changed URL.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HttpRequestRedirectFilter {
    /// The scheme of the `Location`; the request's when `None`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scheme: Option<RedirectScheme>,
    /// The host of the `Location`; the request's when `None`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hostname: Option<String>,
    /// How the path changes; unchanged when `None`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<HttpPathModifier>,
    /// The port of the `Location`; derived from the scheme when `None`.
    #[serde(
        default,
        deserialize_with = "bounded::option_port",
        skip_serializing_if = "Option::is_none"
    )]
    pub port: Option<u16>,
    /// 301, 302, 303, 307 or 308; 302 when not given.
    #[serde(
        default = "bounded::found",
        deserialize_with = "bounded::redirect_status"
    )]
    pub status_code: u16,
}

/// The scheme of a redirect.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RedirectScheme {
    /// `http`.
    Http,
    /// `https`.
    Https,
}

impl RedirectScheme {
    /// The scheme as written in a URL.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Http => "http",
            Self::Https => "https",
        }
    }
}

/// Gateway API `HTTPURLRewriteFilter`: change the host and path before forwarding.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HttpUrlRewriteFilter {
    /// The `Host` (`:authority`) to send; unchanged when `None`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hostname: Option<String>,
    /// How the path changes; unchanged when `None`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<HttpPathModifier>,
}

/// Gateway API `HTTPPathModifier`: a new path, or a new prefix in place of the matched one.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HttpPathModifier {
    /// Which replacement; its field is required and the other is forbidden.
    #[serde(rename = "type")]
    pub modifier_type: HttpPathModifierType,
    /// The whole new path, starting with `/`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replace_full_path: Option<String>,
    /// The prefix that replaces the matched `PathPrefix`, starting with `/`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replace_prefix_match: Option<String>,
}

impl HttpPathModifier {
    /// The value of the field `modifier_type` selects (present once validated).
    pub fn value(&self) -> Option<&str> {
        match self.modifier_type {
            HttpPathModifierType::ReplaceFullPath => self.replace_full_path.as_deref(),
            HttpPathModifierType::ReplacePrefixMatch => self.replace_prefix_match.as_deref(),
        }
    }
}

/// The kind of an [`HttpPathModifier`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum HttpPathModifierType {
    /// Replace the whole path.
    ReplaceFullPath,
    /// Replace the prefix the rule's `PathPrefix` match matched.
    ReplacePrefixMatch,
}

/// Gateway API `HTTPRequestMirrorFilter`: send a copy of (a share of) the requests to another
/// Service and ignore its responses.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HttpRequestMirrorFilter {
    /// The Service receiving the copies.
    pub backend_ref: BackendObjectRef,
    /// The share of requests mirrored, 0 to 100; not with `fraction`.
    #[serde(
        default,
        deserialize_with = "bounded::option_percent",
        skip_serializing_if = "Option::is_none"
    )]
    pub percent: Option<u32>,
    /// The share of requests mirrored as a fraction; not with `percent`. Every request is
    /// mirrored when neither is given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fraction: Option<Fraction>,
}

/// A share `numerator / denominator`, at most 1.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Fraction {
    /// 0 to `denominator`.
    #[serde(deserialize_with = "bounded::numerator")]
    pub numerator: u32,
    /// At least 1; 100 when not given.
    #[serde(
        default = "bounded::hundred",
        deserialize_with = "bounded::denominator"
    )]
    pub denominator: u32,
}

/// Gateway API `BackendObjectReference`: a Service, as in a [`super::BackendRef`] but without
/// weight or filters.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct BackendObjectRef {
    /// API group: empty (or `core`) for a Service.
    #[serde(default)]
    pub group: String,
    /// Always `Service` once validated; `Service` when not given.
    #[serde(default = "super::default_service_kind")]
    pub kind: String,
    /// The Service's name.
    pub name: String,
    /// The Service's namespace; the route's namespace when `None`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// The Service port to send to; the port the request arrived on when `None`.
    #[serde(
        default,
        deserialize_with = "bounded::option_port",
        skip_serializing_if = "Option::is_none"
    )]
    pub port: Option<u16>,
}

impl BackendObjectRef {
    /// The Service's namespace, given the route's.
    pub fn namespace_or<'a>(&'a self, route_namespace: &'a str) -> &'a str {
        self.namespace.as_deref().unwrap_or(route_namespace)
    }
}

#[cfg(test)]
mod tests;
