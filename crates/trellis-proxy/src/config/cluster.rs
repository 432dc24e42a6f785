//! CDS: compiles a `Cluster` (EDS or STATIC) into its discovery source, load-balancing policy,
//! connect timeout, upstream HTTP protocol and limits.

mod health;
mod lb;
mod limits;
mod outlier;

pub(crate) use health::{HealthCheckConfig, Probe};
pub(crate) use limits::{Limits, RetryLimit};
pub(crate) use outlier::OutlierConfig;

use std::time::Duration;

use envoy_types::pb::envoy::config::cluster::v3::Cluster;
use envoy_types::pb::envoy::config::cluster::v3::cluster::{ClusterDiscoveryType, DiscoveryType};
use envoy_types::pb::envoy::extensions::upstreams::http::v3::HttpProtocolOptions;
use envoy_types::pb::envoy::extensions::upstreams::http::v3::http_protocol_options::UpstreamProtocolOptions;
use envoy_types::pb::envoy::extensions::upstreams::http::v3::http_protocol_options::explicit_http_config::ProtocolConfig;

use super::endpoint::Assignment;
use super::tls::{self, ClusterTls};
use super::{ConfigError, FieldError, check_ads_source, decode_any, duration, reject_set};
use crate::balance::LbPolicy;

/// Key of the upstream HTTP options in `typed_extension_protocol_options`.
const HTTP_OPTIONS_KEY: &str = "envoy.extensions.upstreams.http.v3.HttpProtocolOptions";
/// Envoy's default `connect_timeout`.
const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// A compiled `Cluster`.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct ClusterConfig {
    /// Cluster name, as routes refer to it.
    pub(crate) name: String,
    /// Where its endpoints come from.
    pub(crate) discovery: Discovery,
    /// How requests are spread over endpoints.
    pub(crate) lb_policy: LbPolicy,
    /// TCP connect timeout to an endpoint.
    pub(crate) connect_timeout: Duration,
    /// Which HTTP version to speak upstream.
    pub(crate) protocol: UpstreamProtocol,
    /// mTLS towards (some of) its endpoints.
    pub(crate) tls: ClusterTls,
    /// Circuit-breaker limits: requests, connections, pending requests, retries.
    pub(crate) limits: Limits,
    /// Outlier detection, if any.
    pub(crate) outlier: Option<OutlierConfig>,
    /// Active health checking, if any.
    pub(crate) health_check: Option<HealthCheckConfig>,
}

/// Where a cluster's endpoints come from.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Discovery {
    /// EDS, by this service name.
    Eds(String),
    /// An inline `load_assignment`.
    Static(Assignment),
}

/// HTTP version used towards a cluster.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum UpstreamProtocol {
    /// The version the downstream request came with (h1 → h1, h2 → h2c).
    Downstream,
    /// Always HTTP/1.1.
    Http1,
    /// Always HTTP/2 over cleartext (h2c, prior knowledge).
    Http2,
}

impl UpstreamProtocol {
    /// Short name, for the config dump.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            UpstreamProtocol::Downstream => "downstream",
            UpstreamProtocol::Http1 => "http1",
            UpstreamProtocol::Http2 => "http2",
        }
    }
}

impl ClusterConfig {
    /// Compiles `c`.
    pub(crate) fn compile(c: &Cluster) -> Result<Self, ConfigError> {
        compile_cluster(c).map_err(|source| ConfigError::Invalid {
            kind: "cluster",
            name: c.name.clone(),
            source,
        })
    }
}

