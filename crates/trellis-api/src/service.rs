//! `kind: Service` (`trellis.dev/v1alpha1`): a local-mode service with its ports, the workloads
//! it selects, and optional static endpoints for workloads without a sidecar.

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;

use serde::{Deserialize, Deserializer, Serialize};

use crate::bounded;
use crate::mesh::MtlsSettings;
use crate::meta::{self, Meta};
use crate::validate::Validator;
use crate::yaml::FieldPath;

/// A mesh service declared in configuration.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Service {
    /// Name and namespace; the service's host is `name.namespace`.
    pub metadata: Meta,
    /// Ports, selector and static endpoints.
    pub spec: ServiceSpec,
}

/// The `spec` of a [`Service`].
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ServiceSpec {
    /// The ports the service serves; empty when not given.
    #[serde(default)]
    pub ports: Vec<ServicePort>,
    /// Workloads whose labels contain all these pairs belong to the service. When `None`,
    /// workloads that register with the service's name belong to it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selector: Option<BTreeMap<String, String>>,
    /// Fixed endpoints, for workloads that run without a sidecar.
    #[serde(default)]
    pub endpoints: Vec<StaticEndpoint>,
    /// Overrides the mesh's mTLS mode for this service's workloads.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mtls: Option<MtlsSettings>,
}

/// One port of a [`Service`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ServicePort {
    /// An optional name, unique within the service.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// The port number, 1 to 65535.
    #[serde(deserialize_with = "bounded::port")]
    pub port: u16,
    /// The application protocol as written; see [`ServicePort::protocol`] for the effective one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub protocol: Option<Protocol>,
}

impl ServicePort {
    /// The effective protocol: as written, else `HTTP` (then detected, not declared).
    pub fn protocol(&self) -> Protocol {
        self.protocol.unwrap_or_default()
    }
}

/// The application protocol of a port.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Protocol {
    /// HTTP/1.1 (upgraded to HTTP/2 when both sides can).
    #[default]
    #[serde(rename = "HTTP")]
    Http,
    /// HTTP/2, with or without TLS.
    #[serde(rename = "HTTP2")]
    Http2,
    /// gRPC over HTTP/2.
    #[serde(rename = "GRPC")]
    Grpc,
    /// Opaque TCP: bytes are forwarded without protocol detection or HTTP routing.
    #[serde(rename = "TCP")]
    Tcp,
}

impl Protocol {
    /// The name as written in YAML, e.g. `HTTP2`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Http => "HTTP",
            Self::Http2 => "HTTP2",
            Self::Grpc => "GRPC",
            Self::Tcp => "TCP",
        }
    }

    /// Whether traffic on this port is HTTP of some version (and so can be routed by HTTP or
    /// gRPC routes).
    pub fn is_http(self) -> bool {
        !matches!(self, Self::Tcp)
    }
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A fixed endpoint of a [`Service`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct StaticEndpoint {
    /// `IP:PORT`, e.g. `10.0.0.5:5432` or `[::1]:5432`.
    #[serde(deserialize_with = "socket_addr")]
    pub address: SocketAddr,
    /// Load-balancing weight, 1 to 128; 1 when not given.
    #[serde(
        default = "bounded::one",
        deserialize_with = "bounded::endpoint_weight"
    )]
    pub weight: u32,
    /// Where the endpoint runs, for locality-aware load balancing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub locality: Option<Locality>,
}

fn socket_addr<'de, D: Deserializer<'de>>(d: D) -> Result<SocketAddr, D::Error> {
    let text = String::deserialize(d)?;
    text.parse().map_err(|_| {
        serde::de::Error::custom(format!(
            "expected an IP:PORT address such as `10.0.0.5:5432` or `[::1]:5432`, found `{text}`"
        ))
    })
}

/// A locality written `region/zone/subzone`; zone and subzone may be left out.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Locality {
    /// The region, e.g. `eu-west-1`.
    pub region: String,
    /// The zone within the region; empty when not given.
    pub zone: String,
    /// The sub-zone within the zone; empty when not given.
    pub sub_zone: String,
}

/// A locality string that is not `region[/zone[/subzone]]`.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("expected a locality `region/zone/subzone` (zone and subzone optional), found `{0}`")]
pub struct LocalityError(pub String);

impl TryFrom<String> for Locality {
    type Error = LocalityError;

