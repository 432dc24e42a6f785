//! TCP forwarding (`tcp_proxy`): picks a cluster and endpoint, connects within the cluster's
//! connect timeout, and copies bytes both ways, passing half-closes through.

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;

use crate::config::tcp::TcpConfig;
use crate::drain::DrainWatch;
use crate::table::Shared;
use crate::tls::Alpn;
use crate::tls::connect;

/// Proxies `downstream` to an endpoint of the filter's cluster until both sides close or the
/// proxy closes. A connection that cannot be forwarded is closed.
pub(crate) async fn proxy<I>(
    mut downstream: I,
    config: &TcpConfig,
    shared: &Shared,
    peer: SocketAddr,
    mut drain: DrainWatch,
) where
    I: AsyncRead + AsyncWrite + Unpin,
{
    let target = config.clusters.pick();
    let _open = target.stats.open();
    let table = shared.table.load_full();
    let Some(cluster) = table.clusters.get(&target.cluster).map(Arc::clone) else {
        tracing::debug!(cluster = %target.cluster, %peer, flag = "NC", "tcp: cluster not found");
        return;
    };
    // The connection only needs the cluster; let a config update free the rest of the table.
    drop(table);
    let Some(in_flight) = cluster.endpoints.pick(None) else {
        tracing::debug!(cluster = %target.cluster, %peer, flag = "UH", "tcp: no healthy upstream");
        return;
    };
    let addr = in_flight.endpoint().addr;
    let connect = tokio::time::timeout(cluster.config.connect_timeout, TcpStream::connect(addr));
    let mut upstream = match connect.await {
        Ok(Ok(stream)) => stream,
        Ok(Err(e)) => {
            in_flight.failed();
            tracing::debug!(%addr, %peer, error = %e, flag = "UF", "tcp: connect failed");
            return;
        }
        Err(_) => {
            in_flight.failed();
            tracing::debug!(%addr, %peer, flag = "UF", "tcp: connect timed out");
            return;
        }
    };
    in_flight.succeeded();
    let _ = upstream.set_nodelay(true);
    let Some(tls) = in_flight.tls() else {
        let mut upstream = target.stats.upstream(&mut upstream);
        let mut downstream = target.stats.downstream(&mut downstream);
        splice(&mut downstream, &mut upstream, addr, peer, &mut drain).await;
        return;
    };
    match connect::connect(&shared.identity, tls, Alpn::Opaque, upstream, addr).await {
        Ok(mut secure) => {
            let mut upstream = target.stats.upstream(&mut secure);
            let mut downstream = target.stats.downstream(&mut downstream);
            splice(&mut downstream, &mut upstream, addr, peer, &mut drain).await;
        }
        Err(e) => {
            in_flight.failed();
            tracing::info!(%addr, %peer, error = %e, flag = "UF", "tcp: mTLS handshake failed");
        }
    }
}

/// Copies both ways until either side closes or shutdown ends the connection.
async fn splice<D, U>(
    downstream: &mut D,
    upstream: &mut U,
    addr: SocketAddr,
    peer: SocketAddr,
    drain: &mut DrainWatch,
) where
    D: AsyncRead + AsyncWrite + Unpin,
    U: AsyncRead + AsyncWrite + Unpin,
{
    tokio::select! {
        result = tokio::io::copy_bidirectional(downstream, upstream) => match result {
            Ok((sent, received)) => {
                tracing::debug!(%addr, %peer, sent, received, "tcp connection closed");
            }
            Err(e) => tracing::debug!(%addr, %peer, error = %e, "tcp connection failed"),
        },
        () = drain.closed() => tracing::debug!(%addr, %peer, "tcp connection closed by shutdown"),
    }
}
