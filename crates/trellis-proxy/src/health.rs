//! Active health checking: one task per health-checked cluster probes each of its endpoints
//! every interval (HTTP path, gRPC health protocol or TCP connect, through the cluster's own
//! connections, mTLS included) and flips an endpoint's health after enough results in a row.
//! The balancer skips unhealthy endpoints; endpoints start healthy.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::Arc;

use bytes::{Buf, Bytes};
use http::{HeaderValue, Request, Version, header};
use http_body_util::BodyExt;
use tokio::task::JoinHandle;

use crate::balance::EndpointState;
use crate::config::cluster::{ClusterConfig, HealthCheckConfig, Probe};
use crate::config::tls::UpstreamTls;
use crate::http::UpstreamBody;
use crate::http::client::{self, FromUpstream, UpstreamClients};
use crate::table::{Cluster, Shared};
use crate::tls::connect::MeshConnector;

/// The running checkers, one per health-checked cluster.
#[derive(Debug, Default)]
pub(crate) struct HealthChecks {
    tasks: HashMap<String, (HealthCheckConfig, JoinHandle<()>)>,
}

impl Drop for HealthChecks {
    fn drop(&mut self) {
        for (_, task) in self.tasks.values() {
            task.abort();
        }
    }
}

impl HealthChecks {
    /// Starts checkers for clusters that gained a health check (or changed it) and stops those
    /// of clusters that lost theirs or are gone.
    pub(crate) fn reconcile(
        &mut self,
        clusters: &BTreeMap<String, Arc<ClusterConfig>>,
        shared: &Arc<Shared>,
    ) {
        self.tasks.retain(|name, (config, task)| {
            let keep = clusters
                .get(name)
                .and_then(|c| c.health_check.as_ref())
                .is_some_and(|current| current == config);
            if !keep {
                task.abort();
            }
            keep
        });
        for (name, cluster) in clusters {
            let Some(config) = &cluster.health_check else {
                continue;
            };
            if !self.tasks.contains_key(name) {
                let task = tokio::spawn(run(shared.clone(), name.clone(), config.clone()));
                self.tasks.insert(name.clone(), (config.clone(), task));
            }
        }
    }
}

/// Results in a row for one endpoint.
#[derive(Debug, Default, Clone, Copy)]
struct Streak {
    passed: u32,
    failed: u32,
}

async fn run(shared: Arc<Shared>, cluster: String, config: HealthCheckConfig) {
    let mut streaks: HashMap<SocketAddr, Streak> = HashMap::new();
    let mut ticks = tokio::time::interval(config.interval);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        let table = shared.table.load_full();
        let Some(current) = table.clusters.get(&cluster).cloned() else {
            continue;
        };
        let members: Vec<(Arc<EndpointState>, Option<Arc<UpstreamTls>>)> = current
            .endpoints
            .members()
            .map(|(e, tls)| (e.clone(), tls.cloned()))
            .collect();
        let probes = members.iter().map(|(endpoint, tls)| {
            let probe = probe(&current, &config, endpoint, tls.is_some());
            async move {
                let ok = tokio::time::timeout(config.timeout, probe)
                    .await
                    .unwrap_or(false);
                (endpoint, ok)
            }
        });
        let results = futures_util::future::join_all(probes).await;
        streaks.retain(|addr, _| members.iter().any(|(e, _)| e.addr == *addr));
        for (endpoint, ok) in results {
            let streak = streaks.entry(endpoint.addr).or_default();
            if ok {
                *streak = Streak {
                    passed: streak.passed.saturating_add(1),
                    failed: 0,
                };
                if streak.passed >= config.healthy_threshold && !endpoint.healthy() {
                    tracing::info!(cluster, endpoint = %endpoint.addr, "endpoint passes its health check");
                    endpoint.set_healthy(true);
                }
            } else {
                *streak = Streak {
                    passed: 0,
                    failed: streak.failed.saturating_add(1),
                };
                if streak.failed >= config.unhealthy_threshold && endpoint.healthy() {
                    tracing::info!(cluster, endpoint = %endpoint.addr, "endpoint fails its health check");
                    endpoint.set_healthy(false);
                }
            }
        }
    }
}

