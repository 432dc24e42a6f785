//! Checks of route filters beyond their types: the filter types each place allows, one config
//! per filter, single-use types at most once per rule, header names and values, replacement
//! paths, mirror shares and extension references.

use super::{
    EXTENSION_GROUP, ExtensionRef, HttpHeaderFilter, HttpPathModifier, HttpPathModifierType,
    HttpRequestMirrorFilter, HttpRouteFilter, HttpRouteFilterType as T,
};
use crate::meta::is_dns_subdomain;
use crate::route::{HttpRouteMatch, MAX_HEADERS, PathMatchType, check_header_name, service_ref};
use crate::validate::Validator;
use crate::yaml::FieldPath;

/// Gateway API's limit on the filters of a rule or backend.
const MAX_FILTERS: usize = 16;

/// Filter types a rule may hold at most once.
const SINGLE_USE: [T; 4] = [
    T::RequestHeaderModifier,
    T::ResponseHeaderModifier,
    T::RequestRedirect,
    T::UrlRewrite,
];

/// Where a list of filters is, which decides the filter types it may hold.
#[derive(Clone, Copy)]
pub(crate) enum FilterScope<'a> {
    /// An HTTPRoute rule with these matches (a `ReplacePrefixMatch` needs them all to be
    /// `PathPrefix`).
    HttpRule(&'a [HttpRouteMatch]),
    /// A GRPCRoute rule.
    GrpcRule,
    /// A backendRef of either route kind.
    Backend,
}

impl FilterScope<'_> {
    /// Why `t` is not allowed here, or `None` when it is.
    fn refuses(self, t: T) -> Option<String> {
        match (self, t) {
            (_, T::Cors) => Some(format!(
                "filter type `{t}` is not supported by Trellis; remove the filter"
            )),
            (Self::HttpRule(_), _)
            | (_, T::RequestHeaderModifier | T::ResponseHeaderModifier)
            | (Self::GrpcRule, T::RequestMirror | T::ExtensionRef) => None,
            (Self::Backend, _) => Some(format!(
                "only RequestHeaderModifier and ResponseHeaderModifier are supported on backendRefs, found `{t}`"
            )),
            (Self::GrpcRule, _) => Some(format!(
                "only RequestHeaderModifier, ResponseHeaderModifier, RequestMirror and ExtensionRef are supported on GRPCRoute rules, found `{t}`"
            )),
        }
    }
}

/// Checks the `filters` list at `path`.
pub(crate) fn validate_filters(
    filters: &[HttpRouteFilter],
    scope: FilterScope<'_>,
    path: &FieldPath,
    v: &mut Validator<'_>,
) {
    v.max_items(path, filters, MAX_FILTERS);
    for (i, f) in filters.iter().enumerate() {
        let path = path.index(i);
        let t = f.filter_type;
        if let Some(reason) = scope.refuses(t) {
            v.error(&path.key("type"), reason);
            continue;
        }
        let earlier = |wanted: T| filters[..i].iter().position(|e| e.filter_type == wanted);
        if let Some(j) = earlier(t).filter(|_| SINGLE_USE.contains(&t)) {
            v.error(
                &path.key("type"),
                format!("at most one {t} filter is allowed here, and filters[{j}] is one already"),
            );
        }
        let conflicting = match t {
            T::RequestRedirect => Some(T::UrlRewrite),
            T::UrlRewrite => Some(T::RequestRedirect),
            _ => None,
        };
        if let Some((j, other)) = conflicting.and_then(|o| Some((earlier(o)?, o))) {
            v.error(
                &path.key("type"),
                format!(
                    "{t} and {other} cannot be on the same rule, and filters[{j}] is a {other}"
                ),
            );
        }
        if let Some(e) = &f.extension_ref {
            let same_kind = filters[..i].iter().position(|e2| {
                e2.extension_ref
                    .as_ref()
                    .is_some_and(|e2| e2.kind == e.kind)
            });
            if let Some(j) = same_kind {
                v.error(
                    &path.key("extensionRef").key("kind"),
                    format!(
                        "at most one ExtensionRef to a {} is allowed per rule, and filters[{j}] is one already",
                        e.kind
                    ),
                );
            }
        }
        validate_config(f, scope, &path, v);
    }
}

