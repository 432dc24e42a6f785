//! The detect stage (Envoy's `http_inspector` and `tls_inspector`): reads the first bytes of a
//! connection, within a timeout, to tell a TLS ClientHello, an h2c preface or an HTTP/1 request
//! line from anything else. The bytes read
//! are handed back to be replayed.

use std::io;
use std::time::Duration;

use bytes::BytesMut;
use tokio::io::{AsyncRead, AsyncReadExt};

/// The HTTP/2 connection preface.
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
/// Longest method token considered.
const MAX_METHOD: usize = 24;
/// Request-line bytes read before giving HTTP/1 the benefit of the doubt.
const MAX_LINE: usize = 8192;

/// Application protocol name for HTTP/1.x, as in `filter_chain_match.application_protocols`.
pub(crate) const HTTP1: &str = "http/1.1";
/// Application protocol name for cleartext HTTP/2.
pub(crate) const H2C: &str = "h2c";
/// Application protocol name for HTTP/2 over TLS, as ALPN names it.
pub(crate) const H2: &str = "h2";

/// What detection concluded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Detected {
    /// An HTTP protocol: [`HTTP1`] or [`H2C`].
    Protocol(&'static str),
    /// A TLS ClientHello (Envoy's `tls_inspector`): a handshake record of TLS 1.x.
    Tls,
    /// The client sent something else, or closed.
    Other,
    /// The client sent nothing conclusive in time (e.g. a server-speaks-first protocol).
    TimedOut,
}

impl Detected {
    /// The application protocol, if one was detected.
    pub(crate) fn protocol(self) -> Option<&'static str> {
        match self {
            Detected::Protocol(p) => Some(p),
            Detected::Tls | Detected::Other | Detected::TimedOut => None,
        }
    }
}

#[derive(Debug, PartialEq, Eq)]
enum Verdict {
    Tls,
    H2c,
    Http1,
    NotHttp,
    /// Not decided yet; `true` if a method token and space were seen.
    NeedMore(bool),
}

/// Reads from `io` until the protocol is known, EOF, or `timeout` passes. Returns the verdict
/// and every byte read.
pub(crate) async fn detect<T: AsyncRead + Unpin>(
    io: &mut T,
    timeout: Option<Duration>,
) -> io::Result<(Detected, BytesMut)> {
    let deadline = timeout.map(|t| tokio::time::Instant::now() + t);
    let mut buf = BytesMut::with_capacity(512);
    loop {
        let seen_method = match classify(&buf) {
            Verdict::Tls => return Ok((Detected::Tls, buf)),
            Verdict::H2c => return Ok((Detected::Protocol(H2C), buf)),
            Verdict::Http1 => return Ok((Detected::Protocol(HTTP1), buf)),
            Verdict::NotHttp => return Ok((Detected::Other, buf)),
            Verdict::NeedMore(seen) => seen,
        };
        let read = io.read_buf(&mut buf);
        let n = match deadline {
            None => read.await?,
            Some(at) => match tokio::time::timeout_at(at, read).await {
                Ok(n) => n?,
                // A request line that started but stalled is still HTTP/1 (a slow client).
                Err(_) if seen_method => return Ok((Detected::Protocol(HTTP1), buf)),
                Err(_) => return Ok((Detected::TimedOut, buf)),
            },
        };
        if n == 0 {
            let verdict = if seen_method {
                Detected::Protocol(HTTP1)
            } else {
                Detected::Other
            };
            return Ok((verdict, buf));
        }
    }
}

fn classify(buf: &[u8]) -> Verdict {
    match buf {
        [] | [0x16] => return Verdict::NeedMore(false),
        [0x16, 0x03, ..] => return Verdict::Tls,
        _ => {}
    }
    let n = buf.len().min(H2_PREFACE.len());
    if buf[..n] == H2_PREFACE[..n] {
        return if n == H2_PREFACE.len() {
            Verdict::H2c
        } else {
            Verdict::NeedMore(false)
        };
    }
    let Some(space) = buf.iter().position(|&b| b == b' ') else {
        return if buf.len() <= MAX_METHOD && buf.iter().all(|&b| is_tchar(b)) {
            Verdict::NeedMore(false)
        } else {
            Verdict::NotHttp
        };
    };
    if space == 0 || space > MAX_METHOD || !buf[..space].iter().all(|&b| is_tchar(b)) {
        return Verdict::NotHttp;
    }
    match buf.windows(2).position(|w| w == b"\r\n") {
        Some(end) => {
            let line = &buf[..end];
            if line.ends_with(b" HTTP/1.1") || line.ends_with(b" HTTP/1.0") {
                Verdict::Http1
            } else {
                Verdict::NotHttp
            }
        }
        None if buf.len() >= MAX_LINE => Verdict::Http1,
        None => Verdict::NeedMore(true),
    }
}

/// RFC 9110 token characters.
fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classifies_request_starts() {
        assert_eq!(classify(b"GET / HTTP/1.1\r\nHost: a\r\n"), Verdict::Http1);
        assert_eq!(classify(b"POST /x?y=1 HTTP/1.0\r\n"), Verdict::Http1);
        assert_eq!(classify(b"GET /pa"), Verdict::NeedMore(true));
        assert_eq!(classify(b"GE"), Verdict::NeedMore(false));
        assert_eq!(classify(H2_PREFACE), Verdict::H2c);
        assert_eq!(classify(b"PRI * HTTP/2"), Verdict::NeedMore(false));
        assert_eq!(classify(b"SSH-2.0-OpenSSH_9 Ubuntu\r\n"), Verdict::NotHttp);
        assert_eq!(classify(b"\x16\x03\x01\x02\x00"), Verdict::Tls);
        assert_eq!(classify(b"\x16\x07"), Verdict::NotHttp);
        assert_eq!(classify(b"*1\r\n$4\r\nPING\r\n"), Verdict::NotHttp);
    }

    #[tokio::test(start_paused = true)]
    async fn silent_client_times_out_and_stalled_request_line_is_http1() {
        let (_client, mut server) = tokio::io::duplex(64);
        let (d, buf) = detect(&mut server, Some(Duration::from_secs(1)))
            .await
            .unwrap();
        assert_eq!((d, buf.len()), (Detected::TimedOut, 0));

        let (mut client, mut server) = tokio::io::duplex(64);
        tokio::io::AsyncWriteExt::write_all(&mut client, b"GET /slow")
            .await
            .unwrap();
        let (d, buf) = detect(&mut server, Some(Duration::from_secs(1)))
            .await
            .unwrap();
        assert_eq!(d, Detected::Protocol(HTTP1));
        assert_eq!(&buf[..], b"GET /slow");
    }
}
