//! trellis-api: the user-facing configuration of the Trellis mesh — serde types for its
//! resources (MeshConfig, AuthorizationPolicy, BackendPolicy, FaultInjection, RateLimit,
//! Service, HTTPRoute, GRPCRoute), their defaults and validation, and loading of multi-document
//! YAML files with `file:line:column` errors for every problem.
//!
//! This crate does not know about xDS, sockets or the control plane's state: it turns text into
//! validated values ([`load_dir`], [`load_str`]) and nothing more.

mod backend_policy;
mod bounded;
mod claim;
mod duration;
mod error;
mod fault;
mod load;
mod mesh;
mod meta;
mod policy;
mod ratelimit;
mod route;
mod service;
mod validate;
mod yaml;

pub use backend_policy::{
    BackendPolicy, BackendPolicySpec, BackendSettings, ConnectionPool, ConsistentHash,
    GrpcHealthCheck, HealthCheck, HttpHealthCheck, LoadBalancer, LoadBalancerType,
    LocalityFailover, Maglev, OutlierDetection, RetryBudget, RingHash, StatusRange, TcpHealthCheck,
};
pub use duration::{DurationError, format_duration, parse_duration};
pub use error::{ConfigError, ConfigErrors};
pub use fault::{FaultAbort, FaultDelay, FaultInjection, FaultInjectionSpec, GrpcStatusCode};
pub use load::{
    ConfigSet, DirLoader, GATEWAY_API_VERSION, GATEWAY_API_VERSION_BETA, TRELLIS_API_VERSION,
    load_dir, load_str,
};
pub use mesh::{MeshConfig, MeshConfigSpec, MtlsMode, MtlsSettings};
pub use meta::{DEFAULT_NAMESPACE, Meta, is_dns_label, is_dns_subdomain};
pub use policy::{
    AuthorizationAction, AuthorizationPolicy, AuthorizationPolicySpec, AuthorizationRule,
    HeaderValue, Operation, Source, TargetRef,
};
pub use ratelimit::{RateLimit, RateLimitSpec};
pub use route::{
    BackendObjectRef, BackendRef, ExtensionKind, ExtensionRef, Fraction, GrpcMethodMatch,
    GrpcRetryCode, GrpcRoute, GrpcRouteMatch, GrpcRouteRetry, GrpcRouteRule, GrpcRouteSpec,
    HeaderMatch, HttpHeader, HttpHeaderFilter, HttpMethod, HttpPathMatch, HttpPathModifier,
    HttpPathModifierType, HttpRequestMirrorFilter, HttpRequestRedirectFilter, HttpRoute,
    HttpRouteFilter, HttpRouteFilterType, HttpRouteMatch, HttpRouteRetry, HttpRouteRule,
    HttpRouteSpec, HttpRouteTimeouts, HttpUrlRewriteFilter, ParentRef, PathMatchType,
    QueryParamMatch, RedirectScheme, StringMatchType, UnsupportedFilterConfig,
};
pub use service::{
    Locality, LocalityError, Protocol, Service, ServicePort, ServiceSpec, StaticEndpoint,
};
