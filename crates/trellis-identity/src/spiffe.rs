//! SPIFFE IDs in the Kubernetes-style shape Istio and Linkerd use.

use std::fmt;
use std::str::FromStr;

/// A workload identity: trust domain, namespace and service account.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SpiffeId {
    trust_domain: String,
    namespace: String,
    service_account: String,
}

/// Why a string is not a SPIFFE ID of the expected shape.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SpiffeIdError {
    /// Missing the `spiffe://` scheme.
    #[error("{0:?} is not a SPIFFE ID: expected spiffe://<trust-domain>/ns/<ns>/sa/<sa>")]
    Scheme(String),
    /// The path is not `/ns/<ns>/sa/<sa>`.
    #[error("{0:?} has an unexpected path: expected /ns/<ns>/sa/<sa>")]
    Path(String),
    /// A segment is empty or holds characters SPIFFE forbids.
    #[error("{0:?}: segments must be non-empty and use [a-zA-Z0-9.-_]")]
    Segment(String),
}

impl SpiffeId {
    /// Builds an ID, checking each segment.
    pub fn new(
        trust_domain: &str,
        namespace: &str,
        service_account: &str,
    ) -> Result<SpiffeId, SpiffeIdError> {
        let valid = |s: &str| {
            !s.is_empty()
                && s.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_'))
        };
        if ![trust_domain, namespace, service_account]
            .iter()
            .all(|s| valid(s))
        {
            return Err(SpiffeIdError::Segment(format!(
                "spiffe://{trust_domain}/ns/{namespace}/sa/{service_account}"
            )));
        }
        Ok(SpiffeId {
            trust_domain: trust_domain.to_owned(),
            namespace: namespace.to_owned(),
            service_account: service_account.to_owned(),
        })
    }

    /// The trust domain (e.g. `cluster.local`).
    pub fn trust_domain(&self) -> &str {
        &self.trust_domain
    }

    /// The namespace segment.
    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    /// The service account segment.
    pub fn service_account(&self) -> &str {
        &self.service_account
    }
}

impl fmt::Display for SpiffeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "spiffe://{}/ns/{}/sa/{}",
            self.trust_domain, self.namespace, self.service_account
        )
    }
}

impl FromStr for SpiffeId {
    type Err = SpiffeIdError;

    fn from_str(s: &str) -> Result<SpiffeId, SpiffeIdError> {
        let rest = s
            .strip_prefix("spiffe://")
            .ok_or_else(|| SpiffeIdError::Scheme(s.to_owned()))?;
        let parts: Vec<&str> = rest.split('/').collect();
        match parts.as_slice() {
            [td, "ns", ns, "sa", sa] => SpiffeId::new(td, ns, sa),
            _ => Err(SpiffeIdError::Path(s.to_owned())),
        }
    }
}

impl serde::Serialize for SpiffeId {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for SpiffeId {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<SpiffeId, D::Error> {
        let text = String::deserialize(d)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_formats() {
        let id: SpiffeId = "spiffe://cluster.local/ns/default/sa/web".parse().unwrap();
        assert_eq!(id.namespace(), "default");
        assert_eq!(id.service_account(), "web");
        assert_eq!(id.to_string(), "spiffe://cluster.local/ns/default/sa/web");
    }

    #[test]
    fn rejects_bad_shapes() {
        assert!(matches!(
            "http://x/ns/a/sa/b".parse::<SpiffeId>(),
            Err(SpiffeIdError::Scheme(_))
        ));
        assert!(matches!(
            "spiffe://td/a/b".parse::<SpiffeId>(),
            Err(SpiffeIdError::Path(_))
        ));
        assert!(matches!(
            "spiffe://td/ns/a b/sa/c".parse::<SpiffeId>(),
            Err(SpiffeIdError::Segment(_))
        ));
    }
}
