//! String, header and query-parameter matchers (Envoy `StringMatcher`, `HeaderMatcher`,
//! `QueryParameterMatcher`), compiled once with their regexes, and the request view they match.

use std::borrow::Cow;

use envoy_types::pb::envoy::config::route::v3::header_matcher::HeaderMatchSpecifier;
use envoy_types::pb::envoy::config::route::v3::query_parameter_matcher::QueryParameterMatchSpecifier;
use envoy_types::pb::envoy::config::route::v3::{HeaderMatcher, QueryParameterMatcher};
use envoy_types::pb::envoy::r#type::matcher::v3::string_matcher::MatchPattern;
use envoy_types::pb::envoy::r#type::matcher::v3::{RegexMatcher, StringMatcher};
use http::{HeaderMap, HeaderName, Method};
use regex::Regex;

use super::FieldError;

/// The parts of a request that routing looks at, borrowed from it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct RequestView<'a> {
    /// Request method.
    pub(crate) method: &'a Method,
    /// Path without the query.
    pub(crate) path: &'a str,
    /// Path with the query, as in `:path`.
    pub(crate) path_and_query: &'a str,
    /// Raw query string, without `?`.
    pub(crate) query: Option<&'a str>,
    /// `:authority` or `Host`, as sent (port included if any).
    pub(crate) authority: &'a str,
    /// Request headers.
    pub(crate) headers: &'a HeaderMap,
}

impl<'a> RequestView<'a> {
    /// Borrows the routing inputs of `req`. The authority comes from the URI (h2, absolute
    /// form) or else from `Host`.
    pub(crate) fn new<B>(req: &'a http::Request<B>) -> Self {
        let uri = req.uri();
        let authority = uri
            .authority()
            .map(|a| a.as_str())
            .or_else(|| {
                req.headers()
                    .get(http::header::HOST)
                    .and_then(|h| h.to_str().ok())
            })
            .unwrap_or("");
        Self {
            method: req.method(),
            path: uri.path(),
            path_and_query: uri.path_and_query().map_or("/", |pq| pq.as_str()),
            query: uri.query(),
            authority,
            headers: req.headers(),
        }
    }

    /// Whether this is a gRPC request (`content-type: application/grpc[+proto|...]`).
    pub(crate) fn is_grpc(&self) -> bool {
        self.headers
            .get(http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|ct| {
                ct.strip_prefix("application/grpc")
                    .is_some_and(|rest| rest.is_empty() || rest.starts_with(['+', ';']))
            })
    }
}

/// Compiles an Envoy `RegexMatcher` into a full-match regex (RE2 semantics: the whole value).
pub(crate) fn full_regex(m: &RegexMatcher, field: &str) -> Result<Regex, FieldError> {
    Regex::new(&format!("^(?:{})$", m.regex))
        .map_err(|e| FieldError::new(format!("{field}.regex"), format!("invalid regex: {e}")))
}

/// A compiled `StringMatcher`.
#[derive(Debug)]
pub(crate) enum StringMatch {
    /// Whole value equals; the flag is `ignore_case`.
    Exact(String, bool),
    /// Value starts with.
    Prefix(String, bool),
    /// Value ends with.
    Suffix(String, bool),
    /// Value contains.
    Contains(String, bool),
    /// Whole value matches the regex.
    Regex(Regex),
}

impl StringMatch {
    /// Compiles `m`, naming `field` on error.
    pub(crate) fn compile(m: &StringMatcher, field: &str) -> Result<Self, FieldError> {
        let ic = m.ignore_case;
        Ok(match &m.match_pattern {
            Some(MatchPattern::Exact(s)) => StringMatch::Exact(s.clone(), ic),
            Some(MatchPattern::Prefix(s)) => StringMatch::Prefix(s.clone(), ic),
            Some(MatchPattern::Suffix(s)) => StringMatch::Suffix(s.clone(), ic),
            Some(MatchPattern::Contains(s)) => StringMatch::Contains(s.clone(), ic),
            Some(MatchPattern::SafeRegex(r)) => {
                StringMatch::Regex(full_regex(r, &format!("{field}.safe_regex"))?)
            }
            Some(MatchPattern::Custom(_)) => {
                return Err(FieldError::unsupported(&format!("{field}.custom")));
            }
            None => return Err(FieldError::new(field, "a match pattern is required")),
        })
    }

