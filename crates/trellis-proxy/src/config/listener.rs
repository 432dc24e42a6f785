//! LDS: compiles a `Listener` into its address, traffic direction, protocol detection settings
//! and filter chains, and selects the chain for a detected protocol.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use envoy_types::pb::envoy::config::core::v3::TrafficDirection;
use envoy_types::pb::envoy::config::listener::v3::{
    FilterChain as PbFilterChain, Listener, ListenerFilter, filter, listener_filter,
};
use envoy_types::pb::envoy::extensions::filters::listener::http_inspector::v3::HttpInspector;
use envoy_types::pb::envoy::extensions::filters::listener::tls_inspector::v3::TlsInspector;
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::HttpConnectionManager;
use envoy_types::pb::envoy::extensions::filters::network::tcp_proxy::v3::TcpProxy;
use prost::Name;

use super::http::HttpConfig;
use super::tcp::TcpConfig;
use super::tls::{self, DownstreamTls};
use super::{ConfigError, FieldError, decode_any, duration, reject_set, socket_addr};
use crate::authz::Rbac;
use crate::telemetry::{Direction, Metrics};
use envoy_types::pb::envoy::extensions::filters::network::rbac::v3::Rbac as NetworkRbac;

/// Names of the listener filters supported.
const HTTP_INSPECTOR: &str = "envoy.filters.listener.http_inspector";
const TLS_INSPECTOR: &str = "envoy.filters.listener.tls_inspector";
/// Envoy's default `listener_filters_timeout`.
const DEFAULT_DETECT_TIMEOUT: Duration = Duration::from_secs(15);

/// What listener compilation needs to know about this proxy.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ListenerContext<'a> {
    /// Port of the inbound listener, so listeners without `traffic_direction` get one.
    pub(crate) inbound_port: u16,
    /// Where stats handles come from.
    pub(crate) metrics: &'a Metrics,
}

/// A compiled `Listener`.
#[derive(Debug)]
pub(crate) struct ListenerConfig {
    /// Listener name.
    pub(crate) name: String,
    /// Address to listen on.
    pub(crate) address: SocketAddr,
    /// Inbound or outbound, for metrics labels.
    pub(crate) direction: Direction,
    /// Inspection of the first bytes (`http_inspector` and/or `tls_inspector`), if configured.
    pub(crate) detect: Option<Detection>,
    /// Filter chains in config order.
    pub(crate) chains: Vec<FilterChain>,
    /// Chain used when no other matches.
    pub(crate) default_chain: Option<FilterChain>,
}

/// `http_inspector` settings.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Detection {
    /// How long to wait for the first bytes; `None` waits forever.
    pub(crate) timeout: Option<Duration>,
    /// Whether a timeout continues without a protocol (else the connection is closed).
    pub(crate) continue_on_timeout: bool,
}

/// A compiled filter chain: its match and its one network filter.
#[derive(Debug)]
pub(crate) struct FilterChain {
    /// Chain name (may be empty).
    pub(crate) name: String,
    /// `filter_chain_match.application_protocols`; empty matches any.
    pub(crate) protocols: Vec<String>,
    /// `filter_chain_match.transport_protocol`, and TLS termination settings.
    pub(crate) transport: Transport,
    /// `envoy.filters.network.rbac` filters before it, in order.
    pub(crate) authz: Vec<Rbac>,
    /// The network filter.
    pub(crate) filter: NetworkFilter,
}

/// What transport a chain takes and serves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Transport {
    /// No `transport_protocol` match and no TLS: any connection, served as is.
    Any,
    /// `transport_protocol: raw_buffer`: plaintext connections only.
    Plaintext,
    /// `transport_protocol: tls` with a TLS transport socket: mTLS is terminated here.
    Tls(DownstreamTls),
}

/// The network filters supported.
#[derive(Debug)]
pub(crate) enum NetworkFilter {
    /// `envoy.filters.network.http_connection_manager`.
    Http(Arc<HttpConfig>),
    /// `envoy.filters.network.tcp_proxy`.
    Tcp(Arc<TcpConfig>),
}