/// Checks that exactly the config field of the filter's type is given, and that config.
fn validate_config(
    f: &HttpRouteFilter,
    scope: FilterScope<'_>,
    path: &FieldPath,
    v: &mut Validator<'_>,
) {
    let t = f.filter_type;
    for other in T::ALL.into_iter().filter(|o| *o != t && f.has_config(*o)) {
        v.error(
            &path.key(other.config_field()),
            format!(
                "`{}` is only allowed with type {other}; this filter's type is {t}",
                other.config_field()
            ),
        );
    }
    let config = path.key(t.config_field());
    if !f.has_config(t) {
        v.error(
            &config,
            format!("missing required field `{}` for type {t}", t.config_field()),
        );
    }
    let matches = match scope {
        FilterScope::HttpRule(matches) => matches,
        FilterScope::GrpcRule | FilterScope::Backend => &[],
    };
    let header = match t {
        T::RequestHeaderModifier => f.request_header_modifier.as_ref(),
        T::ResponseHeaderModifier => f.response_header_modifier.as_ref(),
        _ => None,
    };
    if let Some(m) = header {
        validate_header_filter(m, &config, v);
    }
    if let (T::RequestRedirect, Some(r)) = (t, &f.request_redirect) {
        validate_hostname(r.hostname.as_deref(), &config.key("hostname"), v);
        if let Some(p) = &r.path {
            validate_path_modifier(p, matches, &config.key("path"), v);
        }
    }
    if let (T::UrlRewrite, Some(r)) = (t, &f.url_rewrite) {
        validate_hostname(r.hostname.as_deref(), &config.key("hostname"), v);
        if let Some(p) = &r.path {
            validate_path_modifier(p, matches, &config.key("path"), v);
        }
    }
    if let (T::RequestMirror, Some(m)) = (t, &f.request_mirror) {
        validate_mirror(m, &config, v);
    }
    if let (T::ExtensionRef, Some(e)) = (t, &f.extension_ref) {
        validate_extension_ref(e, &config, v);
    }
}

fn validate_extension_ref(e: &ExtensionRef, path: &FieldPath, v: &mut Validator<'_>) {
    let supported =
        "ExtensionRef supports group `trellis.dev` with kind FaultInjection or RateLimit";
    match e.group.as_str() {
        EXTENSION_GROUP => {}
        "" => v.error(
            &path.key("group"),
            format!("missing required field `group`; {supported}"),
        ),
        other => v.error(
            &path.key("group"),
            format!("expected group `{EXTENSION_GROUP}`, found `{other}`; {supported}"),
        ),
    }
    if !is_dns_subdomain(&e.name) {
        v.error(
            &path.key("name"),
            format!(
                "expected the name of a resource (lower-case letters, digits, '-' and '.'), found `{}`",
                e.name
            ),
        );
    }
}

