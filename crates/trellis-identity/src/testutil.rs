//! Test helpers: a CA, SVIDs and in-memory TLS handshakes.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use rustls::pki_types::ServerName;
use rustls::{ClientConfig, ClientConnection, ServerConfig, ServerConnection};

use crate::SpiffeId;
use crate::ca::{Authority, CaOptions};
use crate::workload::{Svid, WorkloadKey};

pub(crate) const DAY: Duration = Duration::from_secs(24 * 3600);

pub(crate) fn opts() -> CaOptions {
    CaOptions::new("cluster.local")
}

pub(crate) fn id(sa: &str) -> SpiffeId {
    SpiffeId::new("cluster.local", "default", sa).unwrap()
}

pub(crate) fn authority(now: SystemTime) -> Authority {
    Authority::in_memory(opts(), now).unwrap()
}

/// A fresh key, its CSR signed by `ca`, and the resulting SVID.
pub(crate) fn issue(ca: &mut Authority, who: &SpiffeId, ttl: Duration, now: SystemTime) -> Svid {
    let key = WorkloadKey::generate().unwrap();
    let issued = ca
        .issue(&key.csr_pem(who).unwrap(), who, Some(ttl), now)
        .unwrap();
    Svid::new(&key, &issued.chain_pem, who).unwrap()
}

/// Runs a handshake over in-memory buffers; returns both ends, or the first error either
/// side raised.
pub(crate) fn handshake(
    client: Arc<ClientConfig>,
    server: Arc<ServerConfig>,
) -> Result<(ClientConnection, ServerConnection), rustls::Error> {
    let name = ServerName::IpAddress(std::net::Ipv4Addr::LOCALHOST.into());
    let mut c = ClientConnection::new(client, name)?;
    let mut s = ServerConnection::new(server)?;
    for _ in 0..10 {
        transfer(&mut c, &mut s)?;
        transfer(&mut s, &mut c)?;
        if !c.is_handshaking() && !s.is_handshaking() {
            return Ok((c, s));
        }
    }
    panic!("the handshake did not finish")
}

/// Moves everything `from` has to send into `to`, and lets `to` process it.
fn transfer<A, B>(
    from: &mut rustls::ConnectionCommon<A>,
    to: &mut rustls::ConnectionCommon<B>,
) -> Result<(), rustls::Error> {
    let mut buf = Vec::new();
    from.write_tls(&mut buf).unwrap();
    let mut rest = buf.as_slice();
    while !rest.is_empty() {
        to.read_tls(&mut rest).unwrap();
        to.process_new_packets()?;
    }
    Ok(())
}
