//! Workload identity: SPIFFE IDs (`spiffe://<trust-domain>/ns/<ns>/sa/<sa>`).
//!
//! Certificates, the CA and rotation arrive with mTLS; this crate does no network I/O.

mod spiffe;

pub use spiffe::{SpiffeId, SpiffeIdError};
