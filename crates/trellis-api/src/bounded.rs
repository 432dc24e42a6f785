//! Serde readers for numbers with a documented range, so that an out-of-range value is
//! reported as "expected an integer between MIN and MAX, found N" (or the percentage's range)
//! at the value's position.

use std::fmt;

use serde::Deserializer;
use serde::de::{self, Visitor};

struct Bounded {
    min: i64,
    max: i64,
}

impl Visitor<'_> for Bounded {
    type Value = i64;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "an integer between {} and {}", self.min, self.max)
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<i64, E> {
        if (self.min..=self.max).contains(&v) {
            Ok(v)
        } else {
            Err(E::custom(format!(
                "expected an integer between {} and {}, found {v}",
                self.min, self.max
            )))
        }
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<i64, E> {
        match i64::try_from(v) {
            Ok(v) => self.visit_i64(v),
            Err(_) => Err(E::custom(format!(
                "expected an integer between {} and {}, found {v}",
                self.min, self.max
            ))),
        }
    }
}

fn read<'de, D: Deserializer<'de>>(d: D, min: i64, max: i64) -> Result<i64, D::Error> {
    d.deserialize_i64(Bounded { min, max })
}

/// Converts a value already checked to lie in the target type's range.
fn narrow<T: TryFrom<i64>, E: de::Error>(v: i64) -> Result<T, E> {
    T::try_from(v).map_err(|_| E::custom(format!("{v} is out of range")))
}

/// A port: 1 to 65535.
pub(crate) fn port<'de, D: Deserializer<'de>>(d: D) -> Result<u16, D::Error> {
    narrow(read(d, 1, 65535)?)
}

/// An optional port: 1 to 65535 when given.
pub(crate) fn option_port<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u16>, D::Error> {
    struct Port(u16);
    impl<'de> de::Deserialize<'de> for Port {
        fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            port(d).map(Port)
        }
    }
    Ok(<Option<Port> as de::Deserialize>::deserialize(d)?.map(|p| p.0))
}

/// A route backend weight: 0 to 1,000,000 (Gateway API).
pub(crate) fn backend_weight<'de, D: Deserializer<'de>>(d: D) -> Result<u32, D::Error> {
    narrow(read(d, 0, 1_000_000)?)
}

/// An optional percentage: 0 to 100 when given.
pub(crate) fn option_percent<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u32>, D::Error> {
    struct Percent(u32);
    impl<'de> de::Deserialize<'de> for Percent {
        fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            Ok(Percent(narrow(read(d, 0, 100)?)?))
        }
    }
    Ok(<Option<Percent> as de::Deserialize>::deserialize(d)?.map(|p| p.0))
}

/// HTTP statuses a route retries: each 400 to 599 (Gateway API `HTTPRouteRetryStatusCode`).
pub(crate) fn retry_statuses<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u16>, D::Error> {
    struct Status(u16);
    impl<'de> de::Deserialize<'de> for Status {
        fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            Ok(Status(narrow(read(d, 400, 599)?)?))
        }
    }
    Ok(<Vec<Status> as de::Deserialize>::deserialize(d)?
        .into_iter()
        .map(|s| s.0)
        .collect())
}

/// A route's retries of one request: 0 to 10.
pub(crate) fn retry_attempts<'de, D: Deserializer<'de>>(d: D) -> Result<u32, D::Error> {
    narrow(read(d, 0, 10)?)
}

/// A count that is not negative: 0 to 2^32-1.
pub(crate) fn count<'de, D: Deserializer<'de>>(d: D) -> Result<u32, D::Error> {
    narrow(read(d, 0, i64::from(u32::MAX))?)
}

/// A percentage as a number (integers included): above 0 or from 0, and at most 100.
struct Percentage {
    zero_allowed: bool,
}

impl Percentage {
    fn describe(&self) -> &'static str {
        if self.zero_allowed {
            "a percentage between 0 and 100"
        } else {
            "a percentage above 0 and at most 100"
        }
    }
}

impl Visitor<'_> for Percentage {
    type Value = f64;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.describe())
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<f64, E> {
        // Written so that NaN fails too.
        let above_min = v > 0.0 || (self.zero_allowed && v == 0.0);
        if above_min && v <= 100.0 {
            Ok(v)
        } else {
            Err(E::custom(format!(
                "expected {}, found {v}",
                self.describe()
            )))
        }
    }

    // The casts are exact for every value in range; one out of range fails either way.
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<f64, E> {
        self.visit_f64(v as f64)
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<f64, E> {
        self.visit_f64(v as f64)
    }
}

/// A retry budget's share of active requests: a number above 0 and at most 100.
pub(crate) fn budget_percent<'de, D: Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
    d.deserialize_f64(Percentage {
        zero_allowed: false,
    })
}

/// A share of requests as a number: 0 to 100, fractions allowed.
pub(crate) fn share_percent<'de, D: Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
    d.deserialize_f64(Percentage { zero_allowed: true })
}

/// The default share: every request.
pub(crate) fn hundred_percent() -> f64 {
    100.0
}

