//! Reads a connected proxy's admin server, at the address the proxy advertised in its node
//! metadata: one HTTP/1.1 `GET` on a fresh connection, bounded in time and size.

use std::time::Duration;

use axum::body::Bytes;
use http_body_util::{BodyExt, Empty, Limited};
use hyper::Request;
use hyper::header::HOST;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

/// How long a proxy has to answer, connection included. Its admin server answers from memory,
/// so a slower proxy is stuck or gone; the caller should not wait on it.
pub(crate) const TIMEOUT: Duration = Duration::from_secs(1);

/// The largest answer read. A config dump of thousands of clusters is a few MiB.
const MAX_BODY: usize = 64 << 20;

/// Why a proxy's admin server could not be read.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ProxyAdminError {
    /// The proxy's node metadata carries no admin address.
    #[error(
        "it advertised no admin address in its node metadata (Trellis proxies do, other xDS \
         clients do not), so its admin server cannot be read"
    )]
    NoAddress,
    /// The TCP connection failed.
    #[error("connecting to its admin server at {addr}: {source}")]
    Connect {
        /// The advertised admin address.
        addr: String,
        /// The OS error.
        source: std::io::Error,
    },
    /// No complete answer within [`TIMEOUT`].
    #[error("its admin server at {addr} did not answer within {TIMEOUT:?}")]
    Timeout {
        /// The advertised admin address.
        addr: String,
    },
    /// The HTTP exchange failed (reset, malformed answer, body too large).
    #[error("reading {path} from its admin server at {addr}: {reason}")]
    Http {
        /// The advertised admin address.
        addr: String,
        /// The path asked for.
        path: String,
        /// What went wrong.
        reason: String,
    },
    /// The admin server answered with an error status.
    #[error("its admin server at {addr} answered {path} with {status}: {body}")]
    Status {
        /// The advertised admin address.
        addr: String,
        /// The path asked for.
        path: String,
        /// The status it answered with.
        status: hyper::StatusCode,
        /// The start of its answer.
        body: String,
    },
}

/// `GET path` from the admin server at `addr` (the proxy's advertised `NodeMeta.admin`);
/// returns the body of a 2xx answer.
pub(crate) async fn get(addr: Option<&str>, path: &str) -> Result<Bytes, ProxyAdminError> {
    let addr = addr.ok_or(ProxyAdminError::NoAddress)?;
    tokio::time::timeout(TIMEOUT, fetch(addr, path))
        .await
        .unwrap_or_else(|_| {
            Err(ProxyAdminError::Timeout {
                addr: addr.to_owned(),
            })
        })
}

async fn fetch(addr: &str, path: &str) -> Result<Bytes, ProxyAdminError> {
    let http = |reason: String| ProxyAdminError::Http {
        addr: addr.to_owned(),
        path: path.to_owned(),
        reason,
    };
    let stream = TcpStream::connect(addr)
        .await
        .map_err(|source| ProxyAdminError::Connect {
            addr: addr.to_owned(),
            source,
        })?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| http(e.to_string()))?;
    // The connection ends with the exchange (the request asks to close it); the timeout bounds
    // it in case the proxy stalls after the caller gave up.
    tokio::spawn(tokio::time::timeout(TIMEOUT, conn));
    let request = Request::get(path)
        .header(HOST, addr)
        .header(hyper::header::CONNECTION, "close")
        .body(Empty::<Bytes>::new())
        .map_err(|e| http(e.to_string()))?;
    let response = sender
        .send_request(request)
        .await
        .map_err(|e| http(e.to_string()))?;
    let status = response.status();
    let body = Limited::new(response.into_body(), MAX_BODY)
        .collect()
        .await
        .map_err(|e| http(e.to_string()))?
        .to_bytes();
    if !status.is_success() {
        let text = String::from_utf8_lossy(&body);
        return Err(ProxyAdminError::Status {
            addr: addr.to_owned(),
            path: path.to_owned(),
            status,
            body: text.trim().chars().take(200).collect(),
        });
    }
    Ok(body)
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    use super::*;

    /// An admin server that answers every connection with `response`, or never with `None`.
    async fn server(response: Option<&'static str>) -> String {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        tokio::spawn(async move {
            loop {
                let (mut stream, _) = listener.accept().await.unwrap();
                tokio::spawn(async move {
                    let mut buf = [0; 1024];
                    let _ = stream.read(&mut buf).await;
                    match response {
                        Some(r) => stream.write_all(r.as_bytes()).await.unwrap(),
                        None => std::future::pending().await,
                    }
                });
            }
        });
        addr
    }

    #[tokio::test]
    async fn reads_the_body_of_a_success() {
        let addr = server(Some(
            "HTTP/1.1 200 OK\r\ncontent-length: 11\r\nconnection: close\r\n\r\n{\"a\": true}",
        ))
        .await;
        let body = get(Some(&addr), "/config_dump").await.unwrap();
        assert_eq!(body, "{\"a\": true}");
    }

    #[tokio::test]
    async fn an_error_status_names_path_and_status() {
        let addr = server(Some(
            "HTTP/1.1 404 Not Found\r\ncontent-length: 5\r\nconnection: close\r\n\r\nnope\n",
        ))
        .await;
        let err = get(Some(&addr), "/config_dump").await.unwrap_err();
        assert_eq!(
            err.to_string(),
            format!("its admin server at {addr} answered /config_dump with 404 Not Found: nope")
        );
    }

    #[tokio::test]
    async fn a_silent_server_times_out() {
        let addr = server(None).await;
        let err = get(Some(&addr), "/config_dump").await.unwrap_err();
        assert!(matches!(err, ProxyAdminError::Timeout { .. }), "{err:?}");
    }
}
