//! The metadata a Trellis proxy presents in its xDS `Node`: which service it fronts and which
//! local ports it listens on. The control plane registers the workload from it.

use std::collections::BTreeMap;

use envoy_types::pb::envoy::config::core::v3::{Locality, Node};
use envoy_types::pb::google::protobuf::{Struct, Value, value::Kind};
use serde::{Deserialize, Serialize};

/// Key under `Node.metadata` that holds the JSON-shaped [`NodeMeta`].
pub const METADATA_KEY: &str = "trellis";

/// User agent name our proxy reports, so the control plane can tell it from Envoy or gRPC.
pub const USER_AGENT: &str = "trellis-proxy";

/// What a sidecar tells the control plane about itself and its workload.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct NodeMeta {
    /// Name of the service this workload belongs to.
    pub service: String,
    /// Namespace of the service (`default` when not set).
    #[serde(default = "default_namespace")]
    pub namespace: String,
    /// Workload labels (e.g. `version: v2`), used by Service selectors.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// Port of the local application the inbound listener forwards to.
    pub app_port: u16,
    /// Port the proxy's inbound listener is bound to (the workload's endpoint address).
    pub inbound_port: u16,
    /// IP address of the inbound listener.
    #[serde(default = "default_ip")]
    pub ip: String,
    /// Address peers should use instead of `ip:inbound_port` (a relay or NAT in between).
    #[serde(default)]
    pub advertise: Option<String>,
    /// Outbound listeners the proxy has bound: one local port per upstream service.
    #[serde(default)]
    pub upstreams: Vec<UpstreamPort>,
    /// Port of the HTTP-proxy-mode outbound listener, if any.
    #[serde(default)]
    pub http_proxy_port: Option<u16>,
    /// Locality (`region/zone/subzone`, any part may be empty).
    #[serde(default)]
    pub locality: Option<String>,
    /// Whether the proxy gets a workload certificate (it holds a join token): peers reach it
    /// over mutual TLS and it speaks mutual TLS to them. Without one it speaks plaintext, so
    /// only PERMISSIVE inbound ports accept it.
    #[serde(default)]
    pub mtls: bool,
    /// Address of the proxy's admin server (`/stats`, `/config_dump`), which the control plane
    /// reads for `trellis stat`, `trellis proxy-config` and the dashboard. Bound to loopback by
    /// default, so only a control plane on the same host can read it.
    #[serde(default)]
    pub admin: Option<String>,
    /// What kind of client presented it: not part of the metadata, but read from the node's
    /// user agent by [`NodeMeta::from_node`].
    #[serde(skip)]
    pub client: ClientKind,
    /// Whether the proxy's inbound side takes HTTP/1.1 requests carried over HTTP/2 between
    /// proxies (marked `trellis-orig-proto`) and hands them to its app as HTTP/1.1. Peers then
    /// multiplex their HTTP/1.1 traffic to it on one mutual TLS connection.
    #[serde(default)]
    pub h2_upgrade: bool,
}

/// The kind of xDS client behind a node, which decides what the control plane may send it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ClientKind {
    /// A Trellis proxy (user agent [`USER_AGENT`]).
    #[default]
    TrellisProxy,
    /// Envoy, and any other client that is not recognised: the full Envoy API.
    Envoy,
    /// A proxyless gRPC client (user agent `gRPC ...`): API listeners instead of ports, only
    /// the resources and fields gRPC implements.
    Grpc,
}

impl ClientKind {
    /// The kind a node's user agent names.
    pub fn of(node: &Node) -> ClientKind {
        match node.user_agent_name.as_str() {
            USER_AGENT => ClientKind::TrellisProxy,
            name if name.starts_with("gRPC") => ClientKind::Grpc,
            _ => ClientKind::Envoy,
        }
    }
}

/// An outbound listener for one upstream service.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UpstreamPort {
    /// Upstream service name (`name` or `name.namespace`).
    pub service: String,
    /// Local port the proxy listens on for it.
    pub port: u16,
}

fn default_namespace() -> String {
    "default".to_owned()
}

fn default_ip() -> String {
    "127.0.0.1".to_owned()
}

/// Errors reading [`NodeMeta`] from a `Node`.
#[derive(Debug, thiserror::Error)]
pub enum NodeMetaError {
    /// The node carries no `metadata.trellis` struct.
    #[error("node {0:?} has no metadata.{METADATA_KEY}: is it a Trellis proxy?")]
    Missing(String),
    /// The struct does not have the expected shape.
    #[error("node {node:?}: metadata.{METADATA_KEY} is invalid: {source}")]
    Invalid {
        /// Node id.
        node: String,
        /// What serde found wrong.
        source: serde_json::Error,
    },
}

