//! The generated mesh config: Service files with numbered loopback endpoints, the node
//! metadata each simulated proxy announces, and the check that a proxy received all of it.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::path::Path;

use anyhow::{Context, bail};
use envoy_types::pb::envoy::config::endpoint::v3::ClusterLoadAssignment;
use prost::Message;
use trellis_xds::node::NodeMeta;

use super::sim::ProxyState;

/// Static endpoints per declared Service (factor 10 = 1000 services / 10k endpoints).
pub(super) const ENDPOINTS_PER_SERVICE: usize = 10;
/// Port of every Service, static endpoint and simulated app (never dialled).
const SERVICE_PORT: u16 = 8080;
/// Simulated proxies' inbound and HTTP-proxy ports (announced, never bound).
const INBOUND_PORT_BASE: usize = 20_000;
const HTTP_PROXY_PORT_BASE: usize = 40_000;
/// Successive changes edit services this far apart, so they spread over the set.
const CHANGE_STRIDE: usize = 37;

/// Proxy 0's endpoints must be every static endpoint plus every proxy: proof that each
/// simulated proxy really receives the whole mesh.
pub(super) fn check_endpoints(
    held: &ProxyState,
    mesh: &MeshConfig,
    proxies: usize,
) -> anyhow::Result<()> {
    let mut assignments = 0;
    let mut endpoints = 0;
    for any in &held.eds {
        let cla = ClusterLoadAssignment::decode(&*any.value).context("decoding EDS")?;
        assignments += 1;
        endpoints += cla
            .endpoints
            .iter()
            .map(|l| l.lb_endpoints.len())
            .sum::<usize>();
    }
    let expected = mesh.endpoint_count() + proxies;
    if assignments != mesh.services || endpoints != expected {
        bail!(
            "proxy 0 holds {assignments} assignments with {endpoints} endpoints; expected {} with {expected}",
            mesh.services
        );
    }
    Ok(())
}

/// The generated Services: each one's static endpoints, plus the one the last change to it
/// added.
#[derive(Debug)]
pub(super) struct MeshConfig {
    /// Declared Services.
    pub(super) services: usize,
    /// Per service, the endpoint its last change added.
    extra: BTreeMap<usize, SocketAddrV4>,
}

impl MeshConfig {
    /// `services` Services with only their static endpoints.
    pub(super) fn new(services: usize) -> MeshConfig {
        MeshConfig {
            services,
            extra: BTreeMap::new(),
        }
    }

    fn name(service: usize) -> String {
        format!("svc-{service:05}")
    }

    fn endpoints(&self, service: usize) -> Vec<SocketAddrV4> {
        let first = service * ENDPOINTS_PER_SERVICE;
        (first..first + ENDPOINTS_PER_SERVICE)
            .map(|n| numbered(0, n))
            .chain(self.extra.get(&service).copied())
            .collect()
    }

    /// Endpoints over all Services, the changes' included.
    pub(super) fn endpoint_count(&self) -> usize {
        self.services * ENDPOINTS_PER_SERVICE + self.extra.len()
    }

    fn yaml(&self, service: usize) -> String {
        let mut out = format!(
            "apiVersion: trellis.dev/v1alpha1\nkind: Service\nmetadata:\n  name: {}\nspec:\n  \
             ports:\n    - name: http\n      port: {SERVICE_PORT}\n      protocol: HTTP\n  \
             endpoints:\n",
            Self::name(service)
        );
        for e in self.endpoints(service) {
            let _ = writeln!(out, "    - address: {e}");
        }
        out
    }

    fn write(&self, dir: &Path, service: usize) -> anyhow::Result<()> {
        let path = dir.join(format!("{}.yaml", Self::name(service)));
        // Synchronous on purpose: the change's clock starts right before this write.
        std::fs::write(&path, self.yaml(service))
            .with_context(|| format!("writing {}", path.display()))
    }

    /// Writes every Service file into `dir`.
    pub(super) fn write_all(&self, dir: &Path) -> anyhow::Result<()> {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        (0..self.services).try_for_each(|s| self.write(dir, s))
    }

    /// Change `n`: one service gets a new endpoint (replacing the one an earlier change gave
    /// it), so exactly one ClusterLoadAssignment differs. Returns the service.
    pub(super) fn change(&mut self, n: usize, dir: &Path) -> anyhow::Result<usize> {
        let service = n * CHANGE_STRIDE % self.services;
        self.extra.insert(service, numbered(1, n));
        self.write(dir, service)?;
        Ok(service)
    }
}

/// Address `n` (below 65536, checked by [`super::validate`]) of 127.`block`.0.0/16, port 8080.
fn numbered(block: u8, n: usize) -> SocketAddrV4 {
    let ip = Ipv4Addr::new(127, block, (n >> 8) as u8, n as u8);
    SocketAddrV4::new(ip, SERVICE_PORT)
}

/// Proxy `i`: a sidecar of one declared service with an HTTP-proxy listener, so its config
/// covers every service (the worst case, as with Istio's default sidecar scope). It holds no
/// join token, so the control plane's CA is never asked.
pub(super) fn proxy_meta(i: usize, services: usize) -> NodeMeta {
    let port = |base: usize| u16::try_from(base + i).unwrap_or(u16::MAX);
    NodeMeta {
        service: MeshConfig::name(i % services),
        namespace: "default".to_owned(),
        labels: BTreeMap::new(),
        app_port: SERVICE_PORT,
        inbound_port: port(INBOUND_PORT_BASE),
        ip: "127.0.0.1".to_owned(),
        advertise: None,
        upstreams: Vec::new(),
        http_proxy_port: Some(port(HTTP_PROXY_PORT_BASE)),
        locality: None,
        // Anything else at its default: no join token, so no workload certificate.
        ..NodeMeta::default()
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;
    use crate::control::{BASE_SERVICES, MAX_FACTOR};

    #[test]
    fn endpoints_are_distinct_loopback_addresses() {
        let mesh = MeshConfig::new(BASE_SERVICES * MAX_FACTOR as usize);
        let all: BTreeSet<SocketAddrV4> =
            (0..mesh.services).flat_map(|s| mesh.endpoints(s)).collect();
        assert_eq!(all.len(), mesh.endpoint_count());
        assert!(all.iter().all(|a| a.ip().octets()[..2] == [127, 0]));
    }

    #[test]
    fn service_yaml_lists_its_endpoints() {
        let mesh = MeshConfig::new(3);
        let yaml = mesh.yaml(2);
        assert!(yaml.starts_with("apiVersion: trellis.dev/v1alpha1\nkind: Service\n"));
        assert!(yaml.contains("  name: svc-00002\n"));
        assert!(yaml.contains("      port: 8080\n      protocol: HTTP\n"));
        assert!(yaml.contains("    - address: 127.0.0.20:8080\n"));
        assert!(yaml.ends_with("    - address: 127.0.0.29:8080\n"));
        assert_eq!(yaml.matches("- address:").count(), ENDPOINTS_PER_SERVICE);
    }

    #[test]
    fn a_change_replaces_the_endpoint_an_earlier_one_added() {
        let dir = tempfile::tempdir().unwrap();
        let mut mesh = MeshConfig::new(2);
        let first = mesh.change(0, dir.path()).unwrap();
        assert_eq!(mesh.change(2, dir.path()).unwrap(), first);
        assert_eq!(mesh.endpoint_count(), 2 * ENDPOINTS_PER_SERVICE + 1);
        let written = std::fs::read_to_string(dir.path().join("svc-00000.yaml")).unwrap();
        assert!(written.contains("127.1.0.2:8080") && !written.contains("127.1.0.0:8080"));
    }
}
