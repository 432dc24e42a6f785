//! `/config_dump`: the applied configuration as JSON, built from the compiled table (listeners,
//! route configurations, clusters with their serving endpoints, and each type's version).

use std::collections::BTreeMap;

use serde::Serialize;

use crate::config::cluster::Discovery;
use crate::config::fault::Fault;
use crate::config::http::{FilterSlot, HttpConfig, RouteSource};
use crate::config::listener::{FilterChain, NetworkFilter};
use crate::config::ratelimit::RateLimit;
use crate::config::route::{Action, Route, RouteConfig};
use crate::table::{Cluster, Table};

/// The whole dump.
#[derive(Debug, Serialize)]
pub(crate) struct ConfigDump {
    versions: BTreeMap<&'static str, String>,
    listeners: Vec<ListenerDump>,
    route_configs: Vec<RouteConfigDump>,
    clusters: Vec<ClusterDump>,
}

#[derive(Debug, Serialize)]
struct ListenerDump {
    name: String,
    address: String,
    direction: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    detection_timeout_ms: Option<u128>,
    filter_chains: Vec<ChainDump>,
    #[serde(skip_serializing_if = "Option::is_none")]
    default_filter_chain: Option<ChainDump>,
}

#[derive(Debug, Serialize)]
struct ChainDump {
    name: String,
    application_protocols: Vec<String>,
    filter: FilterDump,
}

#[derive(Debug, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum FilterDump {
    HttpConnectionManager {
        stat_prefix: String,
        #[serde(skip_serializing_if = "Option::is_none")]
        rds: Option<String>,
        #[serde(skip_serializing_if = "Option::is_none")]
        route_config: Option<RouteConfigDump>,
        websocket: bool,
        /// HTTP filters besides RBAC and the router, with their listener-wide configs.
        #[serde(skip_serializing_if = "Vec::is_empty")]
        http_filters: Vec<String>,
    },
    TcpProxy {
        stat_prefix: String,
        clusters: Vec<WeightedDump>,
    },
}

#[derive(Debug, Serialize)]
struct WeightedDump {
    name: String,
    weight: u64,
}

#[derive(Debug, Serialize)]
struct RouteConfigDump {
    name: String,
    virtual_hosts: Vec<VirtualHostDump>,
}

#[derive(Debug, Serialize)]
struct VirtualHostDump {
    name: String,
    domains: Vec<String>,
    routes: Vec<RouteDump>,
}

#[derive(Debug, Serialize)]
struct RouteDump {
    name: String,
    r#match: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    clusters: Vec<WeightedDump>,
    #[serde(skip_serializing_if = "Option::is_none")]
    timeout_ms: Option<u128>,
    #[serde(skip_serializing_if = "Option::is_none")]
    per_try_timeout_ms: Option<u128>,
    /// Rewrites, mirrors, redirects and direct responses, as text.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    actions: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    request_headers: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    response_headers: Vec<String>,
}

#[derive(Debug, Serialize)]
struct ClusterDump {
    name: String,
    discovery: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    service_name: Option<String>,
    lb_policy: &'static str,
    connect_timeout_ms: u128,
    protocol: &'static str,
    endpoints: Vec<EndpointDump>,
}

#[derive(Debug, Serialize)]
struct EndpointDump {
    address: String,
    weight: u32,
    in_flight: u64,
    /// The active health check's verdict (true without one).
    healthy: bool,
    /// Ejected by outlier detection now.
    ejected: bool,
}

impl ConfigDump {
    /// Dumps `table`.
    pub(crate) fn of(table: &Table) -> Self {
        Self {
            versions: table
                .versions
                .iter()
                .map(|(t, v)| (t.short(), v.clone()))
                .collect(),
            listeners: table
                .listeners
                .values()
                .map(|l| ListenerDump {
                    name: l.name.clone(),
                    address: l.address.to_string(),
                    direction: l.direction.as_str(),
                    detection_timeout_ms: l.detect.and_then(|d| d.timeout).map(|t| t.as_millis()),
                    filter_chains: l.chains.iter().map(chain).collect(),
                    default_filter_chain: l.default_chain.as_ref().map(chain),
                })
                .collect(),
            route_configs: table.routes.values().map(|r| route_config(r)).collect(),
            clusters: table.clusters.values().map(|c| cluster(c)).collect(),
        }
    }
}

fn chain(c: &FilterChain) -> ChainDump {
    let filter = match &c.filter {
        NetworkFilter::Http(h) => http(h),
        NetworkFilter::Tcp(t) => FilterDump::TcpProxy {
            stat_prefix: t.stat_prefix.clone(),
            clusters: t
                .clusters
                .iter()
                .map(|(weight, target)| WeightedDump {
                    name: target.cluster.clone(),
                    weight,
                })
                .collect(),
        },
    };
    ChainDump {
        name: c.name.clone(),
        application_protocols: c.protocols.clone(),
        filter,
    }
}

