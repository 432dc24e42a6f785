//! What a matched route does: forward to weighted clusters (with rewrites, mirrors, timeouts
//! and per-cluster header changes), redirect, or answer directly.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use envoy_types::pb::envoy::config::core::v3::data_source::Specifier;
use envoy_types::pb::envoy::config::route::v3::redirect_action::{
    PathRewriteSpecifier, RedirectResponseCode, SchemeRewriteSpecifier,
};
use envoy_types::pb::envoy::config::route::v3::route_action::{
    ClusterSpecifier, RequestMirrorPolicy,
};
use envoy_types::pb::envoy::config::route::v3::{
    DirectResponseAction, RedirectAction, RouteAction as PbRouteAction,
};
use envoy_types::pb::envoy::r#type::matcher::v3::RegexMatchAndSubstitute;
use http::{HeaderValue, StatusCode};
use regex::Regex;

use super::hash::RequestHash;
use super::headers::HeaderMutations;
use super::retry::{self, Retry};
use crate::config::fraction::Fraction;
use crate::config::weighted::Weighted;
use crate::config::{FieldError, duration, reject_set};
use crate::telemetry::{Direction, Metrics, RouteClusterStats};

/// Envoy's route timeout when `timeout` is not set.
const DEFAULT_ROUTE_TIMEOUT: Duration = Duration::from_secs(15);

/// A compiled route action.
#[derive(Debug)]
pub(crate) enum Action {
    /// Forward upstream.
    Forward(RouteAction),
    /// Answer with a redirect.
    Redirect(Redirect),
    /// Answer with a fixed status and body.
    Direct(DirectResponse),
}

/// A compiled `RouteAction`.
#[derive(Debug)]
pub(crate) struct RouteAction {
    /// The weighted clusters (one with all the weight for `cluster`).
    pub(crate) clusters: Weighted<RouteTarget>,
    /// Time allowed until the upstream response headers; `None` disables it.
    pub(crate) timeout: Option<Duration>,
    /// Time allowed for each try (the retry policy's `per_try_timeout`).
    pub(crate) per_try_timeout: Option<Duration>,
    /// How failed tries are retried; `None`: they are not.
    pub(crate) retry: Option<Retry>,
    /// Per-route override of the listener's WebSocket upgrade setting.
    pub(crate) websocket: Option<bool>,
    /// Status sent when the chosen cluster does not exist.
    pub(crate) cluster_not_found: StatusCode,
    /// Path rewrite before forwarding.
    pub(crate) rewrite: Option<PathRewrite>,
    /// `Host` / `:authority` sent upstream instead of the client's.
    pub(crate) host_rewrite: Option<HeaderValue>,
    /// Clusters that get a copy of (a share of) the requests.
    pub(crate) mirrors: Vec<Mirror>,
    /// Where the consistent-hash key comes from (ring-hash and Maglev clusters).
    pub(crate) hash: Vec<RequestHash>,
}

impl RouteAction {
    /// The limit on waiting for response headers when there is a single try.
    pub(crate) fn try_timeout(&self) -> Option<Duration> {
        match (self.timeout, self.per_try_timeout) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }
}

/// One cluster a route sends to, with its header changes and stats handles per direction.
#[derive(Debug)]
pub(crate) struct RouteTarget {
    /// Cluster name.
    pub(crate) cluster: String,
    /// Changes to requests sent to this cluster (applied before the route's).
    pub(crate) request_headers: HeaderMutations,
    /// Changes to responses from this cluster (applied before the route's).
    pub(crate) response_headers: HeaderMutations,
    stats: [Arc<RouteClusterStats>; 2],
}

impl RouteTarget {
    /// The stats handle for traffic in `direction`.
    pub(crate) fn stats(&self, direction: Direction) -> &RouteClusterStats {
        &self.stats[direction.index()]
    }
}

/// A path rewrite (Envoy's `prefix_rewrite` or `regex_rewrite`).
#[derive(Debug)]
pub(crate) enum PathRewrite {
    /// The part of the path the route matched is replaced.
    Prefix(String),
    /// Every match of the regex in the path (not the query) is replaced.
    Regex {
        /// The pattern.
        regex: Regex,
        /// The replacement, in `regex` crate syntax (`${1}` for a group).
        substitution: String,
    },
}

