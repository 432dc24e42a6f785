//! One YAML document to one typed, validated resource: read `kind` and `apiVersion`, type the
//! document, then check what types cannot.

use serde::Deserialize;
use serde::de::DeserializeOwned;

use crate::backend_policy::{self, BackendPolicy, BackendPolicySpec};
use crate::error::ConfigError;
use crate::fault::{self, FaultInjection, FaultInjectionSpec};
use crate::mesh::{self, MeshConfig, MeshConfigSpec};
use crate::meta::Meta;
use crate::policy::{self, AuthorizationPolicy, AuthorizationPolicySpec};
use crate::ratelimit::{self, RateLimit, RateLimitSpec};
use crate::route::{self, GrpcRoute, GrpcRouteSpec, HttpRoute, HttpRouteSpec};
use crate::service::{self, Service, ServiceSpec};
use crate::validate::Validator;
use crate::yaml::{FieldPath, Node, Value, from_node};

/// The API version of Trellis's own kinds.
pub const TRELLIS_API_VERSION: &str = "trellis.dev/v1alpha1";
/// The Gateway API version of HTTPRoute and GRPCRoute.
pub const GATEWAY_API_VERSION: &str = "gateway.networking.k8s.io/v1";
/// The older Gateway API version also accepted for HTTPRoute.
pub const GATEWAY_API_VERSION_BETA: &str = "gateway.networking.k8s.io/v1beta1";

/// A kind this crate understands.
#[derive(Clone, Copy)]
enum Kind {
    AuthorizationPolicy,
    BackendPolicy,
    FaultInjection,
    MeshConfig,
    RateLimit,
    Service,
    HttpRoute,
    GrpcRoute,
}

/// Each kind with its YAML name and the API versions it accepts.
const KINDS: [(Kind, &str, &[&str]); 8] = [
    (
        Kind::AuthorizationPolicy,
        "AuthorizationPolicy",
        &[TRELLIS_API_VERSION],
    ),
    (Kind::BackendPolicy, "BackendPolicy", &[TRELLIS_API_VERSION]),
    (
        Kind::FaultInjection,
        "FaultInjection",
        &[TRELLIS_API_VERSION],
    ),
    (Kind::MeshConfig, "MeshConfig", &[TRELLIS_API_VERSION]),
    (Kind::RateLimit, "RateLimit", &[TRELLIS_API_VERSION]),
    (Kind::Service, "Service", &[TRELLIS_API_VERSION]),
    (
        Kind::HttpRoute,
        "HTTPRoute",
        &[GATEWAY_API_VERSION, GATEWAY_API_VERSION_BETA],
    ),
    (Kind::GrpcRoute, "GRPCRoute", &[GATEWAY_API_VERSION]),
];

/// A typed resource from one document.
#[derive(Clone, Debug)]
pub(crate) enum Resource {
    AuthorizationPolicy(AuthorizationPolicy),
    // Boxed: its settings make it several times larger than the other kinds.
    BackendPolicy(Box<BackendPolicy>),
    FaultInjection(FaultInjection),
    MeshConfig(MeshConfig),
    RateLimit(RateLimit),
    Service(Service),
    HttpRoute(HttpRoute),
    GrpcRoute(GrpcRoute),
}

impl Resource {
    pub(crate) fn kind(&self) -> &'static str {
        match self {
            Self::AuthorizationPolicy(_) => "AuthorizationPolicy",
            Self::BackendPolicy(_) => "BackendPolicy",
            Self::FaultInjection(_) => "FaultInjection",
            Self::MeshConfig(_) => "MeshConfig",
            Self::RateLimit(_) => "RateLimit",
            Self::Service(_) => "Service",
            Self::HttpRoute(_) => "HTTPRoute",
            Self::GrpcRoute(_) => "GRPCRoute",
        }
    }

    pub(crate) fn meta(&self) -> &Meta {
        match self {
            Self::AuthorizationPolicy(r) => &r.metadata,
            Self::BackendPolicy(r) => &r.metadata,
            Self::FaultInjection(r) => &r.metadata,
            Self::MeshConfig(r) => &r.metadata,
            Self::RateLimit(r) => &r.metadata,
            Self::Service(r) => &r.metadata,
            Self::HttpRoute(r) => &r.metadata,
            Self::GrpcRoute(r) => &r.metadata,
        }
    }
}

/// The shape every document has; `kind` and `apiVersion` were checked before typing.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct Envelope<S> {
    #[serde(rename = "apiVersion")]
    _api_version: String,
    #[serde(rename = "kind")]
    _kind: String,
    metadata: Meta,
    #[serde(default)]
    spec: S,
}

