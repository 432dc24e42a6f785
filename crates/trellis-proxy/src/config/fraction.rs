//! Envoy's `FractionalPercent`: a share of requests (mirrors, faults, rate-limit enforcement),
//! drawn at random per request.

use envoy_types::pb::envoy::r#type::v3::FractionalPercent;
use envoy_types::pb::envoy::r#type::v3::fractional_percent::DenominatorType;

use super::FieldError;

/// A share of requests: `numerator` out of `denominator`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Fraction {
    /// Requests selected per `denominator`.
    pub(crate) numerator: u32,
    /// 100, 10 000 or 1 000 000.
    pub(crate) denominator: u32,
}

impl Fraction {
    /// No request.
    pub(crate) const NONE: Fraction = Fraction {
        numerator: 0,
        denominator: 100,
    };

    /// Compiles `p` (a numerator above the denominator means every request, as in Envoy).
    pub(crate) fn compile(p: &FractionalPercent) -> Result<Fraction, FieldError> {
        let denominator = match DenominatorType::try_from(p.denominator) {
            Ok(DenominatorType::Hundred) => 100,
            Ok(DenominatorType::TenThousand) => 10_000,
            Ok(DenominatorType::Million) => 1_000_000,
            Err(_) => {
                return Err(FieldError::new(
                    "denominator",
                    format!("unknown denominator {}", p.denominator),
                ));
            }
        };
        Ok(Fraction {
            numerator: p.numerator.min(denominator),
            denominator,
        })
    }

    /// Whether this request is in the share (a random draw).
    pub(crate) fn sampled(self) -> bool {
        self.numerator >= self.denominator
            || rand::random_range(0..self.denominator) < self.numerator
    }
}

impl std::fmt::Display for Fraction {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.numerator, self.denominator)
    }
}
