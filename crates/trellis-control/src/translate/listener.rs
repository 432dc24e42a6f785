//! Listeners: the inbound listener in front of the app, one outbound listener per declared
//! upstream, and the HTTP-proxy-mode listener. HTTP is detected with Envoy's http_inspector and
//! anything else falls back to a TCP proxy (so does silence, where the service does not declare
//! its protocol; where it does, a long silence closes the connection); opaque (TCP) services
//! skip detection. Outbound HTTP
//! goes through the `fault` and `local_ratelimit` filters (configured per route); inbound HTTP
//! through RBAC and the workload's own rate limit, when it has one.

use std::time::Duration;

use envoy_types::pb::envoy::config::core::v3::{
    Address, Http1ProtocolOptions, SocketAddress, TypedExtensionConfig,
    address::Address as AddressKind, http1_protocol_options::HeaderKeyFormat,
    http1_protocol_options::header_key_format::HeaderFormat, socket_address::PortSpecifier,
};
use envoy_types::pb::envoy::config::listener::v3::{
    Filter, FilterChain, FilterChainMatch, Listener, ListenerFilter, filter::ConfigType,
    listener_filter::ConfigType as ListenerFilterConfig,
};
use envoy_types::pb::envoy::config::route::v3::RouteConfiguration;
use envoy_types::pb::envoy::extensions::filters::http::router::v3::Router;
use envoy_types::pb::envoy::extensions::filters::listener::http_inspector::v3::HttpInspector;
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::{
    HttpConnectionManager, HttpFilter, Rds, http_connection_manager::CodecType,
    http_connection_manager::RouteSpecifier, http_connection_manager::UpgradeConfig,
    http_filter::ConfigType as HttpFilterConfig,
};
use envoy_types::pb::envoy::extensions::filters::network::tcp_proxy::v3::{
    TcpProxy, tcp_proxy::ClusterSpecifier,
};
use envoy_types::pb::envoy::extensions::http::header_formatters::preserve_case::v3::PreserveCaseFormatterConfig;
use envoy_types::pb::google::protobuf::BoolValue;
use trellis_api::{MtlsMode, Protocol};
use trellis_xds::node::NodeMeta;

use super::{
    DECLARED_DETECTION_TIMEOUT, DETECTION_TIMEOUT, HTTP_PROXY, ads, any, authz, duration,
    inbound_cluster, outbound_cluster, outbound_route_config, route, tls, traffic,
};
use crate::model::{MeshModel, ServiceModel};

/// Application protocols http_inspector reports for HTTP.
const HTTP_PROTOCOLS: [&str; 3] = ["http/1.0", "http/1.1", "h2c"];

pub(super) fn listeners(model: &MeshModel, node: &NodeMeta) -> Vec<Listener> {
    let mut out = Vec::new();
    let own = model.resolve(&node.service, &node.namespace);
    let own_protocol = own.map(|s| s.protocol).unwrap_or_default();
    let inbound = inbound_cluster(node.app_port);
    let inbound_hcm = Hcm {
        routes: Routes::Inline(Box::new(route::single_route_config(&inbound, &inbound))),
        filters: traffic::inbound_filter(model, node).into_iter().collect(),
    };
    let mut inbound_listener = listener(
        "inbound",
        &node.ip,
        node.inbound_port,
        (own_protocol, detection(own)),
        inbound_hcm,
        &inbound,
    );
    // RBAC goes first in the chain, before the rate limit.
    authz::apply(&mut inbound_listener, model, node);
    // A workload without a certificate cannot serve TLS: in PERMISSIVE mode its inbound
    // listener stays plaintext (no chain waits for a secret it will never get); STRICT keeps
    // only TLS chains, so it serves nobody.
    let mode = tls::inbound_mode(model, own);
    if model.trust_bundle.is_some() && (node.mtls || mode == MtlsMode::Strict) {
        tls::secure_inbound(&mut inbound_listener, mode);
    }
    out.push(inbound_listener);
    for upstream in &node.upstreams {
        let name = format!("outbound|{}|{}", upstream.service, upstream.port);
        let svc = model.resolve(&upstream.service, &node.namespace);
        let (protocol, key) = match svc {
            Some(svc) => (svc.protocol, svc.key()),
            // Not known (yet): route to the cluster it will have; requests fail fast with 503.
            None => (
                Protocol::Http,
                format!("{}.{}", upstream.service, node.namespace),
            ),
        };
        let hcm = Hcm {
            routes: Routes::Rds(outbound_route_config(&key)),
            filters: traffic::outbound_filters(),
        };
        out.push(listener(
            &name,
            "127.0.0.1",
            upstream.port,
            (protocol, detection(svc)),
            hcm,
            &outbound_cluster(&key),
        ));
    }
    if let Some(port) = node.http_proxy_port {
        let hcm = Hcm {
            routes: Routes::Rds(HTTP_PROXY.to_owned()),
            filters: traffic::outbound_filters(),
        };
        let hcm = http_connection_manager(HTTP_PROXY, hcm);
        out.push(Listener {
            name: HTTP_PROXY.to_owned(),
            address: Some(socket_address("127.0.0.1", port)),
            filter_chains: vec![FilterChain {
                filters: vec![hcm_filter(&hcm)],
                ..FilterChain::default()
            }],
            ..Listener::default()
        });
    }
    out
}

/// An HTTP connection manager: its routes and the HTTP filters before its router.
struct Hcm {
    routes: Routes,
    filters: Vec<HttpFilter>,
}

/// Where an HTTP connection manager gets its routes.
enum Routes {
    Rds(String),
    Inline(Box<RouteConfiguration>),
}

