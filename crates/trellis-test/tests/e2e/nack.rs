//! A proxy NACKs xDS it cannot apply, with a precise message the control plane shows.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio_stream::wrappers::TcpListenerStream;
use trellis_control::ControlPlane;
use trellis_proxy::ProxyOptions;
use trellis_test::assert_eventually;
use trellis_xds::pb::envoy::config::core::v3::{
    Address, Node, SocketAddress, address, socket_address,
};
use trellis_xds::pb::envoy::config::listener::v3::{Filter, FilterChain, Listener};
use trellis_xds::server::{AdsServer, Hooks, SnapshotWatch, StreamId};
use trellis_xds::{Snapshot, TypeUrl};

/// The real control plane's registry, but every proxy is served a scripted snapshot.
struct Scripted {
    control: Arc<ControlPlane>,
    snapshot: watch::Sender<Option<Arc<Snapshot>>>,
}

impl Hooks for Scripted {
    fn connect(&self, stream: StreamId, node: &Node) -> Result<SnapshotWatch, tonic::Status> {
        self.control.connect(stream, node)?;
        Ok(self.snapshot.subscribe())
    }
    fn ack(&self, stream: StreamId, type_url: TypeUrl, version: &str) {
        self.control.ack(stream, type_url, version);
    }
    fn nack(&self, stream: StreamId, type_url: TypeUrl, version: &str, error: &str) {
        self.control.nack(stream, type_url, version, error);
    }
    fn disconnect(&self, stream: StreamId) {
        self.control.disconnect(stream);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unsupported_xds_is_nacked_and_shown_by_the_control_plane() {
    let mut snapshot = Snapshot::builder();
    let listener = Listener {
        name: "inbound".to_owned(),
        address: Some(Address {
            address: Some(address::Address::SocketAddress(SocketAddress {
                address: "127.0.0.1".to_owned(),
                port_specifier: Some(socket_address::PortSpecifier::PortValue(0)),
                ..SocketAddress::default()
            })),
        }),
        filter_chains: vec![FilterChain {
            filters: vec![Filter {
                name: "envoy.filters.network.redis_proxy".to_owned(),
                config_type: None,
            }],
            ..FilterChain::default()
        }],
        ..Listener::default()
    };
    snapshot.insert(TypeUrl::Listener, "inbound", &listener);
    let (tx, _) = watch::channel(Some(Arc::new(snapshot.seal())));
    let control = Arc::new(ControlPlane::new());
    let (ads, _stop) = AdsServer::new(Arc::new(Scripted {
        control: control.clone(),
        snapshot: tx,
    }));
    let socket = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let xds = socket.local_addr().unwrap();
    let server = tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(ads.into_service())
            .serve_with_incoming(TcpListenerStream::new(socket)),
    );

    let any = "127.0.0.1:0".parse().unwrap();
    let proxy = trellis_proxy::start(ProxyOptions {
        control_plane: format!("http://{xds}"),
        node_id: Some("web-1".to_owned()),
        service: "web".to_owned(),
        app_port: 9,
        admin: any,
        ..ProxyOptions::default()
    })
    .await
    .unwrap();

    assert_eventually!(
        Duration::from_secs(5),
        control.proxies().first().is_some_and(|p| p
            .last_nack
            .as_ref()
            .is_some_and(|n| n.type_url == "lds" && n.error.contains("redis_proxy"))),
        "no NACK naming the unsupported filter: {:?}",
        control.proxies()
    );
    proxy.shutdown().await;
    server.abort();
}