impl PathRewrite {
    /// `path_and_query` rewritten, where the route matched its first `matched` bytes.
    pub(crate) fn apply(&self, path_and_query: &str, matched: usize) -> String {
        match self {
            PathRewrite::Prefix(prefix) => {
                let rest = path_and_query.get(matched..).unwrap_or("");
                format!("{prefix}{rest}")
            }
            PathRewrite::Regex {
                regex,
                substitution,
            } => {
                let (path, query) = match path_and_query.split_once('?') {
                    Some((path, query)) => (path, Some(query)),
                    None => (path_and_query, None),
                };
                let path = regex.replace_all(path, substitution.as_str());
                match query {
                    Some(q) => format!("{path}?{q}"),
                    None => path.into_owned(),
                }
            }
        }
    }

    fn regex(m: &RegexMatchAndSubstitute) -> Result<Self, FieldError> {
        let pattern = m
            .pattern
            .as_ref()
            .ok_or_else(|| FieldError::new("pattern", "is required"))?;
        let regex = Regex::new(&pattern.regex)
            .map_err(|e| FieldError::new("pattern.regex", format!("invalid regex: {e}")))?;
        Ok(PathRewrite::Regex {
            regex,
            substitution: substitution(&m.substitution),
        })
    }

    /// The rewrite as text, for the config dump.
    pub(crate) fn describe(&self) -> String {
        match self {
            PathRewrite::Prefix(p) => format!("prefix_rewrite: {p}"),
            PathRewrite::Regex {
                regex,
                substitution,
            } => format!("regex_rewrite: {} -> {substitution}", regex.as_str()),
        }
    }
}

/// RE2's `\1` group references become `${1}`; a literal `$` becomes `$$`.
fn substitution(re2: &str) -> String {
    let mut out = String::with_capacity(re2.len());
    let mut chars = re2.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '$' => out.push_str("$$"),
            '\\' => match chars.next() {
                Some(d) if d.is_ascii_digit() => {
                    out.push_str("${");
                    out.push(d);
                    out.push('}');
                }
                Some(other) => out.push(other),
                None => out.push('\\'),
            },
            c => out.push(c),
        }
    }
    out
}

/// A cluster that gets copies of requests: fire and forget, its responses dropped.
#[derive(Debug)]
pub(crate) struct Mirror {
    /// Cluster name.
    pub(crate) cluster: String,
    /// Share of requests mirrored; all when `None`.
    pub(crate) fraction: Option<Fraction>,
    /// Whether `-shadow` is appended to the host, as Envoy does by default.
    pub(crate) shadow_host: bool,
}

impl Mirror {
    /// Whether this request is mirrored (a random draw against the fraction).
    pub(crate) fn sampled(&self) -> bool {
        self.fraction.is_none_or(Fraction::sampled)
    }
}

/// A compiled `RedirectAction`.
#[derive(Debug)]
pub(crate) struct Redirect {
    scheme: Option<String>,
    host: Option<String>,
    port: Option<u16>,
    path: Option<RedirectPath>,
    strip_query: bool,
    /// The redirect status (301, 302, 303, 307 or 308).
    pub(crate) status: StatusCode,
}

#[derive(Debug)]
enum RedirectPath {
    Full(String),
    Rewrite(PathRewrite),
}

/// What a redirect needs to know of the request.
#[derive(Debug, Clone, Copy)]
pub(crate) struct RedirectFrom<'a> {
    /// `http` or `https`.
    pub(crate) scheme: &'a str,
    /// `Host` / `:authority`, port included when sent.
    pub(crate) authority: &'a str,
    /// Path with query.
    pub(crate) path_and_query: &'a str,
    /// How many leading bytes of the path the route matched.
    pub(crate) matched: usize,
}

impl Redirect {
    /// The `Location` for a request, as Envoy builds it: the port is dropped when another is
    /// set, or when the scheme changes and it was the old scheme's default.
    pub(crate) fn location(&self, from: RedirectFrom<'_>) -> String {
        let scheme = self.scheme.as_deref().unwrap_or(from.scheme);
        let host = match &self.host {
            Some(host) => host.clone(),
            None => {
                let (name, port) = split_port(from.authority);
                let default_port = match from.scheme {
                    "https" => Some("443"),
                    "http" => Some("80"),
                    _ => None,
                };
                let drop_port = self.port.is_some()
                    || (scheme != from.scheme && port.is_some() && port == default_port);
                if drop_port { name } else { from.authority }.to_owned()
            }
        };
        let port = self.port.map(|p| format!(":{p}")).unwrap_or_default();
        let mut path = match &self.path {
            None => from.path_and_query.to_owned(),
            Some(RedirectPath::Full(p)) if p.contains('?') => p.clone(),
            Some(RedirectPath::Full(p)) => match from.path_and_query.split_once('?') {
                Some((_, query)) => format!("{p}?{query}"),
                None => p.clone(),
            },
            Some(RedirectPath::Rewrite(r)) => r.apply(from.path_and_query, from.matched),
        };
        if self.strip_query
            && let Some(at) = path.find('?')
        {
            path.truncate(at);
        }
        format!("{scheme}://{host}{port}{path}")
    }