/// One probe of `endpoint`; true when it passes.
async fn probe(
    cluster: &Cluster,
    config: &HealthCheckConfig,
    endpoint: &EndpointState,
    mtls: bool,
) -> bool {
    let clients = Clients {
        plain: &cluster.clients,
        mesh: cluster.tls_clients.as_deref().filter(|_| mtls),
    };
    let name = &cluster.config.name;
    match &config.probe {
        Probe::Tcp => tokio::net::TcpStream::connect(endpoint.addr).await.is_ok(),
        Probe::Http {
            path,
            host,
            expected,
            http2,
        } => {
            let host = if host.is_empty() { name } else { host };
            let version = if *http2 {
                Version::HTTP_2
            } else {
                Version::HTTP_11
            };
            let Ok(req) = Request::get(path.as_str())
                .header(header::HOST, host.as_str())
                .body(UpstreamBody::Empty)
            else {
                return false;
            };
            match clients.send(req, endpoint, version).await {
                Some(response) => {
                    let status = response.status().as_u16();
                    drain(response.into_body()).await;
                    expected.iter().any(|r| r.contains(&status))
                }
                None => false,
            }
        }
        Probe::Grpc { service, authority } => {
            let authority = if authority.is_empty() {
                name
            } else {
                authority
            };
            grpc_serving(&clients, endpoint, authority, service).await
        }
    }
}

/// The cluster's clients for one endpoint.
struct Clients<'a> {
    plain: &'a UpstreamClients,
    mesh: Option<&'a UpstreamClients<MeshConnector>>,
}

impl Clients<'_> {
    async fn send(
        &self,
        mut req: Request<UpstreamBody>,
        endpoint: &EndpointState,
        version: Version,
    ) -> Option<http::Response<FromUpstream>> {
        client::to_upstream(&mut req, &endpoint.authority, version, false);
        let sent = match self.mesh {
            Some(mesh) => mesh.send(version, &endpoint.authority, req).await,
            None => self.plain.send(version, &endpoint.authority, req).await,
        };
        sent.ok()
    }
}

async fn drain(mut body: FromUpstream) -> Option<(Bytes, Option<http::HeaderMap>)> {
    let mut data = Vec::new();
    let mut trailers = None;
    while let Some(frame) = body.frame().await {
        let frame = frame.ok()?;
        if let Some(chunk) = frame.data_ref() {
            data.extend_from_slice(chunk);
        } else if let Ok(t) = frame.into_trailers() {
            trailers = Some(t);
        }
    }
    Some((Bytes::from(data), trailers))
}

/// `grpc.health.v1.Health/Check`: true when the answer is OK with status SERVING (1).
async fn grpc_serving(
    clients: &Clients<'_>,
    endpoint: &EndpointState,
    authority: &str,
    service: &str,
) -> bool {
    // HealthCheckRequest { service = 1 } in a gRPC frame: uncompressed flag, length, message.
    let mut message = Vec::with_capacity(service.len() + 2);
    if !service.is_empty() {
        message.push(0x0a);
        push_varint(&mut message, service.len() as u64);
        message.extend_from_slice(service.as_bytes());
    }
    let mut frame = Vec::with_capacity(message.len() + 5);
    frame.push(0);
    frame.extend_from_slice(&u32::try_from(message.len()).unwrap_or(0).to_be_bytes());
    frame.extend_from_slice(&message);
    let Ok(req) = Request::post("/grpc.health.v1.Health/Check")
        .header(header::HOST, authority)
        .header(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/grpc"),
        )
        .header(header::TE, HeaderValue::from_static("trailers"))
        .body(UpstreamBody::Fixed {
            data: Some(Bytes::from(frame)),
        })
    else {
        return false;
    };
    let Some(response) = clients.send(req, endpoint, Version::HTTP_2).await else {
        return false;
    };
    let headers_status = response.headers().get("grpc-status").cloned();
    let Some((mut body, trailers)) = drain(response.into_body()).await else {
        return false;
    };
    let status = trailers
        .as_ref()
        .and_then(|t| t.get("grpc-status").cloned())
        .or(headers_status);
    if status.as_ref().and_then(|s| s.to_str().ok()) != Some("0") || body.remaining() < 5 {
        return false;
    }
    body.advance(5);
    // HealthCheckResponse { status = 1 (varint) }: SERVING is 1.
    body.as_ref() == [0x08, 0x01]
}

fn push_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}
