//! Mutual TLS as Envoy expresses it: the inbound listener gets TLS copies of its filter chains
//! (chosen by `transport_protocol: tls` from tls_inspector, and by ALPN for HTTP), its plaintext
//! chains stay only in PERMISSIVE mode; clusters send TLS to endpoints that are sidecars
//! (`transport_socket_matches` on endpoint metadata) and verify the peer's SPIFFE ID. The proxy's
//! own certificate is the local secret `default` (its key never leaves it); the trust bundle is
//! the SDS secret `ROOTCA` served over ADS.

use envoy_types::pb::envoy::config::cluster::v3::Cluster;
use envoy_types::pb::envoy::config::cluster::v3::cluster::TransportSocketMatch;
use envoy_types::pb::envoy::config::core::v3::{
    ApiConfigSource, ConfigSource, DataSource, GrpcService, TransportSocket,
    api_config_source::ApiType, config_source::ConfigSourceSpecifier, data_source::Specifier,
    grpc_service::EnvoyGrpc, grpc_service::TargetSpecifier,
    transport_socket::ConfigType as SocketConfig,
};
use envoy_types::pb::envoy::config::listener::v3::{
    Listener, ListenerFilter, listener_filter::ConfigType as ListenerFilterConfig,
};
use envoy_types::pb::envoy::extensions::filters::listener::tls_inspector::v3::TlsInspector;
use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::{
    CertificateValidationContext, CommonTlsContext, DownstreamTlsContext, SdsSecretConfig, Secret,
    SubjectAltNameMatcher, UpstreamTlsContext,
    common_tls_context::CombinedCertificateValidationContext,
    common_tls_context::ValidationContextType, secret, subject_alt_name_matcher::SanType,
};
use envoy_types::pb::envoy::r#type::matcher::v3::{StringMatcher, string_matcher::MatchPattern};
use envoy_types::pb::google::protobuf::{BoolValue, Struct};
use trellis_api::MtlsMode;

use super::{ads, any};
use crate::model::{MeshModel, ServiceModel};

/// SDS name of the proxy's own certificate, provided locally by its certificate agent.
pub use trellis_xds::sds::WORKLOAD_SECRET;
/// SDS name of the trust bundle the control plane serves.
pub const BUNDLE_SECRET: &str = "ROOTCA";
/// Endpoint metadata key (under `envoy.transport_socket_match`) marking sidecar endpoints.
pub const TLS_MATCH_KEY: &str = "trellis.dev/tls";
/// ALPN offered on mesh HTTP connections.
const HTTP_ALPN: [&str; 2] = ["h2", "http/1.1"];

/// The trust bundle as an SDS secret.
pub(super) fn bundle_secret(pem: &str) -> Secret {
    Secret {
        name: BUNDLE_SECRET.to_owned(),
        r#type: Some(secret::Type::ValidationContext(
            CertificateValidationContext {
                trusted_ca: Some(DataSource {
                    specifier: Some(Specifier::InlineString(pem.to_owned())),
                    ..DataSource::default()
                }),
                ..CertificateValidationContext::default()
            },
        )),
    }
}

/// The mTLS mode of a workload's inbound port: its service's override, else the mesh's.
pub(super) fn inbound_mode(model: &MeshModel, own: Option<&ServiceModel>) -> MtlsMode {
    let mesh = model.config.mesh_config().mtls.mode;
    own.and_then(|svc| {
        model
            .config
            .service(&svc.namespace, &svc.name)
            .and_then(|s| s.spec.mtls.as_ref())
            .map(|m| m.mode)
    })
    .unwrap_or(mesh)
}

/// Adds TLS chains to an inbound listener; in STRICT mode the plaintext ones go.
pub(super) fn secure_inbound(listener: &mut Listener, mode: MtlsMode) {
    let tls_socket = downstream_socket();
    let mut chains = Vec::new();
    let plaintext: Vec<_> = listener
        .filter_chains
        .iter()
        .cloned()
        .chain(listener.default_filter_chain.clone())
        .collect();
    for chain in &plaintext {
        let mut secure = chain.clone();
        secure.name = format!("tls-{}", chain.name);
        let mut m = chain.filter_chain_match.clone().unwrap_or_default();
        m.transport_protocol = "tls".to_owned();
        if !m.application_protocols.is_empty() {
            m.application_protocols = HTTP_ALPN.iter().map(|p| (*p).to_owned()).collect();
        }
        secure.filter_chain_match = Some(m);
        secure.transport_socket = Some(tls_socket.clone());
        chains.push(secure);
    }
    match mode {
        MtlsMode::Strict => listener.default_filter_chain = None,
        MtlsMode::Permissive => {
            for chain in &listener.filter_chains {
                let mut raw = chain.clone();
                let mut m = raw.filter_chain_match.unwrap_or_default();
                m.transport_protocol = "raw_buffer".to_owned();
                raw.filter_chain_match = Some(m);
                chains.push(raw);
            }
        }
    }
    listener.filter_chains = chains;
    listener.listener_filters.insert(
        0,
        ListenerFilter {
            name: "envoy.filters.listener.tls_inspector".to_owned(),
            config_type: Some(ListenerFilterConfig::TypedConfig(any(
                &TlsInspector::default(),
            ))),
            ..ListenerFilter::default()
        },
    );
    if listener.listener_filters_timeout.is_none() {
        listener.listener_filters_timeout = Some(super::duration(super::DETECTION_TIMEOUT));
        listener.continue_on_listener_filters_timeout = true;
    }
}

