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
    /// The embedded control plane could not start.
    #[error("starting the control plane: {0}")]
    Control(#[from] trellis_control::StartError),
    /// A sidecar could not start.
    #[error("starting a sidecar: {0}")]
    Proxy(#[from] trellis_proxy::ProxyError),
    /// The embedded mesh config is invalid (a bug in this repository).
    #[error("the demo's mesh config is invalid:\n{0}")]
    Config(#[from] trellis_api::ConfigErrors),
    /// Binding a listener or writing the output failed.
    #[error("{0}")]
    Io(#[from] std::io::Error),
    /// A sidecar did not receive its config in time.
    #[error("sidecar of {0} not ready after {1:?}: is the control plane reachable?")]
    NotReady(String, std::time::Duration),
    /// Some sidecar had not applied the config that knows every workload in time.
    #[error("sidecars did not all apply the mesh's config within {0:?}")]
    NotSynced(std::time::Duration),
}
