//! `trellis envoy-bootstrap`: the bootstrap that runs a stock Envoy as a workload's sidecar,
//! configured by the control plane like a Trellis proxy.

use std::process::ExitCode;

use anyhow::bail;
use trellis_xds::bootstrap::EnvoyOptions;
use trellis_xds::node::{ClientKind, NodeMeta, UpstreamPort};

use crate::cli::EnvoyBootstrapArgs;

pub(crate) async fn run(args: EnvoyBootstrapArgs) -> anyhow::Result<ExitCode> {
    let (id, meta) = workload(&args)?;
    let opts = EnvoyOptions {
        xds: args.xds_addr,
        admin: args.admin,
        sds: args.sds_socket.as_deref(),
        delta: args.delta,
    };
    let bootstrap = trellis_xds::bootstrap::envoy(&meta, &id, opts);
    println!("{}", serde_json::to_string_pretty(&bootstrap)?);
    Ok(ExitCode::SUCCESS)
}

/// The node id and the metadata Envoy presents: Envoy binds the ports the control plane names
/// in its listeners, so they must be fixed and share the inbound listener's address.
fn workload(args: &EnvoyBootstrapArgs) -> anyhow::Result<(String, NodeMeta)> {
    if args.inbound.port() == 0 {
        bail!(
            "--inbound {}: needs a fixed port (Envoy binds the port the control plane names)",
            args.inbound
        );
    }
    let mut upstreams = Vec::new();
    for (service, addr) in &args.upstreams {
        if addr.ip() != args.inbound.ip() || addr.port() == 0 {
            bail!(
                "--upstream {service}={addr}: expected a fixed port on {}, the inbound listener's address",
                args.inbound.ip()
            );
        }
        upstreams.push(UpstreamPort {
            service: service.clone(),
            port: addr.port(),
        });
    }
    let meta = NodeMeta {
        service: args.service.clone(),
        namespace: args.namespace.clone(),
        labels: args.labels.iter().cloned().collect(),
        app_port: args.app_port,
        inbound_port: args.inbound.port(),
        ip: args.inbound.ip().to_string(),
        advertise: None,
        upstreams,
        http_proxy_port: None,
        locality: args.locality.clone(),
        // A certificate only through a local SDS agent; without one, plaintext (which
        // PERMISSIVE ports accept).
        mtls: args.sds_socket.is_some(),
        admin: Some(args.admin.to_string()),
        client: ClientKind::Envoy,
        // Envoy's inbound side does not restore HTTP/1.1 carried over HTTP/2.
        h2_upgrade: false,
    };
    let id = args
        .node_id
        .clone()
        .unwrap_or_else(|| format!("{}-envoy-{}", args.service, args.inbound.port()));
    Ok((id, meta))
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;

    use super::*;

    fn args(inbound: &str, upstreams: &[(&str, &str)]) -> EnvoyBootstrapArgs {
        let addr = |s: &str| s.parse::<SocketAddr>().unwrap();
        EnvoyBootstrapArgs {
            service: "web".into(),
            namespace: "default".into(),
            labels: vec![("version".into(), "v2".into())],
            app_port: 8080,
            inbound: addr(inbound),
            upstreams: upstreams
                .iter()
                .map(|(s, a)| ((*s).to_owned(), addr(a)))
                .collect(),
            admin: addr("127.0.0.1:15000"),
            xds_addr: addr("127.0.0.1:15010"),
            locality: None,
            node_id: None,
            sds_socket: None,
            delta: false,
        }
    }

    #[test]
    fn the_workload_is_registered_with_its_fixed_ports_and_no_certificate() {
        let (id, meta) = workload(&args("127.0.0.1:15006", &[("api", "127.0.0.1:15101")])).unwrap();
        assert_eq!(id, "web-envoy-15006");
        assert_eq!(meta.inbound_port, 15006);
        assert_eq!(meta.ip, "127.0.0.1");
        assert_eq!(meta.upstreams[0].port, 15101);
        assert_eq!(meta.labels["version"], "v2");
        assert!(!meta.mtls);
        assert_eq!(meta.admin.as_deref(), Some("127.0.0.1:15000"));
    }

    #[test]
    fn with_an_sds_agent_envoy_is_registered_for_mtls() {
        let mut args = args("127.0.0.1:15006", &[]);
        args.sds_socket = Some("/run/trellis/sds.sock".into());
        let (_, meta) = workload(&args).unwrap();
        assert!(meta.mtls);
    }

    #[test]
    fn ports_envoy_cannot_bind_as_told_are_refused() {
        let e = workload(&args("127.0.0.1:0", &[])).unwrap_err().to_string();
        assert!(
            e.starts_with("--inbound 127.0.0.1:0: needs a fixed port"),
            "{e}"
        );
        let e = workload(&args("127.0.0.1:15006", &[("api", "10.0.0.1:15101")]))
            .unwrap_err()
            .to_string();
        assert_eq!(
            e,
            "--upstream api=10.0.0.1:15101: expected a fixed port on 127.0.0.1, the inbound listener's address"
        );
    }
}