    /// The redirect as text, for the config dump.
    pub(crate) fn describe(&self) -> String {
        let path = match &self.path {
            None => String::new(),
            Some(RedirectPath::Full(p)) => format!(" path {p}"),
            Some(RedirectPath::Rewrite(r)) => format!(" {}", r.describe()),
        };
        format!(
            "redirect {} scheme {} host {} port {}{path}",
            self.status.as_u16(),
            self.scheme.as_deref().unwrap_or("-"),
            self.host.as_deref().unwrap_or("-"),
            self.port.map_or("-".to_owned(), |p| p.to_string()),
        )
    }
}

/// `host:port` → (`host`, `Some("port")`); `[v6]:port` too.
fn split_port(authority: &str) -> (&str, Option<&str>) {
    match authority.rsplit_once(':') {
        Some((host, port))
            if !port.is_empty()
                && port.bytes().all(|b| b.is_ascii_digit())
                && (!host.starts_with('[') || host.ends_with(']')) =>
        {
            (host, Some(port))
        }
        _ => (authority, None),
    }
}

/// A compiled `DirectResponseAction`.
#[derive(Debug)]
pub(crate) struct DirectResponse {
    /// The status.
    pub(crate) status: StatusCode,
    /// The body (empty for none).
    pub(crate) body: Bytes,
}

/// Compiles a route's `route` action; stats handles come from `metrics` under `route`.
#[allow(deprecated)]
pub(crate) fn compile_forward(
    a: &PbRouteAction,
    route: &str,
    metrics: &Metrics,
) -> Result<RouteAction, FieldError> {
    reject_set(&[
        ("metadata_match", a.metadata_match.is_some()),
        ("path_rewrite_policy", a.path_rewrite_policy.is_some()),
        ("path_rewrite", !a.path_rewrite.is_empty()),
        ("idle_timeout", a.idle_timeout.is_some()),
        (
            "retry_policy_typed_config",
            a.retry_policy_typed_config.is_some(),
        ),
        ("rate_limits", !a.rate_limits.is_empty()),
        ("cors", a.cors.is_some()),
        (
            "internal_redirect_policy",
            a.internal_redirect_policy.is_some(),
        ),
        ("hedge_policy", a.hedge_policy.is_some()),
        ("max_stream_duration", a.max_stream_duration.is_some()),
    ])?;
    let clusters = compile_clusters(a, route, metrics)?;
    let timeout = match &a.timeout {
        None => Some(DEFAULT_ROUTE_TIMEOUT),
        Some(t) => Some(duration(t, "timeout")?).filter(|d| !d.is_zero()),
    };
    let (per_try_timeout, retry) = match &a.retry_policy {
        Some(p) => retry::compile(p).map_err(|e| e.at("retry_policy"))?,
        None => (None, None),
    };
    let rewrite = match (a.prefix_rewrite.as_str(), &a.regex_rewrite) {
        ("", None) => None,
        (prefix, None) => Some(PathRewrite::Prefix(prefix.to_owned())),
        ("", Some(r)) => Some(PathRewrite::regex(r).map_err(|e| e.at("regex_rewrite"))?),
        (_, Some(_)) => {
            return Err(FieldError::new(
                "regex_rewrite",
                "only one of prefix_rewrite and regex_rewrite may be set",
            ));
        }
    };
    let host_rewrite = match &a.host_rewrite_specifier {
        None => None,
        Some(
            envoy_types::pb::envoy::config::route::v3::route_action::HostRewriteSpecifier::HostRewriteLiteral(h),
        ) => Some(HeaderValue::from_str(h).map_err(|_| {
            FieldError::new("host_rewrite_literal", format!("{h:?} is not a valid host"))
        })?),
        Some(_) => {
            return Err(FieldError::new(
                "host_rewrite_specifier",
                "only host_rewrite_literal is supported",
            ));
        }
    };
    let mirrors = a
        .request_mirror_policies
        .iter()
        .enumerate()
        .map(|(i, m)| mirror(m).map_err(|e| e.at(format!("request_mirror_policies[{i}]"))))
        .collect::<Result<_, _>>()?;
    let hash = a
        .hash_policy
        .iter()
        .enumerate()
        .map(|(i, p)| RequestHash::compile(p).map_err(|e| e.at(format!("hash_policy[{i}]"))))
        .collect::<Result<_, _>>()?;
    let mut websocket = None;
    for (i, u) in a.upgrade_configs.iter().enumerate() {
        if !u.upgrade_type.eq_ignore_ascii_case("websocket") {
            return Err(FieldError::new(
                format!("upgrade_configs[{i}].upgrade_type"),
                format!(
                    "{:?} is not supported (supported: websocket)",
                    u.upgrade_type
                ),
            ));
        }
        reject_set(&[("connect_config", u.connect_config.is_some())])
            .map_err(|e| e.at(format!("upgrade_configs[{i}]")))?;
        websocket = Some(u.enabled.as_ref().is_none_or(|b| b.value));
    }
    let cluster_not_found = match a.cluster_not_found_response_code {
        0 => StatusCode::SERVICE_UNAVAILABLE,
        1 => StatusCode::NOT_FOUND,
        2 => StatusCode::INTERNAL_SERVER_ERROR,
        other => {
            return Err(FieldError::new(
                "cluster_not_found_response_code",
                format!("unknown code {other}"),
            ));
        }
    };
    Ok(RouteAction {
        clusters,
        timeout,
        per_try_timeout,
        retry,
        websocket,
        cluster_not_found,
        rewrite,
        host_rewrite,
        mirrors,
        hash,
    })
}

