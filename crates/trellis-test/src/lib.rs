//! Support for Trellis integration tests: backend servers (HTTP echo, raw HTTP recorder, gRPC
//! health, WebSocket, TCP), client helpers, polling assertions, temporary config dirs, a real
//! Prometheus to scrape metrics and an OTLP receiver for spans.
//!
//! Everything binds `127.0.0.1:0` and stops when its handle drops. [`TestMesh`] runs the real
//! control plane and sidecars in-process. This crate is never a dependency of production code.

mod child;
mod config_dir;
mod envoy;
mod eventually;
mod grpc_health;
mod http_client;
mod http_echo;
mod http_lines;
mod mesh;
mod otlp;
mod prometheus;
mod raw_recorder;
mod server;
mod tcp;
mod ws;

use std::time::Duration;

pub use config_dir::TempConfigDir;
pub use envoy::{Envoy, envoy_binary};
pub use eventually::{Deadline, POLL_INTERVAL, eventually};
pub use grpc_health::{
    GrpcHealthServer, HealthWatch, ServingStatus, grpc_check, grpc_watch, spawn_grpc_health,
};
pub use http_client::{
    HttpReply, http1_download, http1_get, http1_request, http2_get, post_streamed, raw_http1,
};
pub use http_echo::{
    EchoLog, EchoReply, Quirks, spawn_http_echo, spawn_quirky_http_echo, spawn_recording_http_echo,
};
pub use http_lines::{HttpLines, http1_lines};
pub use mesh::{Sidecar, TestMesh};
pub use otlp::{OtlpReceiver, ReceivedSpan};
pub use prometheus::{Prometheus, Sample};
pub use raw_recorder::{RawRecorder, spawn_raw_http_recorder};
pub use server::Server;
pub use tcp::{spawn_tcp_echo, spawn_tcp_greeter, tcp_roundtrip};
pub use ws::{spawn_ws_echo, ws_roundtrip};

/// Every client helper gives up after this long, so a broken proxy fails a test instead of
/// hanging it.
pub const CLIENT_TIMEOUT: Duration = Duration::from_secs(10);

/// Installs a `tracing` subscriber that writes through the test harness's capture, filtered by
/// `RUST_LOG` (default `info`). Safe to call from every test; only the first call installs.
pub fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    // Fails only when a subscriber is already installed, which is the expected case after the
    // first test.
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_test_writer()
        .try_init();
}

/// A loopback address free at the time of the call, for a server started as another process
/// (which binds it itself).
pub fn free_loopback_addr() -> std::io::Result<std::net::SocketAddr> {
    std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()
}
