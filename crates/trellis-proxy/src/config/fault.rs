//! `envoy.filters.http.fault`: delays and aborts injected into a share of requests, optionally
//! only those whose headers match (listener default or per route).

use std::time::Duration;

use envoy_types::pb::envoy::extensions::filters::common::fault::v3::fault_delay::FaultDelaySecifier;
use envoy_types::pb::envoy::extensions::filters::http::fault::v3::HttpFault;
use envoy_types::pb::envoy::extensions::filters::http::fault::v3::fault_abort::ErrorType;
use http::StatusCode;

use super::fraction::Fraction;
use super::matcher::{HeaderMatch, RequestView};
use super::{FieldError, duration, reject_set};

/// How an injected abort answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Abort {
    /// This HTTP status.
    Http(StatusCode),
    /// A trailers-only gRPC answer with this status code.
    Grpc(u32),
}

/// A compiled `HTTPFault`.
#[derive(Debug)]
pub(crate) struct Fault {
    /// A fixed delay for a share of requests.
    pub(crate) delay: Option<(Duration, Fraction)>,
    /// An abort for a share of requests.
    pub(crate) abort: Option<(Abort, Fraction)>,
    /// The abort's body (Envoy's default: `fault filter abort`).
    pub(crate) abort_body: bytes::Bytes,
    headers: Vec<HeaderMatch>,
}

impl Fault {
    /// Compiles `f`.
    pub(crate) fn compile(f: &HttpFault) -> Result<Fault, FieldError> {
        reject_set(&[
            ("upstream_cluster", !f.upstream_cluster.is_empty()),
            ("downstream_nodes", !f.downstream_nodes.is_empty()),
            ("max_active_faults", f.max_active_faults.is_some()),
            ("response_rate_limit", f.response_rate_limit.is_some()),
            ("filter_metadata", f.filter_metadata.is_some()),
        ])?;
        let delay = match &f.delay {
            None => None,
            Some(d) => {
                let fixed = match &d.fault_delay_secifier {
                    Some(FaultDelaySecifier::FixedDelay(t)) => duration(t, "delay.fixed_delay")?,
                    Some(FaultDelaySecifier::HeaderDelay(_)) => {
                        return Err(FieldError::unsupported("delay.header_delay"));
                    }
                    None => return Err(FieldError::new("delay", "fixed_delay is required")),
                };
                Some((fixed, share(d.percentage.as_ref(), "delay")?))
            }
        };
        let abort = match &f.abort {
            None => None,
            Some(a) => {
                let kind = match a.error_type {
                    Some(ErrorType::HttpStatus(code)) => Abort::Http(
                        u16::try_from(code)
                            .ok()
                            .filter(|c| (200..600).contains(c))
                            .and_then(|c| StatusCode::from_u16(c).ok())
                            .ok_or_else(|| {
                                FieldError::new(
                                    "abort.http_status",
                                    format!("{code} is not in [200, 600)"),
                                )
                            })?,
                    ),
                    Some(ErrorType::GrpcStatus(code)) if code <= 16 => Abort::Grpc(code),
                    Some(ErrorType::GrpcStatus(code)) => {
                        return Err(FieldError::new(
                            "abort.grpc_status",
                            format!("{code} is not a gRPC status (0 to 16)"),
                        ));
                    }
                    Some(ErrorType::HeaderAbort(_)) => {
                        return Err(FieldError::unsupported("abort.header_abort"));
                    }
                    None => {
                        return Err(FieldError::new(
                            "abort",
                            "http_status or grpc_status is required",
                        ));
                    }
                };
                Some((kind, share(a.percentage.as_ref(), "abort")?))
            }
        };
        let abort_body = match f.abort.as_ref().map(|a| a.response_body.as_str()) {
            Some(body) if !body.is_empty() => bytes::Bytes::from(body.to_owned()),
            _ => bytes::Bytes::from_static(b"fault filter abort"),
        };
        let headers = f
            .headers
            .iter()
            .enumerate()
            .map(|(i, h)| HeaderMatch::compile(h, &format!("headers[{i}]")))
            .collect::<Result<_, _>>()?;
        Ok(Fault {
            delay,
            abort,
            abort_body,
            headers,
        })
    }