fn compile_clusters(
    a: &PbRouteAction,
    route: &str,
    metrics: &Metrics,
) -> Result<Weighted<RouteTarget>, FieldError> {
    let target = |cluster: &str, request_headers, response_headers| RouteTarget {
        cluster: cluster.to_owned(),
        request_headers,
        response_headers,
        stats: [Direction::Inbound, Direction::Outbound]
            .map(|d| metrics.route_stats(d, route, cluster)),
    };
    match &a.cluster_specifier {
        Some(ClusterSpecifier::Cluster(c)) if !c.is_empty() => Ok(Weighted::single(target(
            c,
            HeaderMutations::default(),
            HeaderMutations::default(),
        ))),
        Some(ClusterSpecifier::WeightedClusters(wc)) => {
            let mut items = Vec::with_capacity(wc.clusters.len());
            for (i, c) in wc.clusters.iter().enumerate() {
                let field = format!("weighted_clusters.clusters[{i}]");
                reject_set(&[
                    ("cluster_header", !c.cluster_header.is_empty()),
                    ("metadata_match", c.metadata_match.is_some()),
                    (
                        "typed_per_filter_config",
                        !c.typed_per_filter_config.is_empty(),
                    ),
                    ("host_rewrite_specifier", c.host_rewrite_specifier.is_some()),
                ])
                .map_err(|e| e.at(&field))?;
                if c.name.is_empty() {
                    return Err(FieldError::new(
                        format!("{field}.name"),
                        "must not be empty",
                    ));
                }
                let request = HeaderMutations::compile(
                    &c.request_headers_to_add,
                    &c.request_headers_to_remove,
                    "request",
                )
                .map_err(|e| e.at(&field))?;
                let response = HeaderMutations::compile(
                    &c.response_headers_to_add,
                    &c.response_headers_to_remove,
                    "response",
                )
                .map_err(|e| e.at(&field))?;
                items.push((
                    c.weight.as_ref().map_or(0, |w| w.value),
                    target(&c.name, request, response),
                ));
            }
            Weighted::new(items).map_err(|e| e.at("weighted_clusters"))
        }
        Some(ClusterSpecifier::ClusterHeader(_)) => Err(FieldError::unsupported("cluster_header")),
        Some(ClusterSpecifier::Cluster(_)) | None => Err(FieldError::new(
            "cluster_specifier",
            "cluster or weighted_clusters is required",
        )),
        Some(_) => Err(FieldError::unsupported("cluster_specifier_plugin")),
    }
}