impl ListenerConfig {
    /// Compiles `l`.
    pub(crate) fn compile(l: &Listener, ctx: ListenerContext<'_>) -> Result<Self, ConfigError> {
        compile_listener(l, ctx).map_err(|source| ConfigError::Invalid {
            kind: "listener",
            name: l.name.clone(),
            source,
        })
    }

    /// The chain for a connection that is TLS (`tls`) or not, whose detected application
    /// protocol (for TLS: the one ALPN negotiated) is `protocol`: among chains of the right
    /// transport, the first listing it, else the first without a protocol match, else the
    /// default chain. Without detection configured, the first chain of the right transport.
    pub(crate) fn select_chain(&self, tls: bool, protocol: Option<&str>) -> Option<&FilterChain> {
        let fits = |c: &&FilterChain| match c.transport {
            Transport::Any => !tls,
            Transport::Plaintext => !tls,
            Transport::Tls(_) => tls,
        };
        let listed = protocol.and_then(|p| {
            self.chains
                .iter()
                .filter(fits)
                .find(|c| c.protocols.iter().any(|cp| cp == p))
        });
        let unmatched = || {
            self.chains
                .iter()
                .filter(fits)
                .find(|c| c.protocols.is_empty())
        };
        let undetected = || {
            (self.detect.is_none() || tls)
                .then(|| self.chains.iter().find(fits))
                .flatten()
        };
        listed
            .or_else(unmatched)
            .or_else(undetected)
            .or(self.default_chain.as_ref().filter(fits))
    }

    /// The TLS settings of the listener's TLS chains, if it terminates mTLS.
    pub(crate) fn tls(&self) -> Option<&DownstreamTls> {
        self.chains
            .iter()
            .chain(&self.default_chain)
            .find_map(|c| match &c.transport {
                Transport::Tls(t) => Some(t),
                _ => None,
            })
    }

    /// RDS names the listener's HTTP filters need.
    pub(crate) fn rds_names(&self) -> impl Iterator<Item = &str> {
        self.chains
            .iter()
            .chain(&self.default_chain)
            .filter_map(|c| match &c.filter {
                NetworkFilter::Http(h) => match &h.routes {
                    super::http::RouteSource::Rds(name) => Some(name.as_str()),
                    super::http::RouteSource::Inline(_) => None,
                },
                NetworkFilter::Tcp(_) => None,
            })
    }
}