    /// Whether the fault considers `req` at all (its header conditions hold).
    pub(crate) fn applies(&self, req: &RequestView<'_>) -> bool {
        self.headers.iter().all(|h| h.matches(req))
    }

    /// The fault as text, for the config dump.
    pub(crate) fn describe(&self) -> String {
        let mut parts = Vec::new();
        if let Some((d, share)) = &self.delay {
            parts.push(format!("delay {d:?} for {share}"));
        }
        if let Some((a, share)) = &self.abort {
            parts.push(match a {
                Abort::Http(s) => format!("abort {} for {share}", s.as_u16()),
                Abort::Grpc(c) => format!("abort grpc-status {c} for {share}"),
            });
        }
        parts.extend(
            self.headers
                .iter()
                .map(|h| format!("when {}", h.describe())),
        );
        format!("fault: {}", parts.join(", "))
    }
}

/// Envoy's fault percentage; none when not set (Envoy reads an unset share as 0%).
fn share(
    p: Option<&envoy_types::pb::envoy::r#type::v3::FractionalPercent>,
    field: &str,
) -> Result<Fraction, FieldError> {
    p.map_or(Ok(Fraction::NONE), |p| {
        Fraction::compile(p).map_err(|e| e.at(format!("{field}.percentage")))
    })
}

#[cfg(test)]
mod tests {
    use envoy_types::pb::envoy::config::route::v3::HeaderMatcher;
    use envoy_types::pb::envoy::config::route::v3::header_matcher::HeaderMatchSpecifier;
    use envoy_types::pb::envoy::extensions::filters::common::fault::v3::FaultDelay;
    use envoy_types::pb::envoy::extensions::filters::http::fault::v3::FaultAbort;
    use envoy_types::pb::envoy::r#type::v3::FractionalPercent;
    use envoy_types::pb::google::protobuf::Duration as PbDuration;

    use super::*;

    fn percent(numerator: u32) -> Option<FractionalPercent> {
        Some(FractionalPercent {
            numerator,
            denominator: 0,
        })
    }

    #[test]
    fn delays_aborts_shares_and_header_conditions_compile() {
        let fault = Fault::compile(&HttpFault {
            delay: Some(FaultDelay {
                percentage: percent(10),
                fault_delay_secifier: Some(FaultDelaySecifier::FixedDelay(PbDuration {
                    seconds: 0,
                    nanos: 100_000_000,
                })),
            }),
            abort: Some(FaultAbort {
                percentage: None,
                error_type: Some(ErrorType::GrpcStatus(14)),
                ..FaultAbort::default()
            }),
            headers: vec![HeaderMatcher {
                name: "x-chaos".into(),
                header_match_specifier: Some(HeaderMatchSpecifier::PresentMatch(true)),
                ..HeaderMatcher::default()
            }],
            ..HttpFault::default()
        })
        .unwrap();
        let (delay, share) = fault.delay.unwrap();
        assert_eq!(delay, Duration::from_millis(100));
        assert_eq!(share.to_string(), "10/100");
        assert_eq!(
            fault.abort,
            Some((Abort::Grpc(14), Fraction::NONE)),
            "unset share: 0%"
        );
        assert_eq!(fault.abort_body, "fault filter abort");
        let with = http::Request::get("/")
            .header("x-chaos", "1")
            .body(())
            .unwrap();
        let without = http::Request::get("/").body(()).unwrap();
        assert!(fault.applies(&RequestView::new(&with)));
        assert!(!fault.applies(&RequestView::new(&without)));

        let e = Fault::compile(&HttpFault {
            abort: Some(FaultAbort {
                error_type: Some(ErrorType::HttpStatus(99)),
                ..FaultAbort::default()
            }),
            ..HttpFault::default()
        })
        .unwrap_err();
        assert_eq!(e.to_string(), "abort.http_status: 99 is not in [200, 600)");
    }
}
