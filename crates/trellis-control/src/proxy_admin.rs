//! Reads a connected proxy's admin server, at the address the proxy advertised in its node
//! metadata: one HTTP/1.1 `GET` on a fresh connection, bounded in time and size, or a stream
//! of lines (`/tap`) that lives until the reader drops it.

use std::time::Duration;

use axum::body::Bytes;
use http_body_util::{BodyExt, Empty, Limited};
use hyper::body::Incoming;
use hyper::header::HOST;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio::task::JoinHandle;

/// How long a proxy has to answer, connection included. Its admin server answers from memory,
/// so a slower proxy is stuck or gone; the caller should not wait on it.
pub(crate) const TIMEOUT: Duration = Duration::from_secs(1);

/// The largest answer read. A config dump of thousands of clusters is a few MiB.
const MAX_BODY: usize = 64 << 20;

/// The longest line of a stream. A tap event is a few hundred bytes plus its path and user
/// agent, which the proxy's header limits bound well below this.
const MAX_LINE: usize = 1 << 20;

/// How much of an error answer is read for the message.
const MAX_ERROR_BODY: usize = 4096;

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
    let fetch = async {
        let (response, conn) = send(addr, path).await?;
        // The connection ends with the exchange (the request asks to close it); aborting it
        // afterwards only matters when the proxy stalls after the caller gave up.
        let _conn = conn;
        let body = Limited::new(response.into_body(), MAX_BODY)
            .collect()
            .await
            .map_err(|e| http_error(addr, path, e.to_string()))?
            .to_bytes();
        Ok(body)
    };
    tokio::time::timeout(TIMEOUT, fetch)
        .await
        .unwrap_or_else(|_| Err(timeout(addr)))
}

/// `GET path` from the admin server at `addr` as a stream of lines, once a 2xx answer's head
/// arrived within [`TIMEOUT`]. The stream has no time limit; dropping it closes the connection.
pub(crate) async fn get_lines(addr: Option<&str>, path: &str) -> Result<Lines, ProxyAdminError> {
    let addr = addr.ok_or(ProxyAdminError::NoAddress)?;
    let (response, conn) = tokio::time::timeout(TIMEOUT, send(addr, path))
        .await
        .unwrap_or_else(|_| Err(timeout(addr)))?;
    Ok(Lines {
        addr: addr.to_owned(),
        path: path.to_owned(),
        body: response.into_body(),
        buf: Vec::new(),
        _conn: conn,
    })
}

/// The lines of a streamed answer, read as they arrive.
#[derive(Debug)]
pub(crate) struct Lines {
    addr: String,
    path: String,
    body: Incoming,
    /// Bytes after the last complete line.
    buf: Vec<u8>,
    /// Dropping the lines closes the connection, so a proxy's stream ends with its reader.
    _conn: Conn,
}

impl Lines {
    /// The next line without its `\n`; `None` when the answer ended (a last line without a
    /// newline is dropped: the proxy was cut off while writing it).
    pub(crate) async fn next(&mut self) -> Result<Option<Bytes>, ProxyAdminError> {
        let mut scanned = 0;
        loop {
            if let Some(end) = self.buf[scanned..].iter().position(|b| *b == b'\n') {
                let mut line: Vec<u8> = self.buf.drain(..=scanned + end).collect();
                line.pop();
                return Ok(Some(Bytes::from(line)));
            }
            scanned = self.buf.len();
            if scanned > MAX_LINE {
                return Err(self.error(format!("a line longer than {MAX_LINE} bytes")));
            }
            let Some(frame) = self.body.frame().await else {
                return Ok(None);
            };
            let frame = frame.map_err(|e| self.error(e.to_string()))?;
            if let Ok(data) = frame.into_data() {
                self.buf.extend_from_slice(&data);
            }
        }
    }

    fn error(&self, reason: String) -> ProxyAdminError {
        http_error(&self.addr, &self.path, reason)
    }
}

/// The task driving a connection, aborted (closing the socket) on drop.
#[derive(Debug)]
struct Conn(JoinHandle<()>);

impl Drop for Conn {
    fn drop(&mut self) {
        self.0.abort();
    }
}

fn timeout(addr: &str) -> ProxyAdminError {
    ProxyAdminError::Timeout {
        addr: addr.to_owned(),
    }
}

fn http_error(addr: &str, path: &str, reason: String) -> ProxyAdminError {
    ProxyAdminError::Http {
        addr: addr.to_owned(),
        path: path.to_owned(),
        reason,
    }
}

/// Connects, sends `GET path` and waits for the head of a 2xx answer (an error answer's body
/// is read for the message). The caller bounds it in time.
async fn send(addr: &str, path: &str) -> Result<(Response<Incoming>, Conn), ProxyAdminError> {
    let http = |reason: String| http_error(addr, path, reason);
    let stream = TcpStream::connect(addr)
        .await
        .map_err(|source| ProxyAdminError::Connect {
            addr: addr.to_owned(),
            source,
        })?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| http(e.to_string()))?;
    let conn = Conn(tokio::spawn(async move {
        let _ = conn.await;
    }));
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
    if !status.is_success() {
        let mut body = response.into_body();
        let mut start = Vec::new();
        while start.len() < MAX_ERROR_BODY {
            match body.frame().await {
                Some(Ok(frame)) => start.extend_from_slice(frame.data_ref().map_or(&[][..], |d| d)),
                _ => break,
            }
        }
        let text = String::from_utf8_lossy(&start);
        return Err(ProxyAdminError::Status {
            addr: addr.to_owned(),
            path: path.to_owned(),
            status,
            body: text.trim().chars().take(200).collect(),
        });
    }
    Ok((response, conn))
}

/// Percent-encodes all but RFC 3986's unreserved characters, for a query value or a path
/// segment of a request to a proxy's admin server or to the control plane's API.
pub fn percent_encode(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for byte in value.bytes() {
        if byte.is_ascii_alphanumeric() || b"-._~".contains(&byte) {
            out.push(char::from(byte));
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests;