    /// Whether `value` matches.
    pub(crate) fn matches(&self, value: &str) -> bool {
        let v = value.as_bytes();
        match self {
            StringMatch::Exact(p, ic) => bytes_eq(v, p.as_bytes(), *ic),
            StringMatch::Prefix(p, ic) => {
                v.len() >= p.len() && bytes_eq(&v[..p.len()], p.as_bytes(), *ic)
            }
            StringMatch::Suffix(p, ic) => {
                v.len() >= p.len() && bytes_eq(&v[v.len() - p.len()..], p.as_bytes(), *ic)
            }
            StringMatch::Contains(p, ic) => {
                p.is_empty() || v.windows(p.len()).any(|w| bytes_eq(w, p.as_bytes(), *ic))
            }
            StringMatch::Regex(r) => r.is_match(value),
        }
    }

    /// The pattern, for the config dump.
    pub(crate) fn describe(&self) -> String {
        match self {
            StringMatch::Exact(p, _) => format!("exact:{p}"),
            StringMatch::Prefix(p, _) => format!("prefix:{p}"),
            StringMatch::Suffix(p, _) => format!("suffix:{p}"),
            StringMatch::Contains(p, _) => format!("contains:{p}"),
            StringMatch::Regex(r) => format!("regex:{}", r.as_str()),
        }
    }
}

fn bytes_eq(a: &[u8], b: &[u8], ignore_case: bool) -> bool {
    if ignore_case {
        a.eq_ignore_ascii_case(b)
    } else {
        a == b
    }
}

/// Which request attribute a header matcher reads.
#[derive(Debug)]
enum HeaderTarget {
    Method,
    Path,
    Authority,
    Scheme,
    Header(HeaderName),
}

#[derive(Debug)]
enum HeaderTest {
    Present(bool),
    String(StringMatch),
    Range(i64, i64),
}

/// A compiled `HeaderMatcher`; pseudo-headers `:method`, `:path`, `:authority` and `:scheme`
/// read the request line.
#[derive(Debug)]
pub(crate) struct HeaderMatch {
    name: String,
    target: HeaderTarget,
    test: HeaderTest,
    invert: bool,
    missing_as_empty: bool,
}