fn mirror(m: &RequestMirrorPolicy) -> Result<Mirror, FieldError> {
    reject_set(&[
        ("cluster_header", !m.cluster_header.is_empty()),
        (
            "request_headers_mutations",
            !m.request_headers_mutations.is_empty(),
        ),
        ("host_rewrite_literal", !m.host_rewrite_literal.is_empty()),
    ])?;
    if m.cluster.is_empty() {
        return Err(FieldError::new("cluster", "is required"));
    }
    let fraction = m
        .runtime_fraction
        .as_ref()
        .and_then(|f| f.default_value.as_ref())
        .map(Fraction::compile)
        .transpose()
        .map_err(|e| e.at("runtime_fraction.default_value"))?;
    Ok(Mirror {
        cluster: m.cluster.clone(),
        fraction,
        shadow_host: !m.disable_shadow_host_suffix_append,
    })
}

/// Compiles a `redirect` action.
pub(crate) fn compile_redirect(r: &RedirectAction) -> Result<Redirect, FieldError> {
    let scheme = match &r.scheme_rewrite_specifier {
        None => None,
        Some(SchemeRewriteSpecifier::HttpsRedirect(true)) => Some("https".to_owned()),
        Some(SchemeRewriteSpecifier::HttpsRedirect(false)) => None,
        Some(SchemeRewriteSpecifier::SchemeRedirect(s)) => Some(s.to_ascii_lowercase()),
    };
    let port = match r.port_redirect {
        0 => None,
        p => Some(
            u16::try_from(p)
                .map_err(|_| FieldError::new("port_redirect", format!("{p} is not a port")))?,
        ),
    };
    let path = match &r.path_rewrite_specifier {
        None => None,
        Some(PathRewriteSpecifier::PathRedirect(p)) => Some(RedirectPath::Full(p.clone())),
        Some(PathRewriteSpecifier::PrefixRewrite(p)) => {
            Some(RedirectPath::Rewrite(PathRewrite::Prefix(p.clone())))
        }
        Some(PathRewriteSpecifier::RegexRewrite(m)) => Some(RedirectPath::Rewrite(
            PathRewrite::regex(m).map_err(|e| e.at("regex_rewrite"))?,
        )),
        Some(PathRewriteSpecifier::PathRewrite(_)) => {
            return Err(FieldError::unsupported("path_rewrite"));
        }
    };
    let status = match RedirectResponseCode::try_from(r.response_code) {
        Ok(RedirectResponseCode::MovedPermanently) => StatusCode::MOVED_PERMANENTLY,
        Ok(RedirectResponseCode::Found) => StatusCode::FOUND,
        Ok(RedirectResponseCode::SeeOther) => StatusCode::SEE_OTHER,
        Ok(RedirectResponseCode::TemporaryRedirect) => StatusCode::TEMPORARY_REDIRECT,
        Ok(RedirectResponseCode::PermanentRedirect) => StatusCode::PERMANENT_REDIRECT,
        Err(_) => {
            return Err(FieldError::new(
                "response_code",
                format!("unknown code {}", r.response_code),
            ));
        }
    };
    Ok(Redirect {
        scheme,
        host: Some(r.host_redirect.clone()).filter(|h| !h.is_empty()),
        port,
        path,
        strip_query: r.strip_query,
        status,
    })
}

/// Compiles a `direct_response` action.
pub(crate) fn compile_direct(d: &DirectResponseAction) -> Result<DirectResponse, FieldError> {
    reject_set(&[("body_format", d.body_format.is_some())])?;
    let status = u16::try_from(d.status)
        .ok()
        .filter(|s| (200..600).contains(s))
        .and_then(|s| StatusCode::from_u16(s).ok())
        .ok_or_else(|| FieldError::new("status", format!("{} is not in [200, 600)", d.status)))?;
    let body = match d.body.as_ref().and_then(|b| b.specifier.as_ref()) {
        None => Bytes::new(),
        Some(Specifier::InlineString(s)) => Bytes::from(s.clone()),
        Some(Specifier::InlineBytes(b)) => Bytes::from(b.clone()),
        Some(_) => {
            return Err(FieldError::new(
                "body",
                "only inline_string and inline_bytes are supported",
            ));
        }
    };
    Ok(DirectResponse { status, body })
}

#[cfg(test)]
mod tests;