/// Types and validates one document, adding any problems to `errors`. Returns `None` when the
/// document could not be typed.
pub(crate) fn load(file: &str, root: &Node, errors: &mut Vec<ConfigError>) -> Option<Resource> {
    let mut v = Validator::new(file, root, errors);
    let kind = header(root, &mut v)?;
    let resource = match kind {
        Kind::AuthorizationPolicy => {
            typed::<AuthorizationPolicySpec>(root, &mut v).map(|(metadata, spec)| {
                Resource::AuthorizationPolicy(AuthorizationPolicy { metadata, spec })
            })
        }
        Kind::BackendPolicy => typed::<BackendPolicySpec>(root, &mut v).map(|(metadata, spec)| {
            Resource::BackendPolicy(Box::new(BackendPolicy { metadata, spec }))
        }),
        Kind::FaultInjection => typed::<FaultInjectionSpec>(root, &mut v)
            .map(|(metadata, spec)| Resource::FaultInjection(FaultInjection { metadata, spec })),
        Kind::MeshConfig => typed::<MeshConfigSpec>(root, &mut v)
            .map(|(metadata, spec)| Resource::MeshConfig(MeshConfig { metadata, spec })),
        Kind::RateLimit => typed::<RateLimitSpec>(root, &mut v)
            .map(|(metadata, spec)| Resource::RateLimit(RateLimit { metadata, spec })),
        Kind::Service => typed::<ServiceSpec>(root, &mut v)
            .map(|(metadata, spec)| Resource::Service(Service { metadata, spec })),
        Kind::HttpRoute => typed::<HttpRouteSpec>(root, &mut v)
            .map(|(metadata, spec)| Resource::HttpRoute(HttpRoute { metadata, spec })),
        Kind::GrpcRoute => typed::<GrpcRouteSpec>(root, &mut v)
            .map(|(metadata, spec)| Resource::GrpcRoute(GrpcRoute { metadata, spec })),
    }?;
    match &resource {
        Resource::AuthorizationPolicy(r) => policy::validate(r, &mut v),
        Resource::BackendPolicy(r) => backend_policy::validate(r, &mut v),
        Resource::FaultInjection(r) => fault::validate(r, &mut v),
        Resource::MeshConfig(r) => mesh::validate(r, &mut v),
        Resource::RateLimit(r) => ratelimit::validate(r, &mut v),
        Resource::Service(r) => service::validate(r, &mut v),
        Resource::HttpRoute(r) => route::validate_http(r, &mut v),
        Resource::GrpcRoute(r) => route::validate_grpc(r, &mut v),
    }
    // Returned even when invalid, so that duplicate names are still found; the load fails
    // anyway because an error was recorded.
    Some(resource)
}

/// Checks `kind` and `apiVersion`, returning the kind when both are right.
fn header(root: &Node, v: &mut Validator<'_>) -> Option<Kind> {
    if !matches!(root.value, Value::Map(_)) {
        v.error(
            &FieldPath::root(),
            "expected a mapping with apiVersion, kind, metadata and spec",
        );
        return None;
    }
    let known: Vec<&str> = KINDS.iter().map(|(_, name, _)| *name).collect();
    let kind_path = FieldPath::root().key("kind");
    let Some(kind) = root.get("kind").and_then(Node::as_str) else {
        v.error(
            &kind_path,
            format!(
                "missing required field `kind`; expected one of {}",
                known.join(", ")
            ),
        );
        return None;
    };
    let Some((kind, name, versions)) = KINDS.iter().find(|(_, name, _)| *name == kind) else {
        v.error(
            &kind_path,
            format!(
                "unknown kind `{kind}`, expected one of {}",
                known.join(", ")
            ),
        );
        return None;
    };
    let version = root.get("apiVersion").and_then(Node::as_str);
    if version.is_some_and(|found| versions.contains(&found)) {
        return Some(*kind);
    }
    let expected = versions.join(" or ");
    let message = match version {
        Some(found) => format!("expected {expected} for kind {name}, found `{found}`"),
        None => format!("missing required field `apiVersion`; expected {expected} for kind {name}"),
    };
    v.error(&FieldPath::root().key("apiVersion"), message);
    None
}

fn typed<S: DeserializeOwned + Default>(root: &Node, v: &mut Validator<'_>) -> Option<(Meta, S)> {
    match from_node::<Envelope<S>>(root) {
        Ok(env) => Some((env.metadata, env.spec)),
        Err(e) => {
            v.de_error(e);
            None
        }
    }
}
