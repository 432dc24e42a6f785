//! Compiles the `envoy.filters.network.http_connection_manager` network filter: codec, route
//! source (RDS name or inline config) and upgrade settings.

use std::sync::Arc;

use envoy_types::pb::envoy::config::core::v3::http1_protocol_options::header_key_format::HeaderFormat;
use envoy_types::pb::envoy::extensions::filters::http::router::v3::Router;
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::http_connection_manager::{
    CodecType, RouteSpecifier,
};
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::http_filter::ConfigType;
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::{
    HttpConnectionManager, HttpFilter,
};
use prost::Name;

use super::fault::Fault;
use super::ratelimit::RateLimit;
use super::route::RouteConfig;
use super::{FieldError, check_ads_source, decode_any, duration, reject_set};
use crate::authz::Rbac;
use crate::telemetry::Metrics;
use envoy_types::pb::envoy::extensions::filters::http::fault::v3::HttpFault;
use envoy_types::pb::envoy::extensions::filters::http::local_ratelimit::v3::LocalRateLimit;
use envoy_types::pb::envoy::extensions::filters::http::rbac::v3::Rbac as HttpRbac;

/// Filter names, as in Envoy.
const ROUTER: &str = "envoy.filters.http.router";
/// The fault filter; also the key of its per-route configs.
pub(crate) const FAULT: &str = "envoy.filters.http.fault";
/// The local rate limit filter; also the key of its per-route configs.
pub(crate) const LOCAL_RATELIMIT: &str = "envoy.filters.http.local_ratelimit";
/// Name of the stateful header formatter that keeps HTTP/1 header case.
const PRESERVE_CASE: &str = "preserve_case";

/// A compiled HTTP connection manager.
#[derive(Debug)]
pub(crate) struct HttpConfig {
    /// `stat_prefix`.
    pub(crate) stat_prefix: String,
    /// Which HTTP versions the downstream side serves.
    pub(crate) codec: Codec,
    /// Where the route table comes from.
    pub(crate) routes: RouteSource,
    /// Whether `Upgrade: websocket` requests are forwarded (routes may override).
    pub(crate) websocket: bool,
    /// `envoy.filters.http.rbac` filters, in order.
    pub(crate) authz: Vec<Rbac>,
    /// `envoy.filters.http.fault`, if in the chain.
    pub(crate) fault: FilterSlot<Fault>,
    /// `envoy.filters.http.local_ratelimit`, if in the chain.
    pub(crate) rate_limit: FilterSlot<RateLimit>,
}

/// An HTTP filter that routes can configure: absent from the chain (route configs for it are
/// ignored, as in Envoy), or present with an optional listener-wide config.
#[derive(Debug)]
pub(crate) enum FilterSlot<T> {
    /// Not in the chain.
    Absent,
    /// In the chain, with this config for routes that have none.
    Present(Option<T>),
}

impl<T> FilterSlot<T> {
    /// The config that applies to a request on a route with `route`'s config.
    pub(crate) fn pick<'a>(&'a self, route: Option<&'a T>) -> Option<&'a T> {
        match self {
            FilterSlot::Absent => None,
            FilterSlot::Present(default) => route.or(default.as_ref()),
        }
    }
}

/// What one HTTP filter of the chain adds.
enum Compiled {
    Nothing,
    Rbac(Rbac),
    Fault(Option<Fault>),
    RateLimit(Option<RateLimit>),
}

/// Downstream codec.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Codec {
    /// HTTP/1.1 and h2c (prior knowledge) on the same port.
    Auto,
    /// HTTP/1.1 only.
    Http1,
    /// h2c only.
    Http2,
}

/// Where an HTTP connection manager gets its routes.
#[derive(Debug)]
pub(crate) enum RouteSource {
    /// RDS, by route configuration name.
    Rds(String),
    /// A `route_config` inside the listener.
    Inline(Arc<RouteConfig>),
}

