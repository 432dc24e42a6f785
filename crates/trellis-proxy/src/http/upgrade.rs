//! HTTP/1.1 upgrades (WebSocket): recognising upgrade requests and, after the upstream's 101,
//! splicing the two upgraded connections together.

use http::header::{self, HeaderMap};
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;

use crate::drain::DrainWatch;

/// The requested upgrade protocol, if the request asks for one (`Connection: upgrade` plus
/// `Upgrade: <protocol>`).
pub(crate) fn requested(headers: &HeaderMap) -> Option<&str> {
    if !super::tokens(headers, header::CONNECTION).any(|t| t.eq_ignore_ascii_case("upgrade")) {
        return None;
    }
    headers.get(header::UPGRADE)?.to_str().ok()
}

/// Waits for both sides' upgraded connections and copies bytes both ways until both close or
/// the proxy closes.
pub(crate) fn splice(downstream: OnUpgrade, upstream: OnUpgrade, mut drain: DrainWatch) {
    tokio::spawn(async move {
        let joined = async {
            let (down, up) = tokio::try_join!(downstream, upstream)?;
            let (mut down, mut up) = (TokioIo::new(down), TokioIo::new(up));
            tokio::io::copy_bidirectional(&mut down, &mut up)
                .await
                .map_err(|e| e.to_string())?;
            Ok::<_, Box<dyn std::error::Error + Send + Sync>>(())
        };
        tokio::select! {
            result = joined => match result {
                Ok(()) => tracing::debug!("upgraded connection closed"),
                Err(e) => tracing::debug!(error = %e, "upgraded connection failed"),
            },
            () = drain.closed() => tracing::debug!("upgraded connection closed by shutdown"),
        }
    });
}

#[cfg(test)]
mod tests {
    use http::HeaderValue;

    use super::*;

    #[test]
    fn recognises_upgrade_requests() {
        let mut h = HeaderMap::new();
        h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
        assert_eq!(requested(&h), None, "Upgrade without Connection: upgrade");
        h.insert(
            header::CONNECTION,
            HeaderValue::from_static("keep-alive, Upgrade"),
        );
        assert_eq!(requested(&h), Some("websocket"));
    }
}