/// An optional HTTP status an injected abort answers with: 200 to 599 when given.
pub(crate) fn option_abort_status<'de, D: Deserializer<'de>>(
    d: D,
) -> Result<Option<u16>, D::Error> {
    struct Status(u16);
    impl<'de> de::Deserialize<'de> for Status {
        fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            Ok(Status(narrow(read(d, 200, 599)?)?))
        }
    }
    Ok(<Option<Status> as de::Deserialize>::deserialize(d)?.map(|s| s.0))
}

/// A positive count: 1 to 2^32-1.
pub(crate) fn positive_count<'de, D: Deserializer<'de>>(d: D) -> Result<u32, D::Error> {
    narrow(read(d, 1, i64::from(u32::MAX))?)
}

/// An optional positive count: 1 to 2^32-1 when given.
pub(crate) fn option_positive_count<'de, D: Deserializer<'de>>(
    d: D,
) -> Result<Option<u32>, D::Error> {
    struct Count(u32);
    impl<'de> de::Deserialize<'de> for Count {
        fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            positive_count(d).map(Count)
        }
    }
    Ok(<Option<Count> as de::Deserialize>::deserialize(d)?.map(|c| c.0))
}

/// A fraction's numerator: 0 to 2^31-1 (Gateway API's non-negative int32).
pub(crate) fn numerator<'de, D: Deserializer<'de>>(d: D) -> Result<u32, D::Error> {
    narrow(read(d, 0, i64::from(i32::MAX))?)
}

/// A fraction's denominator: 1 to 2^31-1 (Gateway API's positive int32).
pub(crate) fn denominator<'de, D: Deserializer<'de>>(d: D) -> Result<u32, D::Error> {
    narrow(read(d, 1, i64::from(i32::MAX))?)
}

/// The redirect status codes Gateway API allows.
const REDIRECT_STATUSES: [u16; 5] = [301, 302, 303, 307, 308];

struct RedirectStatus;

impl Visitor<'_> for RedirectStatus {
    type Value = u16;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("one of 301, 302, 303, 307, 308")
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<u16, E> {
        match u64::try_from(v) {
            Ok(v) => self.visit_u64(v),
            Err(_) => Err(E::custom(format!(
                "expected one of 301, 302, 303, 307, 308, found {v}"
            ))),
        }
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<u16, E> {
        match u16::try_from(v) {
            Ok(code) if REDIRECT_STATUSES.contains(&code) => Ok(code),
            _ => Err(E::custom(format!(
                "expected one of 301, 302, 303, 307, 308, found {v}"
            ))),
        }
    }
}

/// A redirect status code: 301, 302, 303, 307 or 308.
pub(crate) fn redirect_status<'de, D: Deserializer<'de>>(d: D) -> Result<u16, D::Error> {
    d.deserialize_i64(RedirectStatus)
}

/// The default redirect status: 302 Found.
pub(crate) fn found() -> u16 {
    302
}

/// The default fraction denominator: 100 (a percentage).
pub(crate) fn hundred() -> u32 {
    100
}

/// A static endpoint weight: 1 to 128 (Envoy's load-balancing weight range in Trellis).
pub(crate) fn endpoint_weight<'de, D: Deserializer<'de>>(d: D) -> Result<u32, D::Error> {
    narrow(read(d, 1, 128)?)
}

/// The default weight of backends and endpoints.
pub(crate) fn one() -> u32 {
    1
}

/// Reads an optional integer in `min..=max`, null meaning not given.
struct OptionIn {
    min: i64,
    max: i64,
}

impl<'de> Visitor<'de> for OptionIn {
    type Value = Option<i64>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "an integer between {} and {}", self.min, self.max)
    }

    fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(None)
    }

    fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(None)
    }

    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        read(d, self.min, self.max).map(Some)
    }
}

fn option_in<'de, D: Deserializer<'de>, T: TryFrom<i64>>(
    d: D,
    min: i64,
    max: i64,
) -> Result<Option<T>, D::Error> {
    d.deserialize_option(OptionIn { min, max })?
        .map(narrow)
        .transpose()
}

/// A percentage as a whole number: 0 to 100.
pub(crate) fn percent<'de, D: Deserializer<'de>>(d: D) -> Result<u32, D::Error> {
    narrow(read(d, 0, 100)?)
}

/// The largest hash ring Envoy builds (and Trellis allows): 8M entries.
const MAX_RING_SIZE: i64 = 8 * 1024 * 1024;

/// An optional hash ring size: 1 to 8,388,608 when given.
pub(crate) fn option_ring_size<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    option_in(d, 1, MAX_RING_SIZE)
}

/// The largest Maglev table Envoy builds: 5,000,011 entries (a prime).
const MAX_MAGLEV_TABLE_SIZE: i64 = 5_000_011;

/// An optional Maglev table size: 2 to 5,000,011 when given (validation checks it is prime).
pub(crate) fn option_table_size<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    option_in(d, 2, MAX_MAGLEV_TABLE_SIZE)
}