impl HttpConfig {
    /// Compiles `hcm`; inline routes take their stats handles from `metrics`.
    #[allow(deprecated)]
    pub(crate) fn compile(
        hcm: &HttpConnectionManager,
        metrics: &Metrics,
    ) -> Result<Self, FieldError> {
        reject_set(&[
            ("local_reply_config", hcm.local_reply_config.is_some()),
            (
                "forward_client_cert_details",
                hcm.forward_client_cert_details != 0,
            ),
            (
                "set_current_client_cert_details",
                hcm.set_current_client_cert_details.is_some(),
            ),
            (
                "early_header_mutation_extensions",
                !hcm.early_header_mutation_extensions.is_empty(),
            ),
            (
                "original_ip_detection_extensions",
                !hcm.original_ip_detection_extensions.is_empty(),
            ),
            (
                "http3_protocol_options",
                hcm.http3_protocol_options.is_some(),
            ),
        ])?;
        let codec = match CodecType::try_from(hcm.codec_type) {
            Ok(CodecType::Auto) => Codec::Auto,
            Ok(CodecType::Http1) => Codec::Http1,
            Ok(CodecType::Http2) => Codec::Http2,
            _ => {
                return Err(FieldError::new(
                    "codec_type",
                    "only AUTO, HTTP1 and HTTP2 are supported",
                ));
            }
        };
        let mut authz = Vec::new();
        let mut fault = FilterSlot::Absent;
        let mut rate_limit = FilterSlot::Absent;
        for (i, f) in hcm.http_filters.iter().enumerate() {
            match check_http_filter(f).map_err(|e| e.at(format!("http_filters[{i}]")))? {
                Compiled::Nothing => {}
                Compiled::Rbac(rbac) => authz.push(rbac),
                Compiled::Fault(config) => fault = FilterSlot::Present(config),
                Compiled::RateLimit(config) => rate_limit = FilterSlot::Present(config),
            }
        }
        let routes = match &hcm.route_specifier {
            Some(RouteSpecifier::Rds(rds)) => {
                check_ads_source(rds.config_source.as_ref(), "rds.config_source")?;
                if rds.route_config_name.is_empty() {
                    return Err(FieldError::new(
                        "rds.route_config_name",
                        "must not be empty",
                    ));
                }
                RouteSource::Rds(rds.route_config_name.clone())
            }
            Some(RouteSpecifier::RouteConfig(rc)) => RouteSource::Inline(Arc::new(
                RouteConfig::compile(rc, metrics)
                    .map_err(|e| FieldError::new("route_config", e.to_string()))?,
            )),
            Some(RouteSpecifier::ScopedRoutes(_)) => {
                return Err(FieldError::unsupported("scoped_routes"));
            }
            None => return Err(FieldError::message("rds or route_config is required")),
        };
        let mut websocket = false;
        for (i, u) in hcm.upgrade_configs.iter().enumerate() {
            let field = format!("upgrade_configs[{i}]");
            if !u.upgrade_type.eq_ignore_ascii_case("websocket") {
                return Err(FieldError::new(
                    format!("{field}.upgrade_type"),
                    format!(
                        "{:?} is not supported (supported: websocket)",
                        u.upgrade_type
                    ),
                ));
            }
            reject_set(&[("filters", !u.filters.is_empty())]).map_err(|e| e.at(&field))?;
            websocket = u.enabled.as_ref().is_none_or(|b| b.value);
        }
        if let Some(format) = hcm
            .http_protocol_options
            .as_ref()
            .and_then(|o| o.header_key_format.as_ref())
            .and_then(|f| f.header_format.as_ref())
        {
            check_header_format(format)
                .map_err(|e| e.at("http_protocol_options.header_key_format"))?;
        }
        for (field, d) in [
            ("stream_idle_timeout", &hcm.stream_idle_timeout),
            ("request_timeout", &hcm.request_timeout),
        ] {
            if let Some(d) = d {
                duration(d, field)?;
            }
        }
        Ok(Self {
            stat_prefix: hcm.stat_prefix.clone(),
            codec,
            routes,
            websocket,
            authz,
            fault,
            rate_limit,
        })
    }
}

/// Checks an HTTP filter and compiles what it adds to the request path.
fn check_http_filter(f: &HttpFilter) -> Result<Compiled, FieldError> {
    let typed = match &f.config_type {
        Some(ConfigType::TypedConfig(any)) => Some(any),
        _ => None,
    };
    if let Some(any) = typed {
        if f.disabled && any.type_url != Router::type_url() {
            // Disabled filters only run where a route enables them; routes cannot here.
            return Ok(Compiled::Nothing);
        }
        if any.type_url == HttpRbac::type_url() {
            let rbac: HttpRbac = decode_any(any).map_err(|e| e.at("typed_config"))?;
            if rbac.shadow_rules.is_some()
                || rbac.matcher.is_some()
                || rbac.shadow_matcher.is_some()
            {
                return Err(FieldError::new(
                    "typed_config",
                    "shadow_rules, matcher and shadow_matcher are not supported (use rules)",
                ));
            }
            let compiled = Rbac::compile(rbac.rules.as_ref()).map_err(|e| e.at("typed_config"))?;
            return Ok(compiled.map_or(Compiled::Nothing, Compiled::Rbac));
        }
        if any.type_url == HttpFault::type_url() {
            let fault: HttpFault = decode_any(any).map_err(|e| e.at("typed_config"))?;
            let compiled = Fault::compile(&fault).map_err(|e| e.at("typed_config"))?;
            // An empty listener config injects nothing; routes bring their own.
            let useful = compiled.delay.is_some() || compiled.abort.is_some();
            return Ok(Compiled::Fault(useful.then_some(compiled)));
        }
        if any.type_url == LocalRateLimit::type_url() {
            let limit: LocalRateLimit = decode_any(any).map_err(|e| e.at("typed_config"))?;
            let compiled = RateLimit::compile(&limit).map_err(|e| e.at("typed_config"))?;
            return Ok(Compiled::RateLimit(compiled));
        }
    }
    let is_router = match &f.config_type {
        Some(ConfigType::TypedConfig(any)) => any.type_url == Router::type_url(),
        Some(ConfigType::ConfigDiscovery(_)) => false,
        None => f.name == ROUTER,
    };
    if is_router || f.is_optional || f.disabled {
        return Ok(Compiled::Nothing);
    }
    Err(FieldError::message(format!(
        "unsupported http filter {:?} (supported: {ROUTER}, envoy.filters.http.rbac, {FAULT}, {LOCAL_RATELIMIT})",
        f.name
    )))
}

fn check_header_format(format: &HeaderFormat) -> Result<(), FieldError> {
    match format {
        HeaderFormat::StatefulFormatter(ext) if ext.name == PRESERVE_CASE => Ok(()),
        HeaderFormat::StatefulFormatter(ext) => Err(FieldError::new(
            "stateful_formatter",
            format!(
                "{:?} is not supported (supported: {PRESERVE_CASE})",
                ext.name
            ),
        )),
        HeaderFormat::ProperCaseWords(_) => Err(FieldError::unsupported("proper_case_words")),
    }
}