impl NodeMeta {
    /// Builds the xDS `Node` for this workload, with `id` as the node id.
    pub fn to_node(&self, id: &str) -> Node {
        let json = serde_json::to_value(self).unwrap_or(serde_json::Value::Null);
        let mut metadata = Struct::default();
        metadata
            .fields
            .insert(METADATA_KEY.to_owned(), json_to_value(json));
        Node {
            id: id.to_owned(),
            cluster: self.service.clone(),
            metadata: Some(metadata),
            locality: self.locality.as_deref().map(parse_locality),
            user_agent_name: USER_AGENT.to_owned(),
            ..Node::default()
        }
    }

    /// Reads the metadata back from a `Node` sent by a Trellis proxy (or an Envoy or gRPC
    /// client bootstrapped by Trellis), with the client kind its user agent names.
    pub fn from_node(node: &Node) -> Result<NodeMeta, NodeMetaError> {
        let value = node
            .metadata
            .as_ref()
            .and_then(|m| m.fields.get(METADATA_KEY))
            .ok_or_else(|| NodeMetaError::Missing(node.id.clone()))?;
        let mut meta: NodeMeta =
            serde_json::from_value(value_to_json(value)).map_err(|source| {
                NodeMetaError::Invalid {
                    node: node.id.clone(),
                    source,
                }
            })?;
        meta.client = ClientKind::of(node);
        Ok(meta)
    }
}

/// Parses `region/zone/subzone` into an xDS `Locality`.
pub fn parse_locality(s: &str) -> Locality {
    let mut parts = s.splitn(3, '/');
    let mut next = || parts.next().unwrap_or_default().to_owned();
    Locality {
        region: next(),
        zone: next(),
        sub_zone: next(),
    }
}

/// Converts JSON into a protobuf `Value`.
pub fn json_to_value(json: serde_json::Value) -> Value {
    let kind = match json {
        serde_json::Value::Null => Kind::NullValue(0),
        serde_json::Value::Bool(b) => Kind::BoolValue(b),
        serde_json::Value::Number(n) => Kind::NumberValue(n.as_f64().unwrap_or_default()),
        serde_json::Value::String(s) => Kind::StringValue(s),
        serde_json::Value::Array(items) => {
            Kind::ListValue(envoy_types::pb::google::protobuf::ListValue {
                values: items.into_iter().map(json_to_value).collect(),
            })
        }
        serde_json::Value::Object(map) => Kind::StructValue(Struct {
            fields: map
                .into_iter()
                .map(|(k, v)| (k, json_to_value(v)))
                .collect(),
        }),
    };
    Value { kind: Some(kind) }
}

/// Converts a protobuf `Value` into JSON; whole numbers become integers.
pub fn value_to_json(value: &Value) -> serde_json::Value {
    match &value.kind {
        None | Some(Kind::NullValue(_)) => serde_json::Value::Null,
        Some(Kind::BoolValue(b)) => serde_json::Value::Bool(*b),
        Some(Kind::NumberValue(n)) if n.fract() == 0.0 && n.abs() < 9.0e15 => {
            serde_json::Value::from(*n as i64)
        }
        Some(Kind::NumberValue(n)) => serde_json::Value::from(*n),
        Some(Kind::StringValue(s)) => serde_json::Value::String(s.clone()),
        Some(Kind::ListValue(l)) => l.values.iter().map(value_to_json).collect(),
        Some(Kind::StructValue(s)) => serde_json::Value::Object(
            s.fields
                .iter()
                .map(|(k, v)| (k.clone(), value_to_json(v)))
                .collect(),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_meta_round_trips_through_node() {
        let meta = NodeMeta {
            service: "reviews".into(),
            namespace: "default".into(),
            labels: [("version".to_owned(), "v2".to_owned())].into(),
            app_port: 9080,
            inbound_port: 41000,
            ip: "127.0.0.1".into(),
            advertise: None,
            upstreams: vec![UpstreamPort {
                service: "ratings".into(),
                port: 41001,
            }],
            http_proxy_port: Some(41002),
            locality: Some("eu/zone-a".into()),
            mtls: true,
            admin: Some("127.0.0.1:15000".into()),
            client: ClientKind::TrellisProxy,
            h2_upgrade: true,
        };
        let node = meta.to_node("reviews-1");
        assert_eq!(node.id, "reviews-1");
        assert_eq!(
            node.locality.as_ref().map(|l| l.zone.as_str()),
            Some("zone-a")
        );
        assert_eq!(NodeMeta::from_node(&node).unwrap(), meta);
    }

    #[test]
    fn node_without_metadata_is_rejected() {
        let err = NodeMeta::from_node(&Node::default()).unwrap_err();
        assert!(err.to_string().contains("no metadata.trellis"));
    }
}
