//! The listener stage: accept loops for the pre-bound sockets and for LDS listeners bound on
//! demand, and per connection: wait for config, detect the protocol, pick the filter chain and
//! hand the connection to HTTP or TCP forwarding.

use std::collections::{BTreeSet, HashMap};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use futures_util::future::Either;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;
use tracing::Instrument;

use crate::authz::{Decision, Subject, authorize};
use crate::config::listener::{FilterChain, ListenerConfig, NetworkFilter};
use crate::detect::{self, Detected};
use crate::drain::DrainWatch;
use crate::http::{self, HttpConnection};
use crate::io::Rewind;
use crate::table::Shared;
use crate::tcp;
use crate::tls::connect::{self, Accepted};

/// How long a connection accepted before its listener is configured waits for config.
const CONFIG_WAIT: Duration = Duration::from_secs(10);

/// Accepts on `socket` until draining starts or `stop` fires (or its sender is dropped).
/// Connections are matched to the LDS listener for the socket's port.
pub(crate) fn spawn_accept(
    socket: TcpListener,
    shared: Arc<Shared>,
    mut drain: DrainWatch,
    stop: Option<oneshot::Receiver<()>>,
) {
    tokio::spawn(async move {
        let port = match socket.local_addr() {
            Ok(addr) => addr.port(),
            Err(e) => {
                tracing::warn!(error = %e, "listener socket has no local address");
                return;
            }
        };
        let stopped = async move {
            match stop {
                Some(rx) => {
                    let _ = rx.await;
                }
                None => std::future::pending().await,
            }
        };
        tokio::pin!(stopped);
        loop {
            tokio::select! {
                accepted = socket.accept() => match accepted {
                    Ok((stream, peer)) => {
                        let span = tracing::debug_span!(
                            "conn",
                            %peer,
                            port,
                            listener = tracing::field::Empty
                        );
                        let conn = connection(stream, peer, port, shared.clone(), drain.clone());
                        tokio::spawn(conn.instrument(span));
                    }
                    Err(e) => tracing::debug!(port, error = %e, "accept failed"),
                },
                () = drain.draining() => break,
                () = &mut stopped => break,
            }
        }
        tracing::debug!(port, "listener stopped accepting");
    });
}

/// Keeps the on-demand listeners in step with LDS: binds new addresses whose port is not one of
/// the pre-bound sockets, and stops accepting on removed ones (their connections finish).
pub(crate) fn spawn_reconciler(
    shared: Arc<Shared>,
    prebound: BTreeSet<u16>,
    mut drain: DrainWatch,
) {
    tokio::spawn(async move {
        let mut changes = shared.subscribe();
        let mut bound: HashMap<SocketAddr, oneshot::Sender<()>> = HashMap::new();
        loop {
            let wanted: BTreeSet<SocketAddr> = shared
                .table
                .load()
                .listeners
                .values()
                .map(|l| l.address)
                .filter(|a| !prebound.contains(&a.port()) && a.port() != 0)
                .collect();
            bound.retain(|addr, _| wanted.contains(addr));
            for addr in wanted {
                if bound.contains_key(&addr) {
                    continue;
                }
                match TcpListener::bind(addr).await {
                    Ok(socket) => {
                        let (tx, rx) = oneshot::channel();
                        spawn_accept(socket, shared.clone(), drain.clone(), Some(rx));
                        bound.insert(addr, tx);
                        tracing::info!(%addr, "listener bound");
                    }
                    Err(e) => tracing::warn!(%addr, error = %e, "cannot bind listener"),
                }
            }
            tokio::select! {
                changed = changes.changed() => if changed.is_err() { break },
                () = drain.draining() => break,
            }
        }
    });
}

/// The listener for `port`, waiting up to [`CONFIG_WAIT`] for it to be configured.
async fn listener_for(shared: &Shared, port: u16) -> Option<Arc<ListenerConfig>> {
    let mut changes = shared.subscribe();
    let found = tokio::time::timeout(CONFIG_WAIT, async {
        loop {
            if let Some(l) = shared.table.load().listener_for_port(port) {
                return Some(l.clone());
            }
            changes.changed().await.ok()?;
        }
    });
    found.await.ok().flatten()
}

async fn connection(
    mut stream: TcpStream,
    peer: SocketAddr,
    port: u16,
    shared: Arc<Shared>,
    drain: DrainWatch,
) {
    let _ = stream.set_nodelay(true);
    let mut closed = drain.clone();
    let prepared = tokio::select! {
        prepared = prepare(&mut stream, &shared, port) => prepared,
        () = closed.closed() => None,
    };
    let Some((listener, detected, prefix)) = prepared else {
        return;
    };
    let io = Rewind::new(prefix.freeze(), stream);
    if detected == Detected::Tls && listener.tls().is_some() {
        // Boxed: the handshake state is large and lives only until the handshake is done.
        let accepted = match Box::pin(connect::accept(&shared.identity, io)).await {
            Ok(accepted) => accepted,
            Err(e) => {
                // The reason names the failure: unknown issuer, expired, identity mismatch...
                tracing::info!(%peer, error = %e, "mTLS handshake refused");
                return;
            }
        };
        // Moved whole into the forwarding state before anything is awaited: this task keeps
        // no copy of the TLS stream.
        dispatch_tls(accepted, &listener, peer, shared, drain).await;
        return;
    }
    let Some(chain) = listener.select_chain(false, detected.protocol()) else {
        if listener.tls().is_some() {
            tracing::info!(%peer, "plaintext connection refused: this port requires mTLS (STRICT)");
        } else {
            tracing::debug!(?detected, "no filter chain matches; closing");
        }
        return;
    };
    tracing::debug!(chain = %chain.name, ?detected, "connection");
    let negotiated = Negotiated {
        peer_identity: None,
        protocol: detected.protocol(),
    };
    dispatch(io, &listener, chain, peer, negotiated, shared, drain).await;
}

