//! Builders for the xDS resources the tests feed to the proxy, shaped like the control plane's.

use std::net::SocketAddr;
use std::time::Duration;

use envoy_types::pb::envoy::config::cluster::v3::Cluster;
use envoy_types::pb::envoy::config::cluster::v3::cluster::{
    ClusterDiscoveryType, DiscoveryType, EdsClusterConfig, LbPolicy,
};
use envoy_types::pb::envoy::config::core::v3::config_source::ConfigSourceSpecifier;
use envoy_types::pb::envoy::config::core::v3::http1_protocol_options::HeaderKeyFormat;
use envoy_types::pb::envoy::config::core::v3::http1_protocol_options::header_key_format::HeaderFormat;
use envoy_types::pb::envoy::config::core::v3::socket_address::PortSpecifier;
use envoy_types::pb::envoy::config::core::v3::{
    Address, AggregatedConfigSource, ConfigSource, Http1ProtocolOptions, Http2ProtocolOptions,
    SocketAddress, TypedExtensionConfig, address,
};
use envoy_types::pb::envoy::config::endpoint::v3::lb_endpoint::HostIdentifier;
use envoy_types::pb::envoy::config::endpoint::v3::{
    ClusterLoadAssignment, Endpoint, LbEndpoint, LocalityLbEndpoints,
};
use envoy_types::pb::envoy::config::listener::v3::{
    Filter, FilterChain, FilterChainMatch, Listener, ListenerFilter, filter, listener_filter,
};
use envoy_types::pb::envoy::config::route::v3::route::Action;
use envoy_types::pb::envoy::config::route::v3::route_action::ClusterSpecifier;
use envoy_types::pb::envoy::config::route::v3::route_match::PathSpecifier;
use envoy_types::pb::envoy::config::route::v3::{
    Route, RouteAction, RouteConfiguration, RouteMatch, VirtualHost,
};
use envoy_types::pb::envoy::extensions::filters::http::router::v3::Router;
use envoy_types::pb::envoy::extensions::filters::listener::http_inspector::v3::HttpInspector;
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::http_connection_manager::{
    RouteSpecifier, UpgradeConfig,
};
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::{
    HttpConnectionManager, HttpFilter, Rds, http_filter,
};
use envoy_types::pb::envoy::extensions::filters::network::tcp_proxy::v3::TcpProxy;
use envoy_types::pb::envoy::extensions::filters::network::tcp_proxy::v3::tcp_proxy;
use envoy_types::pb::envoy::extensions::upstreams::http::v3::HttpProtocolOptions;
use envoy_types::pb::envoy::extensions::upstreams::http::v3::http_protocol_options::{
    ExplicitHttpConfig, UpstreamProtocolOptions, explicit_http_config::ProtocolConfig,
};
use envoy_types::pb::google::protobuf::{Any, Duration as PbDuration};
use prost::{Message, Name};
use trellis_proxy::{ConfigHandler, TypeUrl};
use trellis_xds::client::Handler;

/// Packs a message into an `Any`.
pub(crate) fn any<M: Message + Name>(m: &M) -> Any {
    Any {
        type_url: M::type_url(),
        value: m.encode_to_vec(),
    }
}

fn socket(addr: SocketAddr) -> Address {
    Address {
        address: Some(address::Address::SocketAddress(SocketAddress {
            address: addr.ip().to_string(),
            port_specifier: Some(PortSpecifier::PortValue(u32::from(addr.port()))),
            ..Default::default()
        })),
    }
}

fn pb_duration(d: Duration) -> PbDuration {
    PbDuration {
        seconds: i64::try_from(d.as_secs()).unwrap(),
        nanos: i32::try_from(d.subsec_nanos()).unwrap(),
    }
}

fn ads() -> ConfigSource {
    ConfigSource {
        config_source_specifier: Some(ConfigSourceSpecifier::Ads(AggregatedConfigSource {})),
        ..Default::default()
    }
}