    fn try_from(text: String) -> Result<Self, LocalityError> {
        let parts: Vec<&str> = text.split('/').collect();
        if parts.len() > 3
            || parts
                .iter()
                .any(|p| p.is_empty() || p.contains(char::is_whitespace))
        {
            return Err(LocalityError(text));
        }
        let part = |i: usize| parts.get(i).copied().unwrap_or_default().to_owned();
        Ok(Self {
            region: part(0),
            zone: part(1),
            sub_zone: part(2),
        })
    }
}

impl From<Locality> for String {
    fn from(l: Locality) -> String {
        l.to_string()
    }
}

impl fmt::Display for Locality {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.region)?;
        for part in [&self.zone, &self.sub_zone] {
            if part.is_empty() {
                break;
            }
            write!(f, "/{part}")?;
        }
        Ok(())
    }
}

impl Service {
    /// The protocol of `port`, or `None` when the service does not declare that port.
    pub fn protocol_of_port(&self, port: u16) -> Option<Protocol> {
        self.port(port).map(ServicePort::protocol)
    }

    /// The declared port with number `port`.
    pub fn port(&self, port: u16) -> Option<&ServicePort> {
        self.spec.ports.iter().find(|p| p.port == port)
    }

    /// The declared port named `name`.
    pub fn port_named(&self, name: &str) -> Option<&ServicePort> {
        self.spec
            .ports
            .iter()
            .find(|p| p.name.as_deref() == Some(name))
    }

    /// Whether a workload belongs to this service: by selector when there is one, otherwise by
    /// registering under the service's name. The caller checks the namespace.
    pub fn selects(&self, registered_service: &str, labels: &BTreeMap<String, String>) -> bool {
        match &self.spec.selector {
            Some(selector) => selector.iter().all(|(k, v)| labels.get(k) == Some(v)),
            None => registered_service == self.metadata.name,
        }
    }
}

/// Checks what types cannot: unique ports and port names, a non-empty selector, unique
/// endpoint addresses.
pub(crate) fn validate(svc: &Service, v: &mut Validator<'_>) {
    meta::validate(&svc.metadata, true, v);
    let spec = FieldPath::root().key("spec");
    for (i, port) in svc.spec.ports.iter().enumerate() {
        let path = spec.key("ports").index(i);
        let earlier = &svc.spec.ports[..i];
        if earlier.iter().any(|p| p.port == port.port) {
            v.error(
                &path.key("port"),
                format!("port {} is declared twice", port.port),
            );
        }
        if let Some(name) = &port.name {
            if !meta::is_dns_label(name) {
                v.error(
                    &path.key("name"),
                    format!(
                        "expected a DNS label (lower-case letters, digits and '-'), found `{name}`"
                    ),
                );
            } else if earlier.iter().any(|p| p.name.as_deref() == Some(name)) {
                v.error(
                    &path.key("name"),
                    format!("port name `{name}` is used twice"),
                );
            }
        }
    }
    if svc.spec.selector.as_ref().is_some_and(BTreeMap::is_empty) {
        v.error(
            &spec.key("selector"),
            "expected at least one label; leave `selector` out to select workloads by service name",
        );
    }
    for (i, ep) in svc.spec.endpoints.iter().enumerate() {
        if svc.spec.endpoints[..i]
            .iter()
            .any(|e| e.address == ep.address)
        {
            v.error(
                &spec.key("endpoints").index(i).key("address"),
                format!("endpoint {} is listed twice", ep.address),
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locality_parses_and_displays() {
        let l = Locality::try_from("eu/eu-1a/rack3".to_owned()).expect("valid");
        assert_eq!(
            (l.region.as_str(), l.zone.as_str(), l.sub_zone.as_str()),
            ("eu", "eu-1a", "rack3")
        );
        assert_eq!(l.to_string(), "eu/eu-1a/rack3");
        assert_eq!(
            Locality::try_from("eu".to_owned())
                .expect("valid")
                .to_string(),
            "eu"
        );
        for bad in ["", "a//b", "a/b/c/d", "a b"] {
            assert!(Locality::try_from(bad.to_owned()).is_err(), "{bad}");
        }
    }

    #[test]
    fn selects_by_selector_or_name() {
        let mut svc = Service {
            metadata: Meta::new("catalog"),
            ..Service::default()
        };
        let labels: BTreeMap<String, String> = [("app", "catalog"), ("version", "v1")]
            .map(|(k, v)| (k.into(), v.into()))
            .into();
        assert!(svc.selects("catalog", &BTreeMap::new()));
        assert!(!svc.selects("web", &labels));
        svc.spec.selector = Some([("version".to_owned(), "v1".to_owned())].into());
        assert!(svc.selects("other", &labels));
        assert!(!svc.selects("catalog", &BTreeMap::new()));
    }
}
