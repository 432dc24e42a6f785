//! The bootstrap that makes a stock Envoy a Trellis data plane: the workload's node id and
//! [`NodeMeta`] (so the control plane registers it as it does a Trellis proxy), ADS over gRPC
//! to the control plane for listeners and clusters (routes, endpoints and secrets follow on the
//! same stream), and the admin interface on the given (loopback) address; and the bootstrap
//! file of a proxyless gRPC client.

use std::net::SocketAddr;
use std::path::Path;

use serde_json::{Value, json};

use crate::node::{METADATA_KEY, NodeMeta, parse_locality};
use crate::sds::SDS_CLUSTER;

/// Name of the bootstrap's static cluster that reaches the control plane.
const XDS_CLUSTER: &str = "xds";

/// Where an Envoy sidecar finds the mesh, and how it talks to it.
#[derive(Debug, Clone, Copy)]
pub struct EnvoyOptions<'a> {
    /// The control plane's ADS server.
    pub xds: SocketAddr,
    /// Envoy's admin address (loopback).
    pub admin: SocketAddr,
    /// The Unix socket of the local agent serving the workload certificate over SDS (static
    /// cluster `sds-grpc`, which the control plane's TLS contexts name); the node's
    /// `meta.mtls` should then be set. `None`: plaintext.
    pub sds: Option<&'a Path>,
    /// Incremental (delta) ADS instead of state of the world.
    pub delta: bool,
}

/// Envoy's bootstrap (JSON, which `envoy -c` reads like YAML) for the workload `meta` with
/// node id `id`.
pub fn envoy(meta: &NodeMeta, id: &str, opts: EnvoyOptions<'_>) -> Value {
    let EnvoyOptions {
        xds,
        admin,
        sds,
        delta,
    } = opts;
    let ads = json!({ "ads": {}, "resource_api_version": "V3" });
    let mut clusters = vec![grpc_cluster(XDS_CLUSTER, socket_address(xds))];
    if let Some(path) = sds {
        let pipe = json!({ "pipe": { "path": path.to_string_lossy() } });
        clusters.push(grpc_cluster(SDS_CLUSTER, pipe));
    }
    json!({
        "node": node(meta, id),
        "admin": { "address": socket_address(admin) },
        "dynamic_resources": {
            "ads_config": {
                "api_type": if delta { "DELTA_GRPC" } else { "GRPC" },
                "transport_api_version": "V3",
                "grpc_services": [{ "envoy_grpc": { "cluster_name": XDS_CLUSTER } }],
                "set_node_on_first_message_only": true,
            },
            "lds_config": ads,
            "cds_config": ads,
        },
        "static_resources": { "clusters": clusters },
    })
}

/// gRPC's xDS bootstrap (the file `GRPC_XDS_BOOTSTRAP` names) for a proxyless client of the
/// workload `meta` with node id `id`: the control plane's ADS server at `xds` (plaintext, xDS
/// v3). The client then resolves `xds:///name.namespace` (or `xds:///name` in its own
/// namespace) through the control plane.
pub fn grpc(meta: &NodeMeta, id: &str, xds: SocketAddr) -> Value {
    json!({
        "xds_servers": [{
            "server_uri": xds.to_string(),
            "channel_creds": [{ "type": "insecure" }],
            "server_features": ["xds_v3"],
        }],
        "node": node(meta, id),
    })
}

/// The xDS node of `meta`: id, cluster, `metadata.trellis` and locality.
fn node(meta: &NodeMeta, id: &str) -> Value {
    let mut node = json!({
        "id": id,
        "cluster": meta.service,
        "metadata": { METADATA_KEY: meta },
    });
    if let Some(locality) = &meta.locality {
        let l = parse_locality(locality);
        node["locality"] = json!({ "region": l.region, "zone": l.zone, "sub_zone": l.sub_zone });
    }
    node
}

/// A static cluster speaking gRPC (HTTP/2) to the one endpoint at `address`.
fn grpc_cluster(name: &str, address: Value) -> Value {
    json!({
        "name": name,
        "type": "STATIC",
        "connect_timeout": "1s",
        "typed_extension_protocol_options": {
            "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
                "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
                "explicit_http_config": { "http2_protocol_options": {} },
            },
        },
        "load_assignment": {
            "cluster_name": name,
            "endpoints": [{ "lb_endpoints": [{ "endpoint": { "address": address } }] }],
        },
    })
}

