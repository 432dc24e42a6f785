//! One module per subcommand.

mod api;
pub(crate) mod check;
pub(crate) mod control;
pub(crate) mod demo;
pub(crate) mod envoy_bootstrap;
pub(crate) mod grpc_bootstrap;
pub(crate) mod identity;
pub(crate) mod proxy_config;
pub(crate) mod routes;
pub(crate) mod run;
pub(crate) mod stat;
mod table;
pub(crate) mod tap;
pub(crate) mod top;
