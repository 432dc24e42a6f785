//! mTLS on the wire: accepting on inbound chains (and reading the peer's SPIFFE ID), and
//! connecting to sidecar endpoints for HTTP (a hyper connector) and TCP, verifying that the
//! server is one of the identities the control plane expects.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use http::Uri;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioIo;
use rustls::pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::{TlsAcceptor, TlsConnector};
use trellis_identity::tls::peer_identity;

use super::{Alpn, IdentityState};
use crate::config::tls::UpstreamTls;
use crate::detect;

/// A terminated inbound mTLS connection.
pub(crate) struct Accepted<IO> {
    /// The decrypted stream.
    pub(crate) stream: tokio_rustls::server::TlsStream<IO>,
    /// The client's verified SPIFFE ID.
    pub(crate) peer: Option<Arc<str>>,
    /// The negotiated ALPN protocol (`h2`, `http/1.1`), if any.
    pub(crate) alpn: Option<&'static str>,
}

/// Completes the server side of an mTLS handshake on `io`.
pub(crate) async fn accept<IO>(identity: &IdentityState, io: IO) -> io::Result<Accepted<IO>>
where
    IO: AsyncRead + AsyncWrite + Unpin,
{
    let current = identity
        .current()
        .ok_or_else(|| io::Error::other("no workload certificate yet"))?;
    let stream = TlsAcceptor::from(current.server())
        .accept(io)
        .await
        .map_err(|e| identity.handshake_failed("server", e))?;
    let (_, session) = stream.get_ref();
    let peer = session
        .peer_certificates()
        .and_then(peer_identity)
        .map(|id| Arc::from(id.to_string()));
    let alpn = match session.alpn_protocol() {
        Some(b"h2") => Some(detect::H2),
        Some(b"http/1.1") => Some(detect::HTTP1),
        _ => None,
    };
    Ok(Accepted { stream, peer, alpn })
}

/// Connects to `addr` with mTLS, expecting one of `tls.expected` as the server.
pub(crate) async fn connect(
    identity: &IdentityState,
    tls: &UpstreamTls,
    alpn: Alpn,
    tcp: TcpStream,
    addr: SocketAddr,
) -> io::Result<tokio_rustls::client::TlsStream<TcpStream>> {
    let current = identity
        .current()
        .ok_or_else(|| io::Error::other("no workload certificate yet"))?;
    let config = current
        .client(&tls.expected, alpn)
        .map_err(io::Error::other)?;
    TlsConnector::from(config)
        .connect(ServerName::IpAddress(addr.ip().into()), tcp)
        .await
        .map_err(|e| identity.handshake_failed("client", e))
}

/// An upstream mTLS connection, as hyper's client uses it.
pub(crate) struct MeshTls(tokio_rustls::client::TlsStream<TcpStream>);

impl AsyncRead for MeshTls {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

impl AsyncWrite for MeshTls {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.0).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_shutdown(cx)
    }
}

/// A hyper connector that speaks mTLS to the endpoints of one cluster.
#[derive(Clone)]
pub(crate) struct MeshConnector {
    pub(crate) http: HttpConnector,
    pub(crate) tls: Arc<UpstreamTls>,
    pub(crate) identity: Arc<IdentityState>,
    pub(crate) alpn: Alpn,
}

impl tower_service::Service<Uri> for MeshConnector {
    type Response = TokioIo<MeshTls>;
    type Error = io::Error;
    type Future = Pin<Box<dyn Future<Output = io::Result<TokioIo<MeshTls>>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.http.poll_ready(cx).map_err(io::Error::other)
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        let connecting = self.http.call(uri);
        let (tls, identity, alpn) = (self.tls.clone(), self.identity.clone(), self.alpn);
        Box::pin(async move {
            let tcp = connecting.await.map_err(io::Error::other)?.into_inner();
            let addr = tcp.peer_addr()?;
            let stream = connect(&identity, &tls, alpn, tcp, addr).await?;
            Ok(TokioIo::new(MeshTls(stream)))
        })
    }
}
