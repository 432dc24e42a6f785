//! End-to-end tests of trellis-proxy: xDS resources built in code and applied through the
//! proxy's config handler (no control plane), real backends and clients on 127.0.0.1.

mod backend;
mod client;
mod xds;

mod compile;
mod endpoints;
mod h2;
mod http1;
mod listeners;
mod streaming;
mod tcp;
mod upgrade;

use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use trellis_proxy::{ProxyHandle, ProxyOptions};

/// Upper bound for any single step of a test.
pub(crate) const STEP: Duration = Duration::from_secs(10);

/// An address nobody listens on (unlike a port freed by a dropped listener, which another test
/// could take again).
pub(crate) const NOBODY: &str = "127.0.0.1:1";

/// Starts a proxy with an outbound listener per name in `upstreams` and an HTTP-proxy listener,
/// all on ephemeral ports, pointed at a control plane that is not there (config comes from the
/// test through [`ProxyHandle::config_handler`]).
pub(crate) async fn start_proxy(upstreams: &[&str]) -> ProxyHandle {
    let any_port: SocketAddr = "127.0.0.1:0".parse().unwrap();
    let opts = ProxyOptions {
        control_plane: format!("http://{NOBODY}"),
        node_id: Some("test-node".into()),
        service: "test".into(),
        app_port: 1,
        upstreams: upstreams
            .iter()
            .map(|s| ((*s).to_owned(), any_port))
            .collect(),
        http_proxy: Some(any_port),
        admin: any_port,
        ..ProxyOptions::default()
    };
    trellis_proxy::start(opts).await.unwrap()
}

/// Runs `fut` with the [`STEP`] timeout, panicking with `what` if it does not finish.
pub(crate) async fn step<T>(what: &str, fut: impl Future<Output = T>) -> T {
    match tokio::time::timeout(STEP, fut).await {
        Ok(v) => v,
        Err(_) => panic!("{what}: timed out after {STEP:?}"),
    }
}

/// Polls `check` every 10 ms until it returns true, failing after [`STEP`].
pub(crate) async fn eventually<F: AsyncFnMut() -> bool>(what: &str, mut check: F) {
    let deadline = tokio::time::Instant::now() + STEP;
    while !check().await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{what}: not true after {STEP:?}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}
