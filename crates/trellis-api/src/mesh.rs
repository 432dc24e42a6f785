//! `kind: MeshConfig` (`trellis.dev/v1alpha1`): mesh-wide settings: trust domain, mutual TLS
//! mode, certificate lifetimes and default-deny. At most one per configuration.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::meta::{self, Meta};
use crate::validate::Validator;
use crate::yaml::FieldPath;

/// Mesh-wide settings.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct MeshConfig {
    /// Name and namespace.
    pub metadata: Meta,
    /// The settings.
    pub spec: MeshConfigSpec,
}

/// Whether an inbound port also accepts plaintext.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum MtlsMode {
    /// mTLS and plaintext, told apart per connection (like Istio's default, for migration).
    #[default]
    #[serde(rename = "PERMISSIVE")]
    Permissive,
    /// mTLS only: plaintext connections are refused.
    #[serde(rename = "STRICT")]
    Strict,
}

/// Mutual TLS settings.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct MtlsSettings {
    /// STRICT or PERMISSIVE (default).
    #[serde(default)]
    pub mode: MtlsMode,
}

/// The `spec` of a [`MeshConfig`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct MeshConfigSpec {
    /// Trust domain of every SPIFFE ID (default `cluster.local`).
    #[serde(default = "default_trust_domain")]
    pub trust_domain: String,
    /// Mutual TLS between sidecars is always on; this decides what inbound ports accept.
    #[serde(default)]
    pub mtls: MtlsSettings,
    /// Workload certificate lifetime (default 24h).
    #[serde(default = "default_svid_ttl", with = "crate::duration::required")]
    pub svid_ttl: Duration,
    /// Lifetime of a root the CA makes (default 8760h); it rotates a third before the end.
    #[serde(default = "default_root_ttl", with = "crate::duration::required")]
    pub root_ttl: Duration,
    /// Deny every request no AuthorizationPolicy allows.
    #[serde(default)]
    pub default_deny: bool,
}

impl Default for MeshConfigSpec {
    fn default() -> Self {
        MeshConfigSpec {
            trust_domain: default_trust_domain(),
            mtls: MtlsSettings::default(),
            svid_ttl: default_svid_ttl(),
            root_ttl: default_root_ttl(),
            default_deny: false,
        }
    }
}

fn default_trust_domain() -> String {
    "cluster.local".to_owned()
}

fn default_svid_ttl() -> Duration {
    Duration::from_secs(24 * 3600)
}

fn default_root_ttl() -> Duration {
    Duration::from_secs(365 * 24 * 3600)
}

pub(crate) fn validate(mesh: &MeshConfig, v: &mut Validator<'_>) {
    let spec = FieldPath::root().key("spec");
    if !meta::is_dns_subdomain(&mesh.spec.trust_domain) {
        v.error(
            &spec.key("trustDomain"),
            format!(
                "expected a DNS name such as `cluster.local`, found `{}`",
                mesh.spec.trust_domain
            ),
        );
    }
    if mesh.spec.svid_ttl < Duration::from_secs(1) {
        v.error(&spec.key("svidTtl"), "expected at least 1s");
    }
    if mesh.spec.root_ttl <= mesh.spec.svid_ttl {
        v.error(
            &spec.key("rootTtl"),
            "expected a root lifetime longer than svidTtl",
        );
    }
}