fn validate_header_filter(m: &HttpHeaderFilter, path: &FieldPath, v: &mut Validator<'_>) {
    v.max_items(&path.key("set"), &m.set, MAX_HEADERS);
    v.max_items(&path.key("add"), &m.add, MAX_HEADERS);
    v.max_items(&path.key("remove"), &m.remove, MAX_HEADERS);
    let set = m.set.iter().enumerate();
    let set = set.map(|(i, h)| ("set", i, h.name.as_str(), Some(h.value.as_str())));
    let add = m.add.iter().enumerate();
    let add = add.map(|(i, h)| ("add", i, h.name.as_str(), Some(h.value.as_str())));
    let remove = m.remove.iter().enumerate();
    let remove = remove.map(|(i, name)| ("remove", i, name.as_str(), None));
    // Each name given so far, lower-cased, with where it was given (`set[0]`).
    let mut seen: Vec<(String, String)> = Vec::new();
    for (list, i, name, value) in set.chain(add).chain(remove) {
        let entry = path.key(list).index(i);
        if value.is_some_and(|value| value.contains(['\r', '\n', '\0'])) {
            v.error(
                &entry.key("value"),
                "expected a header value without CR, LF or NUL characters",
            );
        }
        let name_path = match value {
            Some(_) => entry.key("name"),
            None => entry,
        };
        if !check_header_name(name, &name_path, v) {
            continue;
        }
        let lower = name.to_ascii_lowercase();
        if lower == "host" {
            // Envoy refuses a route config that modifies `host`: one such header would get
            // every route of the service rejected.
            v.error(
                &name_path,
                "the `Host` header cannot be changed by a header filter; use a URLRewrite filter's `hostname`",
            );
        } else if let Some((_, first)) = seen.iter().find(|(n, _)| *n == lower) {
            v.error(
                &name_path,
                format!(
                    "header `{name}` is already in {first}; a header may appear once across set, add and remove"
                ),
            );
        } else {
            seen.push((lower, format!("{list}[{i}]")));
        }
    }
}

fn validate_hostname(hostname: Option<&str>, path: &FieldPath, v: &mut Validator<'_>) {
    if let Some(h) = hostname
        && !is_dns_subdomain(h)
    {
        v.error(
            path,
            format!(
                "expected a host name such as `shop.example.com` (lower-case letters, digits, '-' and '.'), found `{h}`"
            ),
        );
    }
}

fn validate_path_modifier(
    m: &HttpPathModifier,
    matches: &[HttpRouteMatch],
    path: &FieldPath,
    v: &mut Validator<'_>,
) {
    use HttpPathModifierType::{ReplaceFullPath, ReplacePrefixMatch};
    let (field, other, other_type, other_given) = match m.modifier_type {
        ReplaceFullPath => (
            "replaceFullPath",
            "replacePrefixMatch",
            ReplacePrefixMatch,
            m.replace_prefix_match.is_some(),
        ),
        ReplacePrefixMatch => (
            "replacePrefixMatch",
            "replaceFullPath",
            ReplaceFullPath,
            m.replace_full_path.is_some(),
        ),
    };
    if other_given {
        v.error(
            &path.key(other),
            format!(
                "`{other}` is only allowed with type {other_type:?}; this modifier's type is {:?}",
                m.modifier_type
            ),
        );
    }
    match m.value() {
        None => v.error(
            &path.key(field),
            format!(
                "missing required field `{field}` for type {:?}",
                m.modifier_type
            ),
        ),
        Some(p) if !p.starts_with('/') => v.error(
            &path.key(field),
            format!("expected a path starting with '/', found `{p}`"),
        ),
        Some(_) => {}
    }
    if m.modifier_type == ReplacePrefixMatch
        && let Some((k, found)) = matches
            .iter()
            .enumerate()
            .find(|(_, m)| m.path.match_type != PathMatchType::PathPrefix)
    {
        v.error(
            &path.key("type"),
            format!(
                "ReplacePrefixMatch needs every match of the rule to have a PathPrefix path, but matches[{k}] has {:?}",
                found.path.match_type
            ),
        );
    }
}

fn validate_mirror(m: &HttpRequestMirrorFilter, path: &FieldPath, v: &mut Validator<'_>) {
    let b = &m.backend_ref;
    service_ref(&b.group, &b.kind, &path.key("backendRef"), v);
    if m.percent.is_some() && m.fraction.is_some() {
        v.error(
            &path.key("fraction"),
            "give `percent` or `fraction`, not both",
        );
    }
    if let Some(f) = m.fraction
        && f.numerator > f.denominator
    {
        v.error(
            &path.key("fraction").key("numerator"),
            format!(
                "expected at most the denominator ({}), found {}",
                f.denominator, f.numerator
            ),
        );
    }
}