impl HeaderMatch {
    /// Compiles `m`, naming `field` on error.
    pub(crate) fn compile(m: &HeaderMatcher, field: &str) -> Result<Self, FieldError> {
        let target = match m.name.as_str() {
            ":method" => HeaderTarget::Method,
            ":path" => HeaderTarget::Path,
            ":authority" | "host" => HeaderTarget::Authority,
            ":scheme" => HeaderTarget::Scheme,
            name => {
                HeaderTarget::Header(HeaderName::from_bytes(name.as_bytes()).map_err(|_| {
                    FieldError::new(
                        format!("{field}.name"),
                        format!("invalid header name {name:?}"),
                    )
                })?)
            }
        };
        let legacy = |pattern: MatchPattern| StringMatcher {
            ignore_case: false,
            match_pattern: Some(pattern),
        };
        #[allow(deprecated)]
        let test =
            match &m.header_match_specifier {
                Some(HeaderMatchSpecifier::PresentMatch(p)) => HeaderTest::Present(*p),
                Some(HeaderMatchSpecifier::StringMatch(s)) => {
                    HeaderTest::String(StringMatch::compile(s, &format!("{field}.string_match"))?)
                }
                Some(HeaderMatchSpecifier::ExactMatch(s)) => HeaderTest::String(
                    StringMatch::compile(&legacy(MatchPattern::Exact(s.clone())), field)?,
                ),
                Some(HeaderMatchSpecifier::PrefixMatch(s)) => HeaderTest::String(
                    StringMatch::compile(&legacy(MatchPattern::Prefix(s.clone())), field)?,
                ),
                Some(HeaderMatchSpecifier::SuffixMatch(s)) => HeaderTest::String(
                    StringMatch::compile(&legacy(MatchPattern::Suffix(s.clone())), field)?,
                ),
                Some(HeaderMatchSpecifier::ContainsMatch(s)) => HeaderTest::String(
                    StringMatch::compile(&legacy(MatchPattern::Contains(s.clone())), field)?,
                ),
                Some(HeaderMatchSpecifier::SafeRegexMatch(r)) => {
                    HeaderTest::String(StringMatch::Regex(full_regex(r, field)?))
                }
                Some(HeaderMatchSpecifier::RangeMatch(r)) => HeaderTest::Range(r.start, r.end),
                // Envoy: a matcher without a specifier checks presence.
                None => HeaderTest::Present(true),
            };
        Ok(Self {
            name: m.name.clone(),
            target,
            test,
            invert: m.invert_match,
            missing_as_empty: m.treat_missing_header_as_empty,
        })
    }

    /// Whether the request satisfies this matcher.
    pub(crate) fn matches(&self, req: &RequestView<'_>) -> bool {
        let value: Option<Cow<'_, str>> = match &self.target {
            HeaderTarget::Method => Some(Cow::Borrowed(req.method.as_str())),
            HeaderTarget::Path => Some(Cow::Borrowed(req.path_and_query)),
            HeaderTarget::Authority => Some(Cow::Borrowed(req.authority)),
            HeaderTarget::Scheme => Some(Cow::Borrowed("http")),
            HeaderTarget::Header(name) => header_value(req.headers, name),
        };
        let value = match value {
            Some(v) => v,
            None if self.missing_as_empty => Cow::Borrowed(""),
            None => {
                return match self.test {
                    // Absent: `present_match: false` holds, then `invert_match` flips it.
                    HeaderTest::Present(p) => p == self.invert,
                    _ => self.invert,
                };
            }
        };
        let hit = match &self.test {
            HeaderTest::Present(p) => *p,
            HeaderTest::String(s) => s.matches(&value),
            HeaderTest::Range(start, end) => value
                .parse::<i64>()
                .is_ok_and(|n| (*start..*end).contains(&n)),
        };
        hit != self.invert
    }

    /// The matcher as text, for the config dump.
    pub(crate) fn describe(&self) -> String {
        let test = match &self.test {
            HeaderTest::Present(p) => format!("present:{p}"),
            HeaderTest::String(s) => s.describe(),
            HeaderTest::Range(a, b) => format!("range:[{a},{b})"),
        };
        let not = if self.invert { "!" } else { "" };
        format!("{}: {not}{test}", self.name)
    }
}

/// All values of a header joined with `,` (Envoy's view of repeated headers); borrowed when there
/// is one value. Non-UTF-8 values count as absent.
fn header_value<'a>(headers: &'a HeaderMap, name: &HeaderName) -> Option<Cow<'a, str>> {
    let mut values = headers.get_all(name).iter();
    let first = values.next()?.to_str().ok()?;
    let mut joined: Option<String> = None;
    for v in values {
        let s = joined.get_or_insert_with(|| first.to_owned());
        s.push(',');
        s.push_str(v.to_str().ok()?);
    }
    Some(joined.map_or(Cow::Borrowed(first), Cow::Owned))
}

#[derive(Debug)]
enum QueryTest {
    Present,
    String(StringMatch),
}

/// A compiled `QueryParameterMatcher`; the first parameter with the name is tested, its value
/// percent-decoded.
#[derive(Debug)]
pub(crate) struct QueryMatch {
    name: String,
    test: QueryTest,
}

