//! trellis-proxy: the Trellis sidecar data plane. It subscribes to the control plane over ADS
//! (xDS v3, state of the world), compiles Listener, RouteConfiguration, Cluster and
//! ClusterLoadAssignment resources into an immutable table swapped atomically, and forwards
//! HTTP/1.1 (keep-alive, chunked, upgrades), HTTP/2 and gRPC over h2c, and raw TCP through the
//! stages listener → detect → route → cluster → endpoint. It serves `/ready`, `/metrics` and
//! `/config_dump` on an admin port.
//!
//! It does not do TLS/mTLS, authorization, retries, circuit breaking or outlier detection yet:
//! resources asking for them are NACKed with a message naming the field.

mod admin;
mod authz;
mod balance;
mod config;
mod detect;
mod drain;
mod dump;
mod error;
mod handler;
mod health;
mod http;
mod io;
mod listener;
mod options;
mod proxy;
mod sds_agent;
mod table;
mod tcp;
mod telemetry;
mod tls;

pub use handler::ConfigHandler;
pub use options::ProxyOptions;
pub use proxy::{ProxyError, ProxyHandle, start};
pub use sds_agent::{SdsAgentHandle, SdsAgentOptions, start_sds_agent};
pub use telemetry::{
    AccessLogFormat, Direction, RequestEvent, RouteStats, StatusClass, TracingOptions,
};
pub use trellis_xds::TypeUrl;
