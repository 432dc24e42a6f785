//! Data-path failures: where each came from, whether a retry could help, and — in one place —
//! the status code, Envoy response flag and local reply each maps to.

use std::time::Duration;

use bytes::Bytes;
use http::{Response, StatusCode, header};
use http_body_util::{Either, Full};

use crate::http::Metered;
use crate::http::client::UpstreamError;

/// Body of responses sent downstream: a proxied upstream body or a local reply.
pub(crate) type ResponseBody = Either<Metered, Full<Bytes>>;

/// Which side a failure came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Side {
    /// The client or its request.
    Downstream,
    /// The chosen endpoint.
    Upstream,
    /// Our own configuration or state.
    Internal,
}

/// Why a request could not be forwarded.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ForwardError {
    /// No virtual host or route matched.
    #[error("no route matched")]
    NoRoute,
    /// The route names a cluster that CDS does not have.
    #[error("cluster {cluster:?} is not configured")]
    ClusterNotFound {
        /// Cluster name.
        cluster: String,
        /// The route's `cluster_not_found_response_code`.
        status: StatusCode,
    },
    /// The cluster has no endpoint that takes requests.
    #[error("cluster {0:?} has no healthy endpoint")]
    NoHealthyUpstream(String),
    /// A circuit breaker of the cluster is open: too many requests, or too many waiting for a
    /// connection.
    #[error("cluster {0:?} is over its circuit-breaker limits")]
    Overflow(String),
    /// Connecting to the endpoint failed or timed out.
    #[error("upstream connect failed: {0}")]
    ConnectFailed(String),
    /// The endpoint reset or closed the stream before response headers.
    #[error("upstream reset before response headers: {0}")]
    UpstreamReset(String),
    /// No response headers within the route timeout.
    #[error("upstream did not respond within {0:?}")]
    UpstreamTimeout(Duration),
    /// The client's request body failed (it disconnected mid-request).
    #[error("downstream request body failed: {0}")]
    DownstreamAborted(String),
    /// An upgrade the route does not allow.
    #[error("upgrade {0:?} is not allowed on this route")]
    UpgradeRejected(String),
}

impl ForwardError {
    /// Classifies a failure of the upstream HTTP client.
    pub(crate) fn from_client(e: &UpstreamError) -> Self {
        match e {
            UpstreamError::Connect(detail) => {
                ForwardError::ConnectFailed(format!("client error (Connect): {detail}"))
            }
            UpstreamError::Http(e) if e.is_user() => ForwardError::DownstreamAborted(e.to_string()),
            UpstreamError::Http(e) => ForwardError::UpstreamReset(e.to_string()),
            UpstreamError::H2(e) => ForwardError::UpstreamReset(e.to_string()),
            UpstreamError::RequestBody(e) => ForwardError::DownstreamAborted(e.to_string()),
        }
    }

    /// Where the failure came from.
    pub(crate) fn side(&self) -> Side {
        match self {
            ForwardError::NoRoute
            | ForwardError::ClusterNotFound { .. }
            | ForwardError::NoHealthyUpstream(_)
            | ForwardError::Overflow(_) => Side::Internal,
            ForwardError::ConnectFailed(_)
            | ForwardError::UpstreamReset(_)
            | ForwardError::UpstreamTimeout(_) => Side::Upstream,
            ForwardError::DownstreamAborted(_) | ForwardError::UpgradeRejected(_) => {
                Side::Downstream
            }
        }
    }

    /// Whether retrying on another endpoint could succeed (the request never reached one).
    pub(crate) fn retryable(&self) -> bool {
        matches!(
            self,
            ForwardError::ConnectFailed(_) | ForwardError::NoHealthyUpstream(_)
        )
    }

    /// Status code sent downstream.
    pub(crate) fn status(&self) -> StatusCode {
        match self {
            ForwardError::NoRoute => StatusCode::NOT_FOUND,
            ForwardError::ClusterNotFound { status, .. } => *status,
            ForwardError::NoHealthyUpstream(_) | ForwardError::Overflow(_) => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            ForwardError::ConnectFailed(_) | ForwardError::UpstreamReset(_) => {
                StatusCode::BAD_GATEWAY
            }
            ForwardError::UpstreamTimeout(_) => StatusCode::GATEWAY_TIMEOUT,
            ForwardError::DownstreamAborted(_) => StatusCode::BAD_REQUEST,
            ForwardError::UpgradeRejected(_) => StatusCode::FORBIDDEN,
        }
    }

    /// Envoy response flag for access logs (`-` when Envoy sets none).
    pub(crate) fn flag(&self) -> &'static str {
        match self {
            ForwardError::NoRoute => "NR",
            ForwardError::ClusterNotFound { .. } => "NC",
            ForwardError::NoHealthyUpstream(_) => "UH",
            ForwardError::Overflow(_) => "UO",
            ForwardError::ConnectFailed(_) => "UF",
            ForwardError::UpstreamReset(_) => "UR",
            ForwardError::UpstreamTimeout(_) => "UT",
            ForwardError::DownstreamAborted(_) => "DC",
            ForwardError::UpgradeRejected(_) => "-",
        }
    }

    /// The local reply, with Envoy's body texts.
    pub(crate) fn response(&self) -> Response<ResponseBody> {
        let body: &'static str = match self {
            ForwardError::NoRoute | ForwardError::UpgradeRejected(_) => "",
            ForwardError::ClusterNotFound { .. } => "cluster not found",
            ForwardError::NoHealthyUpstream(_) => "no healthy upstream",
            ForwardError::Overflow(_) => {
                "upstream connect error or disconnect/reset before headers. reset reason: overflow"
            }
            ForwardError::ConnectFailed(_) => {
                "upstream connect error or disconnect/reset before headers. reset reason: connection failure"
            }
            ForwardError::UpstreamReset(_) => {
                "upstream connect error or disconnect/reset before headers. reset reason: connection termination"
            }
            ForwardError::UpstreamTimeout(_) => "upstream request timeout",
            ForwardError::DownstreamAborted(_) => "downstream request aborted",
        };
        let mut resp = Response::new(Either::Right(Full::new(Bytes::from_static(
            body.as_bytes(),
        ))));
        *resp.status_mut() = self.status();
        if !body.is_empty() {
            resp.headers_mut().insert(
                header::CONTENT_TYPE,
                header::HeaderValue::from_static("text/plain"),
            );
        }
        resp
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_and_flags() {
        let cases = [
            (ForwardError::NoRoute, 404, "NR", Side::Internal),
            (
                ForwardError::NoHealthyUpstream("c".into()),
                503,
                "UH",
                Side::Internal,
            ),
            (
                ForwardError::ConnectFailed("x".into()),
                502,
                "UF",
                Side::Upstream,
            ),
            (
                ForwardError::UpstreamReset("x".into()),
                502,
                "UR",
                Side::Upstream,
            ),
            (
                ForwardError::UpstreamTimeout(Duration::from_secs(1)),
                504,
                "UT",
                Side::Upstream,
            ),
        ];
        for (e, status, flag, side) in cases {
            assert_eq!(e.status().as_u16(), status, "{e}");
            assert_eq!(e.flag(), flag, "{e}");
            assert_eq!(e.side(), side, "{e}");
            assert_eq!(e.response().status().as_u16(), status);
        }
        assert!(ForwardError::ConnectFailed("x".into()).retryable());
        assert!(!ForwardError::UpstreamReset("x".into()).retryable());
    }
}