impl QueryMatch {
    /// Compiles `m`, naming `field` on error.
    pub(crate) fn compile(m: &QueryParameterMatcher, field: &str) -> Result<Self, FieldError> {
        if m.name.is_empty() {
            return Err(FieldError::new(
                format!("{field}.name"),
                "must not be empty",
            ));
        }
        let test = match &m.query_parameter_match_specifier {
            Some(QueryParameterMatchSpecifier::StringMatch(s)) => {
                QueryTest::String(StringMatch::compile(s, &format!("{field}.string_match"))?)
            }
            Some(QueryParameterMatchSpecifier::PresentMatch(true)) | None => QueryTest::Present,
            Some(QueryParameterMatchSpecifier::PresentMatch(false)) => {
                return Err(FieldError::new(
                    format!("{field}.present_match"),
                    "false is not supported",
                ));
            }
        };
        Ok(Self {
            name: m.name.clone(),
            test,
        })
    }

    /// Whether the request's query satisfies this matcher.
    pub(crate) fn matches(&self, req: &RequestView<'_>) -> bool {
        let Some(query) = req.query else {
            return false;
        };
        let value = query.split('&').find_map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            (percent_decode(k) == self.name).then_some(v)
        });
        match (value, &self.test) {
            (None, _) => false,
            (Some(_), QueryTest::Present) => true,
            (Some(v), QueryTest::String(s)) => s.matches(&percent_decode(v)),
        }
    }

    /// The matcher as text, for the config dump.
    pub(crate) fn describe(&self) -> String {
        match &self.test {
            QueryTest::Present => format!("{}: present", self.name),
            QueryTest::String(s) => format!("{}: {}", self.name, s.describe()),
        }
    }
}

/// Decodes `%XX` escapes and `+` (as space); borrows when there is nothing to decode.
pub(crate) fn percent_decode(s: &str) -> Cow<'_, str> {
    if !s.contains(['%', '+']) {
        return Cow::Borrowed(s);
    }
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => match (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                (Some(h), Some(l)) => {
                    out.push((h << 4) | l);
                    i += 2;
                }
                _ => out.push(b'%'),
            },
            b => out.push(b),
        }
        i += 1;
    }
    Cow::Owned(String::from_utf8_lossy(&out).into_owned())
}

fn hex(b: u8) -> Option<u8> {
    (b as char).to_digit(16).and_then(|d| u8::try_from(d).ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sm(pattern: MatchPattern, ignore_case: bool) -> StringMatch {
        let m = StringMatcher {
            ignore_case,
            match_pattern: Some(pattern),
        };
        StringMatch::compile(&m, "f").unwrap()
    }

    #[test]
    fn string_matchers() {
        assert!(sm(MatchPattern::Exact("Abc".into()), true).matches("aBC"));
        assert!(!sm(MatchPattern::Exact("Abc".into()), false).matches("aBC"));
        assert!(sm(MatchPattern::Prefix("/api".into()), false).matches("/api/x"));
        assert!(sm(MatchPattern::Suffix(".json".into()), false).matches("a.json"));
        assert!(sm(MatchPattern::Contains("mid".into()), true).matches("aMIDb"));
        let re = RegexMatcher {
            regex: "v[0-9]+".into(),
            engine_type: None,
        };
        let r = sm(MatchPattern::SafeRegex(re), false);
        assert!(r.matches("v12"));
        assert!(!r.matches("xv12"), "regex must match the whole value");
    }

    #[test]
    fn percent_decoding() {
        assert_eq!(percent_decode("a%20b+c"), "a b c");
        assert_eq!(percent_decode("100%"), "100%");
        assert_eq!(percent_decode("%zz"), "%zz");
        assert!(matches!(percent_decode("plain"), Cow::Borrowed(_)));
    }
}
