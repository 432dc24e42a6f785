//! The shop behind `trellis demo`: a `frontend`, two `catalog` versions and a gRPC `ratings`
//! service, plus a bounded load generator.
//!
//! The services are plain applications that know nothing of the mesh: each calls its upstreams at
//! the local addresses it is given (in the demo, its sidecar's outbound ports). This crate does
//! not start control planes or proxies, and it never picks ports: callers hand in bound listeners.

mod catalog;
mod error;
mod frontend;
mod http_server;
mod loadgen;
mod ratings;
mod shutdown;

pub use catalog::{Catalog, CatalogPage, Item, serve_catalog};
pub use error::DemoError;
pub use frontend::{FrontendPage, serve_frontend};
pub use loadgen::{LoadGen, LoadStats};
pub use ratings::client::RatingsClient;
pub use ratings::proto::{RateReply, RateRequest};
pub use ratings::{serve_ratings, stars_for};
pub use shutdown::{ShutdownSignal, ShutdownTrigger, shutdown_channel};
