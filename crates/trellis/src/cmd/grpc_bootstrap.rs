//! `trellis grpc-bootstrap`: the xDS bootstrap of a proxyless gRPC client, which resolves
//! `xds:///` targets through the control plane and balances over their endpoints itself.

use std::process::ExitCode;

use trellis_xds::node::{ClientKind, NodeMeta};

use crate::cli::GrpcBootstrapArgs;

pub(crate) fn run(args: &GrpcBootstrapArgs) -> anyhow::Result<ExitCode> {
    let (id, meta) = workload(args);
    let bootstrap = trellis_xds::bootstrap::grpc(&meta, &id, args.xds_addr);
    println!("{}", serde_json::to_string_pretty(&bootstrap)?);
    Ok(ExitCode::SUCCESS)
}

/// The node id and metadata: a client only, with no inbound port (nobody's endpoint).
fn workload(args: &GrpcBootstrapArgs) -> (String, NodeMeta) {
    let meta = NodeMeta {
        service: args.service.clone(),
        namespace: args.namespace.clone(),
        labels: args.labels.iter().cloned().collect(),
        locality: args.locality.clone(),
        client: ClientKind::Grpc,
        ..NodeMeta::default()
    };
    let id = args
        .node_id
        .clone()
        .unwrap_or_else(|| format!("{}-grpc-{}", args.service, std::process::id()));
    (id, meta)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_client_is_registered_without_ports() {
        let args = GrpcBootstrapArgs {
            service: "shop".into(),
            namespace: "prod".into(),
            labels: vec![("version".into(), "v1".into())],
            xds_addr: "127.0.0.1:15010".parse().unwrap(),
            locality: Some("eu/a".into()),
            node_id: Some("shop-1".into()),
        };
        let (id, meta) = workload(&args);
        assert_eq!(id, "shop-1");
        assert_eq!((meta.inbound_port, meta.app_port), (0, 0));
        assert!(meta.upstreams.is_empty() && !meta.mtls);
        assert_eq!(meta.namespace, "prod");
        assert_eq!(meta.locality.as_deref(), Some("eu/a"));
    }
}
