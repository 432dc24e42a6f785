//! mTLS settings: compiles `DownstreamTlsContext` (inbound chains), `UpstreamTlsContext` and
//! `transport_socket_matches` (clusters), and SDS `Secret`s carrying trust bundles. Only the
//! mesh shape is accepted: the certificate is the proxy's own (`default`, from its certificate
//! agent), the trust bundle an SDS secret from the control plane, and peers are checked by
//! SPIFFE URI SAN.

use std::collections::BTreeMap;
use std::sync::Arc;

use envoy_types::pb::envoy::config::cluster::v3::cluster::TransportSocketMatch;
use envoy_types::pb::envoy::config::core::v3::{
    DataSource, TransportSocket, data_source::Specifier, transport_socket::ConfigType,
};
use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::{
    CommonTlsContext, DownstreamTlsContext, SdsSecretConfig, Secret, UpstreamTlsContext,
    common_tls_context::ValidationContextType, secret, subject_alt_name_matcher::SanType,
};
use envoy_types::pb::envoy::r#type::matcher::v3::string_matcher::MatchPattern;
use envoy_types::pb::google::protobuf::{Struct, Value, value::Kind};
use prost::Name;

use super::{ConfigError, FieldError, decode_any};

use trellis_xds::sds::WORKLOAD_SECRET;
/// Envoy's name for the TLS transport socket.
const TLS_SOCKET: &str = "envoy.transport_sockets.tls";

/// Server side of mesh mTLS on a filter chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct DownstreamTls {
    /// SDS secret holding the trust bundle client certificates must chain to.
    pub(crate) bundle: String,
    /// ALPN protocols offered.
    pub(crate) alpn: Vec<String>,
}

/// Client side of mesh mTLS towards some endpoints of a cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct UpstreamTls {
    /// SDS secret holding the trust bundle the server must chain to.
    pub(crate) bundle: String,
    /// SPIFFE IDs the server may present (URI SAN, exact).
    pub(crate) expected: Vec<String>,
}

/// Which endpoints of a cluster get which TLS settings.
#[derive(Debug, Clone, PartialEq, Default)]
pub(crate) struct ClusterTls {
    /// `transport_socket_matches` in order: endpoint metadata that must match, and the settings.
    pub(crate) matches: Vec<(BTreeMap<String, MetaValue>, Arc<UpstreamTls>)>,
    /// The cluster-wide `transport_socket`, for endpoints no match selects.
    pub(crate) default: Option<Arc<UpstreamTls>>,
}

/// A scalar value of endpoint metadata, as transport socket matches compare them.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum MetaValue {
    /// A boolean.
    Bool(bool),
    /// A string.
    Str(String),
    /// A number.
    Num(f64),
}

impl MetaValue {
    fn of(v: &Value) -> Option<MetaValue> {
        match &v.kind {
            Some(Kind::BoolValue(b)) => Some(MetaValue::Bool(*b)),
            Some(Kind::StringValue(s)) => Some(MetaValue::Str(s.clone())),
            Some(Kind::NumberValue(n)) => Some(MetaValue::Num(*n)),
            _ => None,
        }
    }
}

impl ClusterTls {
    /// The TLS settings for an endpoint with `metadata` (its `envoy.transport_socket_match`
    /// filter metadata); `None` means plaintext.
    pub(crate) fn for_endpoint(
        &self,
        metadata: &BTreeMap<String, MetaValue>,
    ) -> Option<Arc<UpstreamTls>> {
        self.matches
            .iter()
            .find(|(want, _)| want.iter().all(|(k, v)| metadata.get(k) == Some(v)))
            .map(|(_, tls)| tls.clone())
            .or_else(|| self.default.clone())
    }

    /// The cluster's one TLS setting (several distinct ones are refused at compile time).
    pub(crate) fn settings(&self) -> Option<&Arc<UpstreamTls>> {
        self.matches
            .first()
            .map(|(_, t)| t)
            .or(self.default.as_ref())
    }