#[allow(deprecated)]
fn compile_cluster(c: &Cluster) -> Result<ClusterConfig, FieldError> {
    reject_set(&[
        (
            "transport_socket_matcher",
            c.transport_socket_matcher.is_some(),
        ),
        ("lb_subset_config", c.lb_subset_config.is_some()),
        ("load_balancing_policy", c.load_balancing_policy.is_some()),
        ("upstream_bind_config", c.upstream_bind_config.is_some()),
        ("filters", !c.filters.is_empty()),
        ("upstream_config", c.upstream_config.is_some()),
        (
            "max_requests_per_connection",
            c.max_requests_per_connection.is_some(),
        ),
    ])?;
    let discovery = match &c.cluster_discovery_type {
        None => static_discovery(c)?,
        Some(ClusterDiscoveryType::Type(t)) => match DiscoveryType::try_from(*t) {
            Ok(DiscoveryType::Static) => static_discovery(c)?,
            Ok(DiscoveryType::Eds) => {
                let eds = c.eds_cluster_config.as_ref();
                check_ads_source(
                    eds.and_then(|e| e.eds_config.as_ref()),
                    "eds_cluster_config.eds_config",
                )?;
                let service = eds
                    .map(|e| e.service_name.clone())
                    .filter(|s| !s.is_empty())
                    .unwrap_or_else(|| c.name.clone());
                Discovery::Eds(service)
            }
            Ok(other) => {
                return Err(FieldError::message(format!(
                    "type {} is not supported (supported: STATIC, EDS)",
                    other.as_str_name()
                )));
            }
            Err(_) => return Err(FieldError::new("type", format!("unknown type {t}"))),
        },
        Some(ClusterDiscoveryType::ClusterType(_)) => {
            return Err(FieldError::unsupported("cluster_type"));
        }
    };
    let lb_policy = lb::compile(c)?;
    let outlier = c
        .outlier_detection
        .as_ref()
        .map(|o| outlier::compile(o).map_err(|e| e.at("outlier_detection")))
        .transpose()?;
    let connect_timeout = match &c.connect_timeout {
        Some(d) => duration(d, "connect_timeout")?,
        None => DEFAULT_CONNECT_TIMEOUT,
    };
    let mut protocol = if c.http2_protocol_options.is_some() {
        UpstreamProtocol::Http2
    } else {
        UpstreamProtocol::Downstream
    };
    for (key, any) in &c.typed_extension_protocol_options {
        let field = format!("typed_extension_protocol_options[{key:?}]");
        if key != HTTP_OPTIONS_KEY {
            return Err(FieldError::new(field, "unsupported extension"));
        }
        let options: HttpProtocolOptions = decode_any(any).map_err(|e| e.at(&field))?;
        protocol = upstream_protocol(&options).map_err(|e| e.at(&field))?;
    }
    let tls = tls::cluster(c.transport_socket.as_ref(), &c.transport_socket_matches)?;
    let limits = match &c.circuit_breakers {
        Some(cb) => limits::compile(cb).map_err(|e| e.at("circuit_breakers"))?,
        None => Limits::default(),
    };
    Ok(ClusterConfig {
        name: c.name.clone(),
        discovery,
        lb_policy,
        connect_timeout,
        protocol,
        tls,
        limits,
        outlier,
        health_check: health::compile(&c.health_checks).map_err(|e| e.at("health_checks"))?,
    })
}

fn static_discovery(c: &Cluster) -> Result<Discovery, FieldError> {
    let cla = c
        .load_assignment
        .as_ref()
        .ok_or_else(|| FieldError::new("load_assignment", "is required for a STATIC cluster"))?;
    Ok(Discovery::Static(
        Assignment::compile_inline(cla).map_err(|e| e.at("load_assignment"))?,
    ))
}

fn upstream_protocol(o: &HttpProtocolOptions) -> Result<UpstreamProtocol, FieldError> {
    reject_set(&[
        ("http_filters", !o.http_filters.is_empty()),
        (
            "header_validation_config",
            o.header_validation_config.is_some(),
        ),
        ("outlier_detection", o.outlier_detection.is_some()),
        (
            "request_mirror_policies",
            !o.request_mirror_policies.is_empty(),
        ),
        ("hash_policy", !o.hash_policy.is_empty()),
        ("retry_policy", o.retry_policy.is_some()),
    ])?;
    match &o.upstream_protocol_options {
        None | Some(UpstreamProtocolOptions::UseDownstreamProtocolConfig(_)) => {
            Ok(UpstreamProtocol::Downstream)
        }
        Some(UpstreamProtocolOptions::ExplicitHttpConfig(e)) => match &e.protocol_config {
            Some(ProtocolConfig::HttpProtocolOptions(_)) | None => Ok(UpstreamProtocol::Http1),
            Some(ProtocolConfig::Http2ProtocolOptions(_)) => Ok(UpstreamProtocol::Http2),
            Some(ProtocolConfig::Http3ProtocolOptions(_)) => Err(FieldError::unsupported(
                "explicit_http_config.http3_protocol_options",
            )),
        },
        Some(UpstreamProtocolOptions::AutoConfig(_)) => Err(FieldError::new(
            "auto_config",
            "not supported (needs ALPN over TLS); use explicit_http_config or use_downstream_protocol_config",
        )),
    }
}