/// How HTTP detection on a listener for `svc` ends when the client stays silent: where the
/// service declares its protocol, after [`DECLARED_DETECTION_TIMEOUT`] by closing the
/// connection (clients that open connections ahead of use, like HTTP pools, stay silent for a
/// while, and falling back to TCP would pin such a connection to one endpoint as opaque bytes,
/// losing routing, splits, retries and metrics); elsewhere after [`DETECTION_TIMEOUT`] by
/// falling back to TCP, so server-speaks-first protocols are not stalled.
fn detection(svc: Option<&ServiceModel>) -> Detection {
    if svc.is_some_and(|s| s.protocol_declared) {
        Detection {
            timeout: DECLARED_DETECTION_TIMEOUT,
            tcp_on_timeout: false,
        }
    } else {
        Detection {
            timeout: DETECTION_TIMEOUT,
            tcp_on_timeout: true,
        }
    }
}

/// When a listener gives up detecting HTTP, and what it does then.
#[derive(Clone, Copy)]
struct Detection {
    timeout: Duration,
    /// Fall back to the TCP chain (else close the connection).
    tcp_on_timeout: bool,
}

/// A listener serving `protocol`: TCP only for opaque services; otherwise HTTP detected as
/// `detect` says, with TCP to `tcp_cluster` for bytes that are not HTTP.
fn listener(
    name: &str,
    ip: &str,
    port: u16,
    (protocol, detect): (Protocol, Detection),
    hcm: Hcm,
    tcp_cluster: &str,
) -> Listener {
    let tcp = FilterChain {
        name: "tcp".to_owned(),
        filters: vec![tcp_proxy_filter(name, tcp_cluster)],
        ..FilterChain::default()
    };
    let mut l = Listener {
        name: name.to_owned(),
        address: Some(socket_address(ip, port)),
        ..Listener::default()
    };
    if !protocol.is_http() {
        l.filter_chains = vec![tcp];
        return l;
    }
    let hcm = http_connection_manager(name, hcm);
    l.listener_filters = vec![ListenerFilter {
        name: "envoy.filters.listener.http_inspector".to_owned(),
        config_type: Some(ListenerFilterConfig::TypedConfig(any(&HttpInspector {}))),
        ..ListenerFilter::default()
    }];
    l.listener_filters_timeout = Some(duration(detect.timeout));
    l.continue_on_listener_filters_timeout = detect.tcp_on_timeout;
    l.filter_chains = vec![FilterChain {
        name: "http".to_owned(),
        filter_chain_match: Some(FilterChainMatch {
            application_protocols: HTTP_PROTOCOLS.iter().map(|p| (*p).to_owned()).collect(),
            ..FilterChainMatch::default()
        }),
        filters: vec![hcm_filter(&hcm)],
        ..FilterChain::default()
    }];
    l.default_filter_chain = Some(tcp);
    l
}

fn socket_address(ip: &str, port: u16) -> Address {
    Address {
        address: Some(AddressKind::SocketAddress(SocketAddress {
            address: ip.to_owned(),
            port_specifier: Some(PortSpecifier::PortValue(u32::from(port))),
            ..SocketAddress::default()
        })),
    }
}

fn http_connection_manager(stat_prefix: &str, hcm: Hcm) -> HttpConnectionManager {
    let route_specifier = match hcm.routes {
        Routes::Rds(name) => RouteSpecifier::Rds(Rds {
            config_source: Some(ads()),
            route_config_name: name,
        }),
        Routes::Inline(config) => RouteSpecifier::RouteConfig(*config),
    };
    let mut http_filters = hcm.filters;
    http_filters.push(HttpFilter {
        name: "envoy.filters.http.router".to_owned(),
        config_type: Some(HttpFilterConfig::TypedConfig(any(&Router::default()))),
        ..HttpFilter::default()
    });
    HttpConnectionManager {
        stat_prefix: stat_prefix.to_owned(),
        codec_type: CodecType::Auto as i32,
        route_specifier: Some(route_specifier),
        http_filters,
        upgrade_configs: vec![UpgradeConfig {
            upgrade_type: "websocket".to_owned(),
            ..UpgradeConfig::default()
        }],
        http_protocol_options: Some(http1_preserving_case()),
        ..HttpConnectionManager::default()
    }
}

/// HTTP/1.1 options that keep header-name case as received (transparent by default) and
/// accept absolute-form URIs (HTTP-proxy mode).
pub(super) fn http1_preserving_case() -> Http1ProtocolOptions {
    Http1ProtocolOptions {
        allow_absolute_url: Some(BoolValue { value: true }),
        header_key_format: Some(HeaderKeyFormat {
            header_format: Some(HeaderFormat::StatefulFormatter(TypedExtensionConfig {
                name: "preserve_case".to_owned(),
                typed_config: Some(any(&PreserveCaseFormatterConfig::default())),
            })),
        }),
        ..Http1ProtocolOptions::default()
    }
}

fn hcm_filter(hcm: &HttpConnectionManager) -> Filter {
    Filter {
        name: "envoy.filters.network.http_connection_manager".to_owned(),
        config_type: Some(ConfigType::TypedConfig(any(hcm))),
    }
}

fn tcp_proxy_filter(stat_prefix: &str, cluster: &str) -> Filter {
    let tcp = TcpProxy {
        stat_prefix: stat_prefix.to_owned(),
        cluster_specifier: Some(ClusterSpecifier::Cluster(cluster.to_owned())),
        ..TcpProxy::default()
    };
    Filter {
        name: "envoy.filters.network.tcp_proxy".to_owned(),
        config_type: Some(ConfigType::TypedConfig(any(&tcp))),
    }
}
