//! End-to-end tests: the real control plane and sidecars with real apps on loopback.

mod authz;
mod balancing;
mod common;
mod config;
mod differential;
mod endpoints;
mod envoy;
mod faults;
mod grpc_xds;
mod metrics;
mod mtls;
mod nack;
mod protocols;
mod retries;
mod route_table;
mod routing;
mod stat;
mod tap;
mod tracing;
