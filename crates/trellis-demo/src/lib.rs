//! The shop behind `trellis demo`: a `frontend`, two `catalog` versions and a gRPC `ratings`
//! service, plus a bounded load generator.
//!
//! The services are plain applications that know nothing of the mesh: each calls its upstreams at
//! the local addresses it is given (in the demo, its sidecar's outbound ports). The demo runner
//! (`run_demo`) starts an embedded control plane and a sidecar per service on loopback ports
//! it binds itself; the services take already-bound listeners.

mod catalog;
mod error;
mod frontend;
mod http_server;
mod live;
mod loadgen;
mod mesh;
mod ratings;
mod shutdown;

pub use catalog::{Catalog, CatalogPage, Item, serve_catalog};
pub use error::DemoError;
pub use frontend::{FrontendPage, serve_frontend};
pub use live::{DemoOptions, DemoSummary, run_demo};
pub use loadgen::{LoadGen, LoadStats};
pub use mesh::{DemoMesh, MESH_YAML, Workload};
pub use ratings::client::RatingsClient;
pub use ratings::proto::{RateReply, RateRequest};
pub use ratings::{serve_ratings, stars_for};
pub use shutdown::{ShutdownSignal, ShutdownTrigger, shutdown_channel};
