//! Hand-written tonic client for `trellis.demo.Ratings`, shaped like tonic-build's output.

use std::net::SocketAddr;

use tonic::codec::Streaming;
use tonic::transport::{Channel, Endpoint};
use tonic::{IntoRequest, Response, Status};
use tonic_prost::ProstCodec;

use super::proto::{RateReply, RateRequest};
use super::{RATE_PATH, SERVICE_NAME, WATCH_PATH};
use crate::DemoError;

/// A client of `trellis.demo.Ratings`; cheap to clone, clones share one HTTP/2 connection.
#[derive(Debug, Clone)]
pub struct RatingsClient {
    inner: tonic::client::Grpc<Channel>,
}

impl RatingsClient {
    /// Wraps an existing channel.
    pub fn new(channel: Channel) -> Self {
        Self {
            inner: tonic::client::Grpc::new(channel),
        }
    }

    /// A client of the plaintext (h2c) server at `addr` that connects on first use, so it can be
    /// built before the server is up.
    pub fn connect_lazy(addr: SocketAddr) -> Result<Self, DemoError> {
        let endpoint = Endpoint::from_shared(format!("http://{addr}"))?;
        Ok(Self::new(endpoint.connect_lazy()))
    }

    /// Calls `Rate`: the rating of one item.
    pub async fn rate(
        &mut self,
        request: impl IntoRequest<RateRequest>,
    ) -> Result<Response<RateReply>, Status> {
        self.ready().await?;
        let mut request = request.into_request();
        request
            .extensions_mut()
            .insert(tonic::GrpcMethod::new(SERVICE_NAME, "Rate"));
        let path = http::uri::PathAndQuery::from_static(RATE_PATH);
        self.inner.unary(request, path, ProstCodec::default()).await
    }

    /// Calls `Watch`: a short stream of rating updates for one item, ended by the server.
    pub async fn watch(
        &mut self,
        request: impl IntoRequest<RateRequest>,
    ) -> Result<Response<Streaming<RateReply>>, Status> {
        self.ready().await?;
        let mut request = request.into_request();
        request
            .extensions_mut()
            .insert(tonic::GrpcMethod::new(SERVICE_NAME, "Watch"));
        let path = http::uri::PathAndQuery::from_static(WATCH_PATH);
        self.inner
            .server_streaming(request, path, ProstCodec::default())
            .await
    }

    async fn ready(&mut self) -> Result<(), Status> {
        self.inner
            .ready()
            .await
            .map_err(|error| Status::unavailable(format!("ratings not ready: {error}")))
    }
}
