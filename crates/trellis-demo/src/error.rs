//! The error type returned by the demo services' entry points.

/// Why a demo service could not start or keep serving.
#[derive(Debug, thiserror::Error)]
pub enum DemoError {
    /// The gRPC transport failed (ratings server or the frontend's ratings channel).
    #[error("grpc transport error: {0}; check that the address is reachable and speaks h2c")]
    Grpc(#[from] tonic::transport::Error),
    /// A load generator's target and path do not form a valid URI.
    #[error("invalid load generator URI: {0}; the path must start with '/'")]
    InvalidUri(#[from] http::uri::InvalidUri),
}
