//! Workload identity: SPIFFE IDs (`spiffe://<trust-domain>/ns/<ns>/sa/<sa>`), the certificate
//! authority that signs X.509 SVIDs and rotates its roots, the workload side (key, CSR, SVID,
//! trust bundle), and rustls configs that verify SPIFFE identities.
//!
//! This crate does no network I/O; it reads and writes only the files it is given.

pub mod ca;
mod spiffe;
#[cfg(test)]
mod testutil;
pub mod tls;
pub mod workload;
mod x509;

pub use spiffe::{SpiffeId, SpiffeIdError};
pub use x509::CertError;
