//! What `trellis proxy` is told at startup: the control plane, the workload it fronts, and the
//! local ports it listens on.

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use crate::telemetry::{AccessLogFormat, TracingOptions};

/// Startup options of a sidecar proxy.
#[derive(Debug, Clone, PartialEq)]
pub struct ProxyOptions {
    /// ADS endpoint URL, e.g. `http://127.0.0.1:15010`.
    pub control_plane: String,
    /// xDS node id; `None` means `<service>-<random hex>`.
    pub node_id: Option<String>,
    /// Service this workload belongs to.
    pub service: String,
    /// Namespace of the service.
    pub namespace: String,
    /// Workload labels (e.g. `version: v2`).
    pub labels: BTreeMap<String, String>,
    /// Port of the local app, reached at `127.0.0.1:app_port`.
    pub app_port: u16,
    /// Inbound listener address; port 0 binds an ephemeral port and reports it.
    pub inbound: SocketAddr,
    /// Address peers should use to reach the inbound listener, when it differs from the bound
    /// one (a port forward or NAT in between); `None` advertises the bound address.
    pub advertise: Option<SocketAddr>,
    /// Outbound listeners: upstream service name → local listen address (port 0 allowed).
    pub upstreams: Vec<(String, SocketAddr)>,
    /// HTTP-proxy-mode outbound listener (clients send absolute-form URIs), if any.
    pub http_proxy: Option<SocketAddr>,
    /// Admin server address (`/ready`, `/metrics`, `/config_dump`).
    pub admin: SocketAddr,
    /// Locality as `region/zone/subzone`.
    pub locality: Option<String>,
    /// The join token the control plane's CA accepts; with it the proxy gets a workload
    /// certificate and speaks mTLS to other sidecars. `None`: plaintext only.
    pub ca_token: Option<String>,
    /// Trust domain of the workload's SPIFFE ID.
    pub trust_domain: String,
    /// SVID lifetime to ask for; `None` takes the CA's default.
    pub svid_ttl: Option<Duration>,
    /// Log every request to stdout in this format; `None` logs none.
    pub access_log: Option<AccessLogFormat>,
    /// Export spans of sampled requests to an OTLP collector; `None` traces none (trace
    /// headers still pass through untouched).
    pub tracing: Option<TracingOptions>,
}

impl Default for ProxyOptions {
    /// Control plane on `127.0.0.1:15010`, inbound on `127.0.0.1:0`, admin on `127.0.0.1:15000`,
    /// namespace `default`; service and app port still need setting.
    fn default() -> Self {
        Self {
            control_plane: "http://127.0.0.1:15010".to_owned(),
            node_id: None,
            service: String::new(),
            namespace: "default".to_owned(),
            labels: BTreeMap::new(),
            app_port: 0,
            inbound: SocketAddr::from((Ipv4Addr::LOCALHOST, 0)),
            advertise: None,
            upstreams: Vec::new(),
            http_proxy: None,
            admin: SocketAddr::from((Ipv4Addr::LOCALHOST, 15000)),
            locality: None,
            ca_token: None,
            trust_domain: "cluster.local".to_owned(),
            svid_ttl: None,
            access_log: None,
            tracing: None,
        }
    }
}