    /// Every bundle secret the cluster needs.
    pub(crate) fn bundles(&self) -> impl Iterator<Item = &str> {
        self.matches
            .iter()
            .map(|(_, t)| t.bundle.as_str())
            .chain(self.default.iter().map(|t| t.bundle.as_str()))
    }
}

/// Flattens a metadata struct to the scalars transport socket matches compare.
pub(crate) fn meta_values(s: &Struct) -> BTreeMap<String, MetaValue> {
    s.fields
        .iter()
        .filter_map(|(k, v)| Some((k.clone(), MetaValue::of(v)?)))
        .collect()
}

/// Compiles a filter chain's `transport_socket`.
pub(crate) fn downstream(socket: &TransportSocket) -> Result<DownstreamTls, FieldError> {
    let ctx: DownstreamTlsContext = typed(socket)?;
    if !ctx.require_client_certificate.is_some_and(|b| b.value) {
        return Err(FieldError::new(
            "require_client_certificate",
            "must be true: only mutual TLS is supported",
        ));
    }
    let common = ctx
        .common_tls_context
        .as_ref()
        .ok_or_else(|| FieldError::new("common_tls_context", "is required"))?;
    check_certificate(common).map_err(|e| e.at("common_tls_context"))?;
    let bundle = match &common.validation_context_type {
        Some(ValidationContextType::ValidationContextSdsSecretConfig(sds)) => sds_name(sds),
        Some(ValidationContextType::CombinedValidationContext(c)) => c
            .validation_context_sds_secret_config
            .as_ref()
            .map(sds_name)
            .unwrap_or_default(),
        _ => String::new(),
    };
    if bundle.is_empty() {
        return Err(FieldError::new(
            "common_tls_context.validation_context_sds_secret_config",
            "is required: peers are verified against an SDS trust bundle",
        ));
    }
    Ok(DownstreamTls {
        bundle,
        alpn: common.alpn_protocols.clone(),
    })
}

/// Compiles a cluster's `transport_socket` and `transport_socket_matches`.
pub(crate) fn cluster(
    socket: Option<&TransportSocket>,
    matches: &[TransportSocketMatch],
) -> Result<ClusterTls, FieldError> {
    let default = socket
        .map(|s| upstream(s).map(Arc::new))
        .transpose()
        .map_err(|e| e.at("transport_socket"))?;
    let matches = matches
        .iter()
        .enumerate()
        .map(|(i, m)| {
            let at = |e: FieldError| e.at(format!("transport_socket_matches[{i}]"));
            let socket = m
                .transport_socket
                .as_ref()
                .ok_or_else(|| at(FieldError::new("transport_socket", "is required")))?;
            let tls = upstream(socket).map_err(|e| at(e.at("transport_socket")))?;
            let want = m.r#match.as_ref().map(meta_values).unwrap_or_default();
            Ok((want, Arc::new(tls)))
        })
        .collect::<Result<Vec<_>, FieldError>>()?;
    let mut all = matches.iter().map(|(_, t)| t).chain(&default);
    let distinct = all.next().is_some_and(|first| all.any(|t| t != first));
    if distinct {
        return Err(FieldError::new(
            "transport_socket_matches",
            "every TLS transport socket of a cluster must have the same settings",
        ));
    }
    Ok(ClusterTls { matches, default })
}