/// An HTTP connection manager using RDS `route_name`, router filter, preserve-case headers.
pub(crate) fn hcm(route_name: &str, websocket: bool) -> HttpConnectionManager {
    HttpConnectionManager {
        stat_prefix: route_name.into(),
        http_filters: vec![HttpFilter {
            name: "envoy.filters.http.router".into(),
            config_type: Some(http_filter::ConfigType::TypedConfig(
                any(&Router::default()),
            )),
            ..Default::default()
        }],
        route_specifier: Some(RouteSpecifier::Rds(Rds {
            config_source: Some(ads()),
            route_config_name: route_name.into(),
        })),
        upgrade_configs: if websocket {
            vec![UpgradeConfig {
                upgrade_type: "websocket".into(),
                ..Default::default()
            }]
        } else {
            Vec::new()
        },
        http_protocol_options: Some(Http1ProtocolOptions {
            header_key_format: Some(HeaderKeyFormat {
                header_format: Some(HeaderFormat::StatefulFormatter(TypedExtensionConfig {
                    name: "preserve_case".into(),
                    typed_config: None,
                })),
            }),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// A network filter with a typed config.
pub(crate) fn network_filter<M: Message + Name>(name: &str, config: &M) -> Filter {
    Filter {
        name: name.into(),
        config_type: Some(filter::ConfigType::TypedConfig(any(config))),
    }
}

/// A TCP proxy filter to `cluster`.
pub(crate) fn tcp_filter(cluster: &str) -> Filter {
    network_filter(
        "envoy.filters.network.tcp_proxy",
        &TcpProxy {
            stat_prefix: cluster.into(),
            cluster_specifier: Some(tcp_proxy::ClusterSpecifier::Cluster(cluster.into())),
            ..Default::default()
        },
    )
}

/// A listener on `addr`; with `detect`, an http_inspector with that timeout and
/// continue-on-timeout.
pub(crate) fn listener(
    name: &str,
    addr: SocketAddr,
    detect: Option<Duration>,
    chains: Vec<FilterChain>,
    default_chain: Option<FilterChain>,
) -> Listener {
    Listener {
        name: name.into(),
        address: Some(socket(addr)),
        listener_filters: detect
            .iter()
            .map(|_| ListenerFilter {
                name: "envoy.filters.listener.http_inspector".into(),
                config_type: Some(listener_filter::ConfigType::TypedConfig(any(
                    &HttpInspector::default(),
                ))),
                ..Default::default()
            })
            .collect(),
        listener_filters_timeout: detect.map(pb_duration),
        continue_on_listener_filters_timeout: detect.is_some(),
        filter_chains: chains,
        default_filter_chain: default_chain,
        ..Default::default()
    }
}

/// A chain with one filter, matching `protocols` (empty matches all).
pub(crate) fn chain(protocols: &[&str], filter: Filter) -> FilterChain {
    FilterChain {
        filter_chain_match: (!protocols.is_empty()).then(|| FilterChainMatch {
            application_protocols: protocols.iter().map(|p| (*p).to_owned()).collect(),
            ..Default::default()
        }),
        filters: vec![filter],
        ..Default::default()
    }
}

/// The usual HTTP listener: http_inspector, an HTTP chain for http/1.1 and h2c, and a TCP
/// default chain to `tcp_cluster` when given.
pub(crate) fn http_listener(
    name: &str,
    addr: SocketAddr,
    route_name: &str,
    websocket: bool,
    tcp_cluster: Option<&str>,
) -> Listener {
    listener(
        name,
        addr,
        Some(Duration::from_secs(1)),
        vec![chain(
            &["http/1.1", "h2c"],
            network_filter(
                "envoy.filters.network.http_connection_manager",
                &hcm(route_name, websocket),
            ),
        )],
        tcp_cluster.map(|c| chain(&[], tcp_filter(c))),
    )
}

/// A route matching `prefix` to `cluster`.
pub(crate) fn route(name: &str, prefix: &str, cluster: &str) -> Route {
    Route {
        name: name.into(),
        r#match: Some(RouteMatch {
            path_specifier: Some(PathSpecifier::Prefix(prefix.into())),
            ..Default::default()
        }),
        action: Some(Action::Route(RouteAction {
            cluster_specifier: Some(ClusterSpecifier::Cluster(cluster.into())),
            ..Default::default()
        })),
        ..Default::default()
    }
}

/// A route configuration with one virtual host.
pub(crate) fn route_config(name: &str, domains: &[&str], routes: Vec<Route>) -> RouteConfiguration {
    RouteConfiguration {
        name: name.into(),
        virtual_hosts: vec![VirtualHost {
            name: name.into(),
            domains: domains.iter().map(|d| (*d).to_owned()).collect(),
            routes,
            ..Default::default()
        }],
        ..Default::default()
    }
}

/// An EDS cluster balanced with LEAST_REQUEST (what Trellis emits).
pub(crate) fn eds_cluster(name: &str) -> Cluster {
    Cluster {
        name: name.into(),
        cluster_discovery_type: Some(ClusterDiscoveryType::Type(DiscoveryType::Eds as i32)),
        eds_cluster_config: Some(EdsClusterConfig {
            eds_config: Some(ads()),
            service_name: String::new(),
        }),
        lb_policy: LbPolicy::LeastRequest as i32,
        connect_timeout: Some(pb_duration(Duration::from_secs(1))),
        ..Default::default()
    }
}

/// An EDS cluster that always speaks h2c upstream.
pub(crate) fn h2_cluster(name: &str) -> Cluster {
    let mut c = eds_cluster(name);
    let options = HttpProtocolOptions {
        upstream_protocol_options: Some(UpstreamProtocolOptions::ExplicitHttpConfig(
            ExplicitHttpConfig {
                protocol_config: Some(ProtocolConfig::Http2ProtocolOptions(
                    Http2ProtocolOptions::default(),
                )),
            },
        )),
        ..Default::default()
    };
    c.typed_extension_protocol_options.insert(
        "envoy.extensions.upstreams.http.v3.HttpProtocolOptions".into(),
        any(&options),
    );
    c
}

/// Endpoints for `cluster`.
pub(crate) fn cla(cluster: &str, addrs: &[SocketAddr]) -> ClusterLoadAssignment {
    ClusterLoadAssignment {
        cluster_name: cluster.into(),
        endpoints: vec![LocalityLbEndpoints {
            lb_endpoints: addrs
                .iter()
                .map(|a| LbEndpoint {
                    host_identifier: Some(HostIdentifier::Endpoint(Endpoint {
                        address: Some(socket(*a)),
                        ..Default::default()
                    })),
                    ..Default::default()
                })
                .collect(),
            ..Default::default()
        }],
        ..Default::default()
    }
}

/// A full state-of-the-world config.
#[derive(Default)]
pub(crate) struct Config {
    pub(crate) listeners: Vec<Listener>,
    pub(crate) routes: Vec<RouteConfiguration>,
    pub(crate) clusters: Vec<Cluster>,
    pub(crate) endpoints: Vec<ClusterLoadAssignment>,
}

impl Config {
    /// Applies every type in the order an ADS client would (CDS, EDS, LDS, RDS); panics on NACK.
    pub(crate) fn apply(&self, handler: &mut ConfigHandler, version: &str) {
        let sets = [
            (
                TypeUrl::Cluster,
                self.clusters.iter().map(any).collect::<Vec<_>>(),
            ),
            (
                TypeUrl::ClusterLoadAssignment,
                self.endpoints.iter().map(any).collect(),
            ),
            (TypeUrl::Listener, self.listeners.iter().map(any).collect()),
            (
                TypeUrl::RouteConfiguration,
                self.routes.iter().map(any).collect(),
            ),
        ];
        for (type_url, resources) in sets {
            if let Err(e) = handler.apply(type_url, version, &resources) {
                panic!("{type_url} NACKed: {e}");
            }
        }
    }
}