/// Makes `cluster`, of the service `key` (`name.namespace`), originate mTLS to sidecar
/// endpoints, expecting one of `identities`, those of the service's workloads; static
/// endpoints (no sidecar) stay plaintext.
pub(super) fn secure_cluster(cluster: &mut Cluster, key: &str, identities: &[String]) {
    let context = UpstreamTlsContext {
        common_tls_context: Some(CommonTlsContext {
            tls_certificate_sds_secret_configs: vec![workload_secret()],
            alpn_protocols: HTTP_ALPN.iter().map(|p| (*p).to_owned()).collect(),
            validation_context_type: Some(ValidationContextType::CombinedValidationContext(
                CombinedCertificateValidationContext {
                    default_validation_context: Some(CertificateValidationContext {
                        match_typed_subject_alt_names: identities
                            .iter()
                            .map(|id| SubjectAltNameMatcher {
                                san_type: SanType::Uri as i32,
                                matcher: Some(StringMatcher {
                                    match_pattern: Some(MatchPattern::Exact(id.clone())),
                                    ..StringMatcher::default()
                                }),
                                ..SubjectAltNameMatcher::default()
                            })
                            .collect(),
                        ..CertificateValidationContext::default()
                    }),
                    validation_context_sds_secret_config: Some(bundle_secret_ref()),
                    ..CombinedCertificateValidationContext::default()
                },
            )),
            ..CommonTlsContext::default()
        }),
        sni: format!("outbound_.{key}"),
        ..UpstreamTlsContext::default()
    };
    cluster.transport_socket_matches = vec![TransportSocketMatch {
        name: "tls".to_owned(),
        r#match: Some(tls_match_struct()),
        transport_socket: Some(TransportSocket {
            name: "envoy.transport_sockets.tls".to_owned(),
            config_type: Some(SocketConfig::TypedConfig(any(&context))),
        }),
    }];
}

/// `{trellis.dev/tls: true}`: the metadata sidecar endpoints carry, and the match selecting TLS.
pub(super) fn tls_match_struct() -> Struct {
    true_struct(TLS_MATCH_KEY)
}

/// A struct with one field, `key: true`.
pub(super) fn true_struct(key: &str) -> Struct {
    let mut s = Struct::default();
    s.fields.insert(
        key.to_owned(),
        envoy_types::pb::google::protobuf::Value {
            kind: Some(envoy_types::pb::google::protobuf::value::Kind::BoolValue(
                true,
            )),
        },
    );
    s
}

fn downstream_socket() -> TransportSocket {
    let context = DownstreamTlsContext {
        common_tls_context: Some(CommonTlsContext {
            tls_certificate_sds_secret_configs: vec![workload_secret()],
            alpn_protocols: HTTP_ALPN.iter().map(|p| (*p).to_owned()).collect(),
            validation_context_type: Some(ValidationContextType::ValidationContextSdsSecretConfig(
                bundle_secret_ref(),
            )),
            ..CommonTlsContext::default()
        }),
        require_client_certificate: Some(BoolValue { value: true }),
        ..DownstreamTlsContext::default()
    };
    TransportSocket {
        name: "envoy.transport_sockets.tls".to_owned(),
        config_type: Some(SocketConfig::TypedConfig(any(&context))),
    }
}

/// The local certificate: served to Envoy by a local SDS agent (cluster `sds-grpc`, as
/// istio-agent does); Trellis's proxy is its own agent.
fn workload_secret() -> SdsSecretConfig {
    SdsSecretConfig {
        name: WORKLOAD_SECRET.to_owned(),
        sds_config: Some(ConfigSource {
            config_source_specifier: Some(ConfigSourceSpecifier::ApiConfigSource(
                ApiConfigSource {
                    api_type: ApiType::Grpc as i32,
                    transport_api_version: envoy_types::pb::envoy::config::core::v3::ApiVersion::V3
                        as i32,
                    grpc_services: vec![GrpcService {
                        target_specifier: Some(TargetSpecifier::EnvoyGrpc(EnvoyGrpc {
                            cluster_name: trellis_xds::sds::SDS_CLUSTER.to_owned(),
                            ..EnvoyGrpc::default()
                        })),
                        ..GrpcService::default()
                    }],
                    ..ApiConfigSource::default()
                },
            )),
            ..ConfigSource::default()
        }),
    }
}

fn bundle_secret_ref() -> SdsSecretConfig {
    SdsSecretConfig {
        name: BUNDLE_SECRET.to_owned(),
        sds_config: Some(ads()),
    }
}