fn upstream(socket: &TransportSocket) -> Result<UpstreamTls, FieldError> {
    let ctx: UpstreamTlsContext = typed(socket)?;
    let common = ctx
        .common_tls_context
        .as_ref()
        .ok_or_else(|| FieldError::new("common_tls_context", "is required"))?;
    check_certificate(common).map_err(|e| e.at("common_tls_context"))?;
    let Some(ValidationContextType::CombinedValidationContext(combined)) =
        &common.validation_context_type
    else {
        return Err(FieldError::new(
            "common_tls_context.combined_validation_context",
            "is required: the SDS trust bundle plus the SANs peers must present",
        ));
    };
    let bundle = combined
        .validation_context_sds_secret_config
        .as_ref()
        .map(sds_name)
        .unwrap_or_default();
    if bundle.is_empty() {
        return Err(FieldError::new(
            "common_tls_context.combined_validation_context.validation_context_sds_secret_config",
            "is required",
        ));
    }
    let mut expected = Vec::new();
    let sans = combined
        .default_validation_context
        .as_ref()
        .map(|v| v.match_typed_subject_alt_names.as_slice())
        .unwrap_or_default();
    for (i, san) in sans.iter().enumerate() {
        let field = || {
            format!(
                "common_tls_context.combined_validation_context.default_validation_context.match_typed_subject_alt_names[{i}]"
            )
        };
        let exact = match san.matcher.as_ref().and_then(|m| m.match_pattern.as_ref()) {
            Some(MatchPattern::Exact(id)) if san.san_type == SanType::Uri as i32 => id.clone(),
            _ => {
                return Err(FieldError::new(
                    field(),
                    "only exact URI SAN matchers (SPIFFE IDs) are supported",
                ));
            }
        };
        expected.push(exact);
    }
    if expected.is_empty() {
        return Err(FieldError::new(
            "common_tls_context.combined_validation_context.default_validation_context.match_typed_subject_alt_names",
            "must name the SPIFFE IDs the peer may present",
        ));
    }
    Ok(UpstreamTls { bundle, expected })
}

/// The only certificate supported is the proxy's own, from its certificate agent.
fn check_certificate(common: &CommonTlsContext) -> Result<(), FieldError> {
    if !common.tls_certificates.is_empty() {
        return Err(FieldError::new(
            "tls_certificates",
            "inline certificates are not supported: keys never travel over xDS",
        ));
    }
    match common.tls_certificate_sds_secret_configs.as_slice() {
        [one] if one.name == WORKLOAD_SECRET => Ok(()),
        _ => Err(FieldError::new(
            "tls_certificate_sds_secret_configs",
            format!("must be exactly one secret named {WORKLOAD_SECRET:?} (the proxy's own SVID)"),
        )),
    }
}

fn sds_name(sds: &SdsSecretConfig) -> String {
    sds.name.clone()
}

fn typed<M: prost::Message + Name + Default>(socket: &TransportSocket) -> Result<M, FieldError> {
    match &socket.config_type {
        Some(ConfigType::TypedConfig(any)) if any.type_url == M::type_url() => {
            decode_any(any).map_err(|e| e.at("typed_config"))
        }
        _ => Err(FieldError::message(format!(
            "unsupported transport socket {:?} (supported: {TLS_SOCKET} with {})",
            socket.name,
            M::full_name()
        ))),
    }
}

/// Compiles an SDS secret: a trust bundle (`validation_context.trusted_ca`, inline PEM).
pub(crate) fn bundle(s: &Secret) -> Result<String, ConfigError> {
    let invalid = |source| ConfigError::Invalid {
        kind: "secret",
        name: s.name.clone(),
        source,
    };
    let Some(secret::Type::ValidationContext(v)) = &s.r#type else {
        return Err(invalid(FieldError::new(
            "type",
            "only validation_context (a trust bundle) is served over SDS; certificates come from the proxy's own agent",
        )));
    };
    match v
        .trusted_ca
        .as_ref()
        .and_then(|d: &DataSource| d.specifier.as_ref())
    {
        Some(Specifier::InlineString(pem)) => Ok(pem.clone()),
        Some(Specifier::InlineBytes(pem)) => String::from_utf8(pem.clone()).map_err(|_| {
            invalid(FieldError::new(
                "validation_context.trusted_ca",
                "is not UTF-8 PEM",
            ))
        }),
        _ => Err(invalid(FieldError::new(
            "validation_context.trusted_ca",
            "must be an inline PEM bundle",
        ))),
    }
}
