//! EDS: compiles a `ClusterLoadAssignment` (or a STATIC cluster's inline one) into the list of
//! endpoints with health, weight and priority.

use std::collections::BTreeMap;
use std::net::SocketAddr;

use envoy_types::pb::envoy::config::core::v3::HealthStatus;
use envoy_types::pb::envoy::config::endpoint::v3::lb_endpoint::HostIdentifier;
use envoy_types::pb::envoy::config::endpoint::v3::{ClusterLoadAssignment, LbEndpoint};

use super::tls::{MetaValue, meta_values};
use super::{ConfigError, FieldError, reject_set, socket_addr};

/// Filter-metadata namespace Envoy reads transport socket matches from.
const TRANSPORT_SOCKET_MATCH: &str = "envoy.transport_socket_match";
/// Filter-metadata namespace of Trellis's own endpoint settings.
const ENDPOINT_METADATA: &str = "trellis.dev";
/// Key (under [`ENDPOINT_METADATA`]): the endpoint's proxy takes HTTP/1.1 over HTTP/2.
const H2_UPGRADE_KEY: &str = "h2Upgrade";

/// A compiled `ClusterLoadAssignment`.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Assignment {
    /// `cluster_name`: the EDS service name it belongs to.
    pub(crate) cluster_name: String,
    /// Every endpoint, healthy or not, in config order.
    pub(crate) endpoints: Vec<EndpointConfig>,
}

/// One endpoint of an assignment.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct EndpointConfig {
    /// Where to connect.
    pub(crate) addr: SocketAddr,
    /// `load_balancing_weight` (default 1).
    pub(crate) weight: u32,
    /// False for UNHEALTHY, DRAINING and TIMEOUT endpoints, which get no new requests.
    pub(crate) healthy: bool,
    /// Priority of its locality group (0 is highest).
    pub(crate) priority: u32,
    /// Its `envoy.transport_socket_match` metadata, which selects the cluster's TLS settings.
    pub(crate) tls_match: BTreeMap<String, MetaValue>,
    /// Its proxy takes HTTP/1.1 requests carried over HTTP/2 (`trellis.dev/h2Upgrade`).
    pub(crate) h2_upgrade: bool,
}

impl Assignment {
    /// Compiles an EDS resource.
    pub(crate) fn compile(cla: &ClusterLoadAssignment) -> Result<Self, ConfigError> {
        compile_assignment(cla).map_err(|source| ConfigError::Invalid {
            kind: "cluster load assignment",
            name: cla.cluster_name.clone(),
            source,
        })
    }

    /// Compiles an inline assignment, reporting problems as field errors of the enclosing cluster.
    pub(crate) fn compile_inline(cla: &ClusterLoadAssignment) -> Result<Self, FieldError> {
        compile_assignment(cla)
    }
}

fn compile_assignment(cla: &ClusterLoadAssignment) -> Result<Assignment, FieldError> {
    reject_set(&[("named_endpoints", !cla.named_endpoints.is_empty())])?;
    if let Some(policy) = &cla.policy {
        reject_set(&[("policy.drop_overloads", !policy.drop_overloads.is_empty())])?;
    }
    let mut endpoints = Vec::new();
    for (i, group) in cla.endpoints.iter().enumerate() {
        let field = format!("endpoints[{i}]");
        reject_set(&[("lb_config", group.lb_config.is_some())]).map_err(|e| e.at(&field))?;
        for (j, lb) in group.lb_endpoints.iter().enumerate() {
            let ep =
                compile_lb_endpoint(lb).map_err(|e| e.at(format!("{field}.lb_endpoints[{j}]")))?;
            endpoints.push(EndpointConfig {
                priority: group.priority,
                ..ep
            });
        }
    }
    Ok(Assignment {
        cluster_name: cla.cluster_name.clone(),
        endpoints,
    })
}

fn compile_lb_endpoint(lb: &LbEndpoint) -> Result<EndpointConfig, FieldError> {
    let endpoint = match &lb.host_identifier {
        Some(HostIdentifier::Endpoint(e)) => e,
        Some(HostIdentifier::EndpointName(_)) => {
            return Err(FieldError::unsupported("endpoint_name"));
        }
        None => return Err(FieldError::new("endpoint", "is required")),
    };
    reject_set(&[(
        "endpoint.additional_addresses",
        !endpoint.additional_addresses.is_empty(),
    )])?;
    let addr = socket_addr(endpoint.address.as_ref(), "endpoint.address")?;
    let weight = lb.load_balancing_weight.as_ref().map_or(1, |w| w.value);
    if weight == 0 {
        return Err(FieldError::new(
            "load_balancing_weight",
            "must be at least 1",
        ));
    }
    let healthy = !matches!(
        HealthStatus::try_from(lb.health_status),
        Ok(HealthStatus::Unhealthy | HealthStatus::Draining | HealthStatus::Timeout)
    );
    let metadata = |namespace| {
        lb.metadata
            .as_ref()
            .and_then(|m| m.filter_metadata.get(namespace))
            .map(meta_values)
            .unwrap_or_default()
    };
    let h2_upgrade =
        metadata(ENDPOINT_METADATA).get(H2_UPGRADE_KEY) == Some(&MetaValue::Bool(true));
    Ok(EndpointConfig {
        addr,
        weight,
        healthy,
        priority: 0,
        tls_match: metadata(TRANSPORT_SOCKET_MATCH),
        h2_upgrade,
    })
}