fn http(h: &HttpConfig) -> FilterDump {
    let (rds, route_config) = match &h.routes {
        RouteSource::Rds(name) => (Some(name.clone()), None),
        RouteSource::Inline(rc) => (None, Some(route_config(rc))),
    };
    let mut http_filters = Vec::new();
    if let FilterSlot::Present(fault) = &h.fault {
        http_filters.push(fault.as_ref().map_or("fault".to_owned(), Fault::describe));
    }
    if let FilterSlot::Present(limit) = &h.rate_limit {
        http_filters.push(
            limit
                .as_ref()
                .map_or("local_ratelimit".to_owned(), RateLimit::describe),
        );
    }
    FilterDump::HttpConnectionManager {
        stat_prefix: h.stat_prefix.clone(),
        rds,
        route_config,
        websocket: h.websocket,
        http_filters,
    }
}

fn route_config(rc: &RouteConfig) -> RouteConfigDump {
    RouteConfigDump {
        name: rc.name.clone(),
        virtual_hosts: rc
            .virtual_hosts
            .iter()
            .map(|vh| VirtualHostDump {
                name: vh.name.clone(),
                domains: vh.domains.clone(),
                routes: vh.routes.iter().map(route).collect(),
            })
            .collect(),
    }
}

fn route(r: &Route) -> RouteDump {
    let mut dump = RouteDump {
        name: r.name.clone(),
        r#match: r.matcher.describe(),
        clusters: Vec::new(),
        timeout_ms: None,
        per_try_timeout_ms: None,
        actions: Vec::new(),
        request_headers: r.request_headers.describe(),
        response_headers: r.response_headers.describe(),
    };
    dump.actions.extend(r.fault.as_ref().map(Fault::describe));
    dump.actions
        .extend(r.rate_limit.as_ref().map(RateLimit::describe));
    match &r.action {
        Action::Forward(a) => {
            dump.clusters = a
                .clusters
                .iter()
                .map(|(weight, t)| WeightedDump {
                    name: t.cluster.clone(),
                    weight,
                })
                .collect();
            dump.timeout_ms = a.timeout.map(|t| t.as_millis());
            dump.per_try_timeout_ms = a.per_try_timeout.map(|t| t.as_millis());
            dump.actions.extend(a.retry.as_ref().map(|r| {
                format!(
                    "retry {} up to {} after {:?}..{:?}",
                    r.on.describe(),
                    r.attempts,
                    r.backoff_base,
                    r.backoff_max
                )
            }));
            dump.actions
                .extend(a.rewrite.as_ref().map(|rw| rw.describe()));
            dump.actions.extend(
                a.host_rewrite
                    .as_ref()
                    .map(|h| format!("host_rewrite: {}", String::from_utf8_lossy(h.as_bytes()))),
            );
            dump.actions.extend(a.hash.iter().map(|h| h.describe()));
            dump.actions
                .extend(a.mirrors.iter().map(|m| match m.fraction {
                    Some(f) => format!("mirror {} {f}", m.cluster),
                    None => format!("mirror {}", m.cluster),
                }));
            for t in a.clusters.iter().map(|(_, t)| t) {
                let changes = t
                    .request_headers
                    .describe()
                    .into_iter()
                    .map(|c| ("request", c));
                let changes = changes.chain(
                    t.response_headers
                        .describe()
                        .into_iter()
                        .map(|c| ("response", c)),
                );
                dump.actions
                    .extend(changes.map(|(dir, c)| format!("{} {dir} {c}", t.cluster)));
            }
        }
        Action::Redirect(redirect) => dump.actions.push(redirect.describe()),
        Action::Direct(d) => dump
            .actions
            .push(format!("direct_response {}", d.status.as_u16())),
    }
    dump
}

fn cluster(c: &Cluster) -> ClusterDump {
    let now = tokio::time::Instant::now();
    let (discovery, service_name) = match &c.config.discovery {
        Discovery::Eds(service) => ("EDS", Some(service.clone())),
        Discovery::Static(_) => ("STATIC", None),
    };
    ClusterDump {
        name: c.config.name.clone(),
        discovery,
        service_name,
        lb_policy: c.config.lb_policy.as_str(),
        connect_timeout_ms: c.config.connect_timeout.as_millis(),
        protocol: c.config.protocol.as_str(),
        endpoints: c
            .endpoints
            .endpoints()
            .map(|(e, weight)| EndpointDump {
                address: e.addr.to_string(),
                weight,
                in_flight: e.in_flight(),
                healthy: e.healthy(),
                ejected: e.ejected(now),
            })
            .collect(),
    }
}