#[allow(deprecated)]
fn compile_listener(l: &Listener, ctx: ListenerContext<'_>) -> Result<ListenerConfig, FieldError> {
    if l.name.is_empty() {
        return Err(FieldError::new("name", "must not be empty"));
    }
    reject_set(&[
        ("additional_addresses", !l.additional_addresses.is_empty()),
        ("filter_chain_matcher", l.filter_chain_matcher.is_some()),
        (
            "use_original_dst",
            l.use_original_dst.as_ref().is_some_and(|b| b.value),
        ),
        (
            "transparent",
            l.transparent.as_ref().is_some_and(|b| b.value),
        ),
        ("udp_listener_config", l.udp_listener_config.is_some()),
        ("api_listener", l.api_listener.is_some()),
        ("listener_specifier", l.listener_specifier.is_some()),
        ("fcds_config", l.fcds_config.is_some()),
        (
            "bind_to_port",
            l.bind_to_port.as_ref().is_some_and(|b| !b.value),
        ),
    ])?;
    let address = socket_addr(l.address.as_ref(), "address")?;
    let direction = match TrafficDirection::try_from(l.traffic_direction) {
        Ok(TrafficDirection::Inbound) => Direction::Inbound,
        Ok(TrafficDirection::Outbound) => Direction::Outbound,
        _ if address.port() == ctx.inbound_port => Direction::Inbound,
        _ => Direction::Outbound,
    };
    let mut detect = None;
    let mut inspect_tls = false;
    for (i, f) in l.listener_filters.iter().enumerate() {
        inspect_tls |=
            check_listener_filter(f).map_err(|e| e.at(format!("listener_filters[{i}]")))?;
        let timeout = match &l.listener_filters_timeout {
            Some(d) => Some(duration(d, "listener_filters_timeout")?).filter(|d| !d.is_zero()),
            None => Some(DEFAULT_DETECT_TIMEOUT),
        };
        detect = Some(Detection {
            timeout,
            continue_on_timeout: l.continue_on_listener_filters_timeout,
        });
    }
    let chains = l
        .filter_chains
        .iter()
        .enumerate()
        .map(|(i, c)| {
            compile_chain(c, direction, ctx.metrics)
                .map_err(|e| e.at(format!("filter_chains[{i}]")))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let default_chain = l
        .default_filter_chain
        .as_ref()
        .map(|c| compile_chain(c, direction, ctx.metrics).map_err(|e| e.at("default_filter_chain")))
        .transpose()?;
    let terminates_tls = chains
        .iter()
        .chain(&default_chain)
        .any(|c| matches!(c.transport, Transport::Tls(_)));
    if terminates_tls && !inspect_tls {
        return Err(FieldError::new(
            "listener_filters",
            format!("{TLS_INSPECTOR} is required to choose between TLS and plaintext chains"),
        ));
    }
    if chains.is_empty() && default_chain.is_none() {
        return Err(FieldError::new(
            "filter_chains",
            "at least one filter chain (or a default_filter_chain) is required",
        ));
    }
    Ok(ListenerConfig {
        name: l.name.clone(),
        address,
        direction,
        detect,
        chains,
        default_chain,
    })
}

/// Checks a listener filter; true for `tls_inspector`, false for `http_inspector`.
fn check_listener_filter(f: &ListenerFilter) -> Result<bool, FieldError> {
    reject_set(&[("filter_disabled", f.filter_disabled.is_some())])?;
    let type_url = match &f.config_type {
        Some(listener_filter::ConfigType::TypedConfig(any)) => Some(any.type_url.as_str()),
        Some(listener_filter::ConfigType::ConfigDiscovery(_)) => None,
        None => None,
    };
    let is = |name: &str, url: String| type_url.map_or(f.name == name, |t| t == url);
    if is(HTTP_INSPECTOR, HttpInspector::type_url()) {
        Ok(false)
    } else if is(TLS_INSPECTOR, TlsInspector::type_url()) {
        Ok(true)
    } else {
        Err(FieldError::message(format!(
            "unsupported listener filter {:?} (supported: {HTTP_INSPECTOR}, {TLS_INSPECTOR})",
            f.name
        )))
    }
}

#[allow(deprecated)]
fn compile_chain(
    c: &PbFilterChain,
    direction: Direction,
    metrics: &Metrics,
) -> Result<FilterChain, FieldError> {
    reject_set(&[(
        "use_proxy_proto",
        c.use_proxy_proto.as_ref().is_some_and(|b| b.value),
    )])?;
    let mut protocols = Vec::new();
    if let Some(m) = &c.filter_chain_match {
        reject_set(&[
            ("destination_port", m.destination_port.is_some()),
            ("prefix_ranges", !m.prefix_ranges.is_empty()),
            (
                "direct_source_prefix_ranges",
                !m.direct_source_prefix_ranges.is_empty(),
            ),
            ("source_type", m.source_type != 0),
            ("source_prefix_ranges", !m.source_prefix_ranges.is_empty()),
            ("source_ports", !m.source_ports.is_empty()),
            ("server_names", !m.server_names.is_empty()),
        ])
        .map_err(|e| e.at("filter_chain_match"))?;
        protocols.clone_from(&m.application_protocols);
    }
    let transport_protocol = c
        .filter_chain_match
        .as_ref()
        .map_or("", |m| m.transport_protocol.as_str());
    let transport = match (transport_protocol, &c.transport_socket) {
        ("", None) => Transport::Any,
        ("raw_buffer", None) => Transport::Plaintext,
        ("tls", Some(socket)) => {
            Transport::Tls(tls::downstream(socket).map_err(|e| e.at("transport_socket"))?)
        }
        ("tls", None) => {
            return Err(FieldError::new(
                "transport_socket",
                "is required on a chain matching transport_protocol tls (TLS passthrough is not supported)",
            ));
        }
        (_, Some(_)) => {
            return Err(FieldError::new(
                "filter_chain_match.transport_protocol",
                "must be \"tls\" on a chain with a TLS transport_socket",
            ));
        }
        (other, None) => {
            return Err(FieldError::new(
                "filter_chain_match.transport_protocol",
                format!("{other:?} is not supported (supported: tls, raw_buffer)"),
            ));
        }
    };
    let Some((last, before)) = c.filters.split_last() else {
        return Err(FieldError::new(
            "filters",
            "a terminal network filter (http_connection_manager or tcp_proxy) is required",
        ));
    };
    let mut authz = Vec::new();
    for (i, f) in before.iter().enumerate() {
        let rbac = network_rbac(f).map_err(|e| e.at(format!("filters[{i}]")))?;
        authz.extend(rbac);
    }
    let filter = compile_filter(last, direction, metrics)
        .map_err(|e| e.at(format!("filters[{}]", before.len())))?;
    Ok(FilterChain {
        name: c.name.clone(),
        protocols,
        transport,
        authz,
        filter,
    })
}

/// Compiles an `envoy.filters.network.rbac` filter (the only one allowed before the terminal
/// filter).
fn network_rbac(
    f: &envoy_types::pb::envoy::config::listener::v3::Filter,
) -> Result<Option<Rbac>, FieldError> {
    match &f.config_type {
        Some(filter::ConfigType::TypedConfig(any)) if any.type_url == NetworkRbac::type_url() => {
            let rbac: NetworkRbac = decode_any(any).map_err(|e| e.at("typed_config"))?;
            let unsupported = rbac.shadow_rules.is_some()
                || rbac.matcher.is_some()
                || rbac.shadow_matcher.is_some()
                || rbac.delay_deny.is_some()
                || rbac.enforcement_type != 0;
            if unsupported {
                return Err(FieldError::new(
                    "typed_config",
                    "only rules with ONE_TIME_ON_FIRST_BYTE enforcement are supported (no matcher, shadow rules or delay_deny)",
                ));
            }
            Rbac::compile(rbac.rules.as_ref()).map_err(|e| e.at("typed_config"))
        }
        _ => Err(FieldError::message(format!(
            "unsupported filter type {:?} before the terminal filter (supported: envoy.filters.network.rbac)",
            f.name
        ))),
    }
}

fn compile_filter(
    f: &envoy_types::pb::envoy::config::listener::v3::Filter,
    direction: Direction,
    metrics: &Metrics,
) -> Result<NetworkFilter, FieldError> {
    let unsupported = || FieldError::message(format!("unsupported filter type {:?}", f.name));
    let Some(filter::ConfigType::TypedConfig(any)) = &f.config_type else {
        return Err(match f.name.as_str() {
            "envoy.filters.network.http_connection_manager" | "envoy.filters.network.tcp_proxy" => {
                FieldError::new("typed_config", "is required")
            }
            _ => unsupported(),
        });
    };
    if any.type_url == HttpConnectionManager::type_url() {
        let hcm: HttpConnectionManager = decode_any(any).map_err(|e| e.at("typed_config"))?;
        Ok(NetworkFilter::Http(Arc::new(
            HttpConfig::compile(&hcm, metrics).map_err(|e| e.at("typed_config"))?,
        )))
    } else if any.type_url == TcpProxy::type_url() {
        let tcp: TcpProxy = decode_any(any).map_err(|e| e.at("typed_config"))?;
        Ok(NetworkFilter::Tcp(Arc::new(
            TcpConfig::compile(&tcp, direction, metrics).map_err(|e| e.at("typed_config"))?,
        )))
    } else {
        Err(unsupported())
    }
}