#[cfg(test)]
mod tests {
    use envoy_types::pb::envoy::config::core::v3::Http2ProtocolOptions;
    use envoy_types::pb::envoy::extensions::upstreams::http::v3::http_protocol_options::ExplicitHttpConfig;
    use envoy_types::pb::google::protobuf::Any;
    use prost::{Message, Name};

    use envoy_types::pb::envoy::config::cluster::v3::cluster::LbPolicy as PbLbPolicy;
    use envoy_types::pb::envoy::config::core::v3::Metadata;
    use envoy_types::pb::google::protobuf::{Struct, Value, value::Kind};

    use super::*;

    fn eds(name: &str) -> Cluster {
        Cluster {
            name: name.into(),
            cluster_discovery_type: Some(ClusterDiscoveryType::Type(DiscoveryType::Eds as i32)),
            lb_policy: PbLbPolicy::LeastRequest as i32,
            ..Default::default()
        }
    }

    #[test]
    fn eds_cluster_defaults() {
        let c = ClusterConfig::compile(&eds("x")).unwrap();
        assert_eq!(c.discovery, Discovery::Eds("x".into()));
        assert_eq!(
            c.lb_policy,
            LbPolicy::LeastRequest { choices: 2 },
            "Envoy's meaning"
        );
        assert_eq!(c.connect_timeout, DEFAULT_CONNECT_TIMEOUT);
        assert_eq!(c.protocol, UpstreamProtocol::Downstream);
        assert_eq!(c.outlier, None);
    }

    #[test]
    fn least_request_marked_in_metadata_is_peak_ewma_and_hashing_policies_compile() {
        let marked = Cluster {
            metadata: Some(Metadata {
                filter_metadata: [(
                    "trellis.dev".to_owned(),
                    Struct {
                        fields: [(
                            "lb_policy".to_owned(),
                            Value {
                                kind: Some(Kind::StringValue("PEAK_EWMA".into())),
                            },
                        )]
                        .into(),
                    },
                )]
                .into(),
                ..Metadata::default()
            }),
            ..eds("x")
        };
        assert_eq!(
            ClusterConfig::compile(&marked).unwrap().lb_policy,
            LbPolicy::PeakEwma
        );
        let maglev = Cluster {
            lb_policy: PbLbPolicy::Maglev as i32,
            ..eds("x")
        };
        assert_eq!(
            ClusterConfig::compile(&maglev).unwrap().lb_policy,
            LbPolicy::Maglev { size: 65537 }
        );
        let provided = Cluster {
            lb_policy: PbLbPolicy::ClusterProvided as i32,
            ..eds("x")
        };
        assert_eq!(
            ClusterConfig::compile(&provided).unwrap_err().to_string(),
            "cluster \"x\": lb_policy: CLUSTER_PROVIDED is not supported (supported: ROUND_ROBIN, LEAST_REQUEST, RANDOM, RING_HASH, MAGLEV)"
        );
    }

    #[test]
    fn explicit_http2_selects_h2c() {
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
        let mut c = eds("g");
        c.typed_extension_protocol_options.insert(
            HTTP_OPTIONS_KEY.into(),
            Any {
                type_url: HttpProtocolOptions::type_url(),
                value: options.encode_to_vec(),
            },
        );
        assert_eq!(
            ClusterConfig::compile(&c).unwrap().protocol,
            UpstreamProtocol::Http2
        );
    }
}
