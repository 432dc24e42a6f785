//! xDS v3 plumbing shared by the control plane and the proxy: resource type URLs, the node
//! metadata a Trellis proxy presents, snapshots, and the ADS server and client (state of the
//! world: versions, nonces, ACK/NACK, resubscribe with backoff), and the certificate-signing
//! protocol between proxies and the CA; the bootstrap that points a stock Envoy at the control
//! plane, and the SDS server a local agent hands that Envoy its certificate with.
//!
//! This crate knows nothing about routing semantics: it moves opaque `Any` resources.

pub mod bootstrap;
pub mod ca;
pub mod client;
pub mod node;
pub mod sds;
pub mod server;
pub mod snapshot;
pub mod types;

pub use envoy_types::pb;
pub use snapshot::Snapshot;
pub use types::TypeUrl;
