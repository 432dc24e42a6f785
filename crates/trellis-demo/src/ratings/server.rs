//! Hand-written tonic server glue for `trellis.demo.Ratings`, shaped like tonic-build's output.

use std::convert::Infallible;
use std::future::{Ready, ready};
use std::task::{Context, Poll};

use tonic::codegen::{Body, BoxFuture, Service, StdError};
use tonic::server::{Grpc, NamedService, ServerStreamingService, UnaryService};
use tonic::{Request, Response, Status};
use tonic_prost::ProstCodec;

use super::proto::{RateReply, RateRequest};
use super::{RATE_PATH, SERVICE_NAME, WATCH_PATH, WatchStream};

/// The `trellis.demo.Ratings` service as a tower service for tonic's transport server.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct RatingsServer;

impl<B> Service<http::Request<B>> for RatingsServer
where
    B: Body + Send + 'static,
    B::Error: Into<StdError> + Send + 'static,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = Infallible;
    type Future = BoxFuture<Self::Response, Self::Error>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        match req.uri().path() {
            RATE_PATH => Box::pin(async move {
                let mut grpc = Grpc::new(ProstCodec::default());
                Ok(grpc.unary(RateSvc, req).await)
            }),
            WATCH_PATH => Box::pin(async move {
                let mut grpc = Grpc::new(ProstCodec::default());
                Ok(grpc.server_streaming(WatchSvc, req).await)
            }),
            _ => Box::pin(async move { Ok(Status::unimplemented("").into_http()) }),
        }
    }
}

impl NamedService for RatingsServer {
    const NAME: &'static str = SERVICE_NAME;
}

struct RateSvc;

impl UnaryService<RateRequest> for RateSvc {
    type Response = RateReply;
    type Future = Ready<Result<Response<RateReply>, Status>>;

    fn call(&mut self, request: Request<RateRequest>) -> Self::Future {
        ready(super::rate(request.get_ref()).map(Response::new))
    }
}

struct WatchSvc;

impl ServerStreamingService<RateRequest> for WatchSvc {
    type Response = RateReply;
    type ResponseStream = WatchStream;
    type Future = Ready<Result<Response<WatchStream>, Status>>;

    fn call(&mut self, request: Request<RateRequest>) -> Self::Future {
        ready(super::watch(request.into_inner()).map(Response::new))
    }
}