/// [`dispatch`] for a connection that completed the mTLS handshake, on the chain its ALPN
/// selects.
fn dispatch_tls(
    accepted: Accepted<Rewind<TcpStream>>,
    listener: &ListenerConfig,
    peer: SocketAddr,
    shared: Arc<Shared>,
    drain: DrainWatch,
) -> impl Future<Output = ()> + Send + 'static {
    let Some(chain) = listener.select_chain(true, accepted.alpn) else {
        tracing::debug!(alpn = ?accepted.alpn, "no TLS filter chain matches; closing");
        return Either::Left(std::future::ready(()));
    };
    tracing::debug!(chain = %chain.name, peer_identity = ?accepted.peer, "mTLS connection");
    let forwarding = dispatch(
        accepted.stream,
        listener,
        chain,
        peer,
        Negotiated {
            peer_identity: accepted.peer,
            protocol: accepted.alpn,
        },
        shared,
        drain,
    );
    Either::Right(forwarding)
}

/// What a connection's TLS handshake or protocol detection settled.
struct Negotiated {
    /// The client's verified SPIFFE ID (mTLS); `None` for plaintext.
    peer_identity: Option<Arc<str>>,
    /// The application protocol: the ALPN of a TLS connection, or what detection saw.
    protocol: Option<&'static str>,
}

/// Hands a connection to the chain's network filter: the forwarding to await (which ends at
/// once when authorization refuses the connection). Not itself async, so the connection's task
/// holds no copy of `io` (a TLS stream is over a kilobyte) while it is forwarded.
fn dispatch<I>(
    io: I,
    listener: &ListenerConfig,
    chain: &FilterChain,
    peer: SocketAddr,
    negotiated: Negotiated,
    shared: Arc<Shared>,
    drain: DrainWatch,
) -> impl Future<Output = ()> + Send + 'static
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let Negotiated {
        peer_identity,
        protocol,
    } = negotiated;
    let subject = Subject {
        peer: peer_identity.as_deref(),
        request: None,
    };
    if let Decision::Deny(policy) = authorize(&chain.authz, subject) {
        shared.metrics.authz_denied(listener.direction, "tcp");
        tracing::info!(%peer, peer_identity = ?peer_identity, ?policy, "connection denied by authorization policy");
        return Either::Left(std::future::ready(()));
    }
    Either::Right(match &chain.filter {
        NetworkFilter::Http(config) => {
            let conn = HttpConnection {
                shared,
                config: config.clone(),
                direction: listener.direction,
                peer,
                peer_identity,
                drain,
            };
            Either::Left(http::serve(io, conn, protocol))
        }
        NetworkFilter::Tcp(config) => {
            let config = config.clone();
            Either::Right(Box::pin(async move {
                tcp::proxy(io, &config, &shared, peer, drain).await;
            }))
        }
    })
}

/// The listener for the connection and, if it inspects, the detected protocol with the bytes
/// read doing so; `None` when the connection should be closed.
async fn prepare(
    stream: &mut TcpStream,
    shared: &Shared,
    port: u16,
) -> Option<(Arc<ListenerConfig>, Detected, BytesMut)> {
    let Some(listener) = listener_for(shared, port).await else {
        tracing::debug!("no listener configured for this port; closing");
        return None;
    };
    tracing::Span::current().record("listener", listener.name.as_str());
    let Some(detection) = listener.detect else {
        return Some((listener, Detected::Other, BytesMut::new()));
    };
    match detect::detect(stream, detection.timeout).await {
        Ok((Detected::TimedOut, _)) if !detection.continue_on_timeout => {
            tracing::debug!("protocol detection timed out; closing");
            None
        }
        Ok((detected, prefix)) => Some((listener, detected, prefix)),
        Err(e) => {
            tracing::debug!(error = %e, "connection failed during protocol detection");
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::drain::Drain;
    use crate::telemetry::{LocalWorkload, Metrics};

    /// Every open connection holds its task for its whole life, so the task stays small: the
    /// large states (TLS handshakes, the HTTP connection, TCP forwarding) live in boxes that
    /// exist only while they are in use.
    #[tokio::test]
    async fn a_connection_task_is_small() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stream, _) = tokio::join!(TcpStream::connect(addr), listener.accept());
        let shared = Arc::new(Shared::new(Metrics::new(
            LocalWorkload::default(),
            None,
            None,
        )));
        let (_drain, watch) = Drain::new();
        let task = connection(stream.unwrap(), addr, addr.port(), shared, watch);
        let size = std::mem::size_of_val(&task);
        assert!(size <= 1024, "a connection's task takes {size} bytes");
    }
}