fn socket_address(addr: SocketAddr) -> Value {
    json!({ "socket_address": { "address": addr.ip().to_string(), "port_value": addr.port() } })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn options(xds: SocketAddr, admin: SocketAddr, sds: Option<&Path>) -> EnvoyOptions<'_> {
        EnvoyOptions {
            xds,
            admin,
            sds,
            delta: false,
        }
    }

    #[test]
    fn delta_ads_is_asked_for_by_api_type() {
        let addr = SocketAddr::from(([127, 0, 0, 1], 15010));
        let meta = NodeMeta::default();
        let sotw = envoy(&meta, "w", options(addr, addr, None));
        assert_eq!(sotw["dynamic_resources"]["ads_config"]["api_type"], "GRPC");
        let delta = envoy(
            &meta,
            "w",
            EnvoyOptions {
                delta: true,
                ..options(addr, addr, None)
            },
        );
        assert_eq!(
            delta["dynamic_resources"]["ads_config"]["api_type"],
            "DELTA_GRPC"
        );
    }

    #[test]
    fn the_node_carries_the_workload_and_ads_points_at_the_control_plane() {
        let meta = NodeMeta {
            service: "web".into(),
            namespace: "shop".into(),
            app_port: 8080,
            inbound_port: 15006,
            ip: "127.0.0.1".into(),
            locality: Some("eu/eu-1a".into()),
            ..NodeMeta::default()
        };
        let xds = SocketAddr::from(([127, 0, 0, 1], 15010));
        let admin = SocketAddr::from(([127, 0, 0, 1], 15000));
        let b = envoy(&meta, "web-1", options(xds, admin, None));
        assert_eq!(b["node"]["id"], "web-1");
        assert_eq!(b["node"]["cluster"], "web");
        assert_eq!(b["node"]["locality"]["zone"], "eu-1a");
        let registered: NodeMeta =
            serde_json::from_value(b["node"]["metadata"][METADATA_KEY].clone()).unwrap();
        assert_eq!(registered, meta);
        assert_eq!(
            b["admin"]["address"]["socket_address"],
            json!({ "address": "127.0.0.1", "port_value": 15000 })
        );
        let xds_cluster = &b["static_resources"]["clusters"][0];
        assert_eq!(
            xds_cluster["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]["address"]
                ["socket_address"]["port_value"],
            15010
        );
        assert_eq!(
            b["dynamic_resources"]["ads_config"]["grpc_services"][0]["envoy_grpc"]["cluster_name"],
            xds_cluster["name"]
        );
    }

    #[test]
    fn a_grpc_client_reaches_the_control_plane_in_plaintext_xds_v3() {
        let meta = NodeMeta {
            service: "client".into(),
            ..NodeMeta::default()
        };
        let b = grpc(&meta, "client-1", SocketAddr::from(([127, 0, 0, 1], 15010)));
        assert_eq!(
            b["xds_servers"],
            json!([{
                "server_uri": "127.0.0.1:15010",
                "channel_creds": [{ "type": "insecure" }],
                "server_features": ["xds_v3"],
            }])
        );
        assert_eq!(b["node"]["id"], "client-1");
        let registered: NodeMeta =
            serde_json::from_value(b["node"]["metadata"][METADATA_KEY].clone()).unwrap();
        assert_eq!(registered, meta);
    }

    #[test]
    fn with_an_sds_socket_envoy_reaches_the_local_agent_over_it() {
        let meta = NodeMeta {
            mtls: true,
            ..NodeMeta::default()
        };
        let addr = SocketAddr::from(([127, 0, 0, 1], 15010));
        let sds = Some(Path::new("/run/trellis/sds.sock"));
        let b = envoy(&meta, "w", options(addr, addr, sds));
        let clusters = b["static_resources"]["clusters"].as_array().unwrap();
        assert_eq!(clusters.len(), 2);
        assert_eq!(clusters[1]["name"], SDS_CLUSTER);
        assert_eq!(
            clusters[1]["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]["address"]
                ["pipe"]["path"],
            "/run/trellis/sds.sock"
        );
        assert!(
            clusters[1]["typed_extension_protocol_options"]
                .to_string()
                .contains("http2"),
            "SDS is gRPC"
        );
    }
}
