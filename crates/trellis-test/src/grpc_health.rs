//! A real gRPC backend (tonic-health over h2c) and client helpers for its `Check` and `Watch`.

use std::net::SocketAddr;

use anyhow::Context as _;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::service::TowerToHyperService;
use tonic::codec::Streaming;
use tonic::transport::{Channel, Endpoint};
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::{HealthCheckRequest, HealthCheckResponse};
use tonic_health::server::HealthReporter;

use crate::CLIENT_TIMEOUT;
use crate::server::{Server, spawn_server};

pub use tonic_health::pb::health_check_response::ServingStatus;

/// A running gRPC health server; dropping it stops the server.
#[derive(Debug)]
pub struct GrpcHealthServer {
    server: Server,
    reporter: HealthReporter,
}

impl GrpcHealthServer {
    /// The loopback address the server listens on.
    pub fn addr(&self) -> SocketAddr {
        self.server.addr()
    }

    /// Sets `service`'s status (`""` is the whole server), which open `Watch` streams then see.
    pub async fn set_serving(&self, service: &str, serving: bool) {
        let status = if serving {
            tonic_health::ServingStatus::Serving
        } else {
            tonic_health::ServingStatus::NotServing
        };
        self.reporter.set_service_status(service, status).await;
    }
}

/// Spawns a `grpc.health.v1.Health` server (HTTP/1.1 is refused by gRPC itself; HTTP/2 is
/// prior-knowledge h2c). The whole server (`""`) starts `SERVING`; other services are unknown
/// until [`GrpcHealthServer::set_serving`] names them.
pub async fn spawn_grpc_health() -> anyhow::Result<GrpcHealthServer> {
    let (reporter, service) = tonic_health::server::health_reporter();
    let server = spawn_server(move |stream| {
        let service = TowerToHyperService::new(service.clone());
        async move {
            let builder = auto::Builder::new(TokioExecutor::new());
            if let Err(error) = builder
                .serve_connection(TokioIo::new(stream), service)
                .await
            {
                tracing::debug!(%error, "grpc health connection ended with an error");
            }
        }
    })
    .await?;
    Ok(GrpcHealthServer { server, reporter })
}

/// Calls `Check` for `service` (`""` for the whole server) on the h2c server at `addr`.
pub async fn grpc_check(addr: SocketAddr, service: &str) -> anyhow::Result<ServingStatus> {
    let call = async {
        let mut client = HealthClient::new(connect(addr).await?);
        let reply = client
            .check(request(service))
            .await
            .context("grpc health check failed")?;
        Ok(ServingStatus::try_from(reply.into_inner().status)?)
    };
    tokio::time::timeout(CLIENT_TIMEOUT, call)
        .await
        .context("grpc health check timed out")?
}

/// Opens a `Watch` stream for `service` (`""` for the whole server) on the h2c server at `addr`.
/// The server sends the current status first, then one status per change; changes made before
/// the first status is read may be coalesced into it, so read it before changing anything.
pub async fn grpc_watch(addr: SocketAddr, service: &str) -> anyhow::Result<HealthWatch> {
    let call = async {
        let mut client = HealthClient::new(connect(addr).await?);
        let stream = client
            .watch(request(service))
            .await
            .context("grpc health watch failed")?
            .into_inner();
        anyhow::Ok(HealthWatch { stream })
    };
    tokio::time::timeout(CLIENT_TIMEOUT, call)
        .await
        .context("grpc health watch timed out")?
}

/// An open `grpc.health.v1.Health/Watch` stream.
#[derive(Debug)]
pub struct HealthWatch {
    stream: Streaming<HealthCheckResponse>,
}

impl HealthWatch {
    /// The next status; fails if the stream ends or none arrives within the client timeout.
    pub async fn next(&mut self) -> anyhow::Result<ServingStatus> {
        let reply = tokio::time::timeout(CLIENT_TIMEOUT, self.stream.message())
            .await
            .context("no grpc health status within the timeout")??
            .context("grpc health watch ended")?;
        Ok(ServingStatus::try_from(reply.status)?)
    }

    /// The next `count` statuses.
    pub async fn take(&mut self, count: usize) -> anyhow::Result<Vec<ServingStatus>> {
        let mut statuses = Vec::with_capacity(count);
        for _ in 0..count {
            statuses.push(self.next().await?);
        }
        Ok(statuses)
    }
}

async fn connect(addr: SocketAddr) -> anyhow::Result<Channel> {
    let channel = Endpoint::from_shared(format!("http://{addr}"))?
        .connect()
        .await
        .with_context(|| format!("grpc connect to {addr}"))?;
    Ok(channel)
}

fn request(service: &str) -> HealthCheckRequest {
    HealthCheckRequest {
        service: service.to_owned(),
    }
}