#[cfg(test)]
mod tests {
    use envoy_types::pb::envoy::config::core::v3::socket_address::PortSpecifier;
    use envoy_types::pb::envoy::config::core::v3::{Address, SocketAddress, address};
    use envoy_types::pb::envoy::config::endpoint::v3::{Endpoint, LocalityLbEndpoints};

    use super::*;

    fn lb(port: u32, health: HealthStatus) -> LbEndpoint {
        LbEndpoint {
            health_status: health as i32,
            host_identifier: Some(HostIdentifier::Endpoint(Endpoint {
                address: Some(Address {
                    address: Some(address::Address::SocketAddress(SocketAddress {
                        address: "127.0.0.1".into(),
                        port_specifier: Some(PortSpecifier::PortValue(port)),
                        ..Default::default()
                    })),
                }),
                ..Default::default()
            })),
            ..Default::default()
        }
    }

    #[test]
    fn unhealthy_and_lower_priority_endpoints_do_not_serve() {
        let cla = ClusterLoadAssignment {
            cluster_name: "c".into(),
            endpoints: vec![
                LocalityLbEndpoints {
                    lb_endpoints: vec![lb(1, HealthStatus::Healthy), lb(2, HealthStatus::Draining)],
                    ..Default::default()
                },
                LocalityLbEndpoints {
                    priority: 1,
                    lb_endpoints: vec![lb(3, HealthStatus::Unknown)],
                    ..Default::default()
                },
            ],
            ..Default::default()
        };
        let a = Assignment::compile(&cla).unwrap();
        let healthy: Vec<(u16, u32)> = a
            .endpoints
            .iter()
            .filter(|e| e.healthy)
            .map(|e| (e.addr.port(), e.priority))
            .collect();
        assert_eq!(healthy, vec![(1, 0), (3, 1)], "draining is not healthy");
    }

    #[test]
    fn the_h2_upgrade_mark_is_read_from_trellis_metadata() {
        use envoy_types::pb::envoy::config::core::v3::Metadata;
        use envoy_types::pb::google::protobuf::{Struct, Value, value::Kind};
        let marked = |namespace: &str, value: Kind| {
            let mut e = lb(1, HealthStatus::Healthy);
            let mark = Struct {
                fields: [(H2_UPGRADE_KEY.to_owned(), Value { kind: Some(value) })].into(),
            };
            e.metadata = Some(Metadata {
                filter_metadata: [(namespace.to_owned(), mark)].into(),
                ..Default::default()
            });
            compile_lb_endpoint(&e).unwrap().h2_upgrade
        };
        assert!(marked("trellis.dev", Kind::BoolValue(true)));
        assert!(!marked("trellis.dev", Kind::BoolValue(false)));
        assert!(!marked("trellis.dev", Kind::StringValue("true".into())));
        assert!(!marked("other", Kind::BoolValue(true)));
        assert!(
            !compile_lb_endpoint(&lb(1, HealthStatus::Healthy))
                .unwrap()
                .h2_upgrade
        );
    }

    #[test]
    fn hostnames_are_rejected() {
        let mut e = lb(1, HealthStatus::Healthy);
        if let Some(HostIdentifier::Endpoint(ep)) = &mut e.host_identifier
            && let Some(address::Address::SocketAddress(sa)) =
                ep.address.as_mut().and_then(|a| a.address.as_mut())
        {
            sa.address = "backend.local".into();
        }
        let cla = ClusterLoadAssignment {
            cluster_name: "c".into(),
            endpoints: vec![LocalityLbEndpoints {
                lb_endpoints: vec![e],
                ..Default::default()
            }],
            ..Default::default()
        };
        let err = Assignment::compile(&cla).unwrap_err().to_string();
        assert!(
            err.starts_with(
                "cluster load assignment \"c\": endpoints[0].lb_endpoints[0].endpoint.address.socket_address.address:"
            ),
            "{err}"
        );
    }
}
