//! Header mutations (`*_headers_to_add` / `*_headers_to_remove` of routes and weighted
//! clusters), compiled once and applied with Envoy's order: removals first, then additions.

use envoy_types::pb::envoy::config::core::v3::HeaderValueOption;
use envoy_types::pb::envoy::config::core::v3::header_value_option::HeaderAppendAction;
use http::{HeaderMap, HeaderName, HeaderValue};

use crate::config::FieldError;

/// What an added header does when the header is already present.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Append {
    /// Another value is appended (Envoy's `APPEND_IF_EXISTS_OR_ADD`).
    Another,
    /// Added only when absent.
    IfAbsent,
    /// Replaces existing values, or is added.
    Overwrite,
    /// Replaces existing values; nothing happens when absent.
    OverwriteIfExists,
}

/// The header changes of one level (weighted cluster or route) and one direction.
#[derive(Debug, Default)]
pub(crate) struct HeaderMutations {
    remove: Vec<HeaderName>,
    add: Vec<(HeaderName, HeaderValue, Append)>,
}

impl HeaderMutations {
    /// Compiles `add` and `remove` (fields named `{prefix}_headers_to_add` and
    /// `{prefix}_headers_to_remove`). Pseudo-headers and `host` cannot be changed this way, and
    /// Envoy's `%COMMAND%` substitutions are not supported (`%%` is a literal `%`).
    pub(crate) fn compile(
        add: &[HeaderValueOption],
        remove: &[String],
        prefix: &str,
    ) -> Result<Self, FieldError> {
        let remove = remove
            .iter()
            .enumerate()
            .map(|(i, name)| {
                header_name(name).map_err(|e| e.at(format!("{prefix}_headers_to_remove[{i}]")))
            })
            .collect::<Result<_, _>>()?;
        let mut out = Self {
            remove,
            add: Vec::with_capacity(add.len()),
        };
        for (i, option) in add.iter().enumerate() {
            let field = format!("{prefix}_headers_to_add[{i}]");
            if let Some(added) = compile_option(option).map_err(|e| e.at(&field))? {
                out.add.push(added);
            }
        }
        Ok(out)
    }

    /// Applies the changes to `headers`.
    pub(crate) fn apply(&self, headers: &mut HeaderMap) {
        for name in &self.remove {
            headers.remove(name);
        }
        for (name, value, append) in &self.add {
            match append {
                Append::Another => {
                    headers.append(name.clone(), value.clone());
                }
                Append::IfAbsent => {
                    if !headers.contains_key(name) {
                        headers.insert(name.clone(), value.clone());
                    }
                }
                Append::Overwrite => {
                    headers.insert(name.clone(), value.clone());
                }
                Append::OverwriteIfExists => {
                    if headers.contains_key(name) {
                        headers.insert(name.clone(), value.clone());
                    }
                }
            }
        }
    }

    /// The changes as text, for the config dump.
    pub(crate) fn describe(&self) -> Vec<String> {
        let removed = self.remove.iter().map(|n| format!("remove {n}"));
        let added = self.add.iter().map(|(n, v, append)| {
            let verb = match append {
                Append::Another => "append",
                Append::IfAbsent => "add_if_absent",
                Append::Overwrite => "set",
                Append::OverwriteIfExists => "overwrite_if_exists",
            };
            format!("{verb} {n}: {}", String::from_utf8_lossy(v.as_bytes()))
        });
        removed.chain(added).collect()
    }
}

#[allow(deprecated)]
fn compile_option(
    option: &HeaderValueOption,
) -> Result<Option<(HeaderName, HeaderValue, Append)>, FieldError> {
    let header = option
        .header
        .as_ref()
        .ok_or_else(|| FieldError::new("header", "is required"))?;
    let name = header_name(&header.key).map_err(|e| e.at("header.key"))?;
    let raw = if header.raw_value.is_empty() {
        header.value.as_bytes()
    } else {
        &header.raw_value[..]
    };
    let value = unescape(raw).map_err(|e| e.at("header.value"))?;
    let append = match (
        option.append.as_ref().map(|b| b.value),
        option.append_action,
    ) {
        (Some(true), _) => Append::Another,
        (Some(false), _) => Append::Overwrite,
        (None, a) => match HeaderAppendAction::try_from(a) {
            Ok(HeaderAppendAction::AppendIfExistsOrAdd) => Append::Another,
            Ok(HeaderAppendAction::AddIfAbsent) => Append::IfAbsent,
            Ok(HeaderAppendAction::OverwriteIfExistsOrAdd) => Append::Overwrite,
            Ok(HeaderAppendAction::OverwriteIfExists) => Append::OverwriteIfExists,
            Err(_) => {
                return Err(FieldError::new(
                    "append_action",
                    format!("unknown action {a}"),
                ));
            }
        },
    };
    if value.is_empty() && !option.keep_empty_value {
        // Envoy drops an added header whose value is empty unless asked to keep it.
        return Ok(None);
    }
    Ok(Some((name, value, append)))
}

fn header_name(name: &str) -> Result<HeaderName, FieldError> {
    if name.starts_with(':') || name.eq_ignore_ascii_case("host") {
        return Err(FieldError::message(format!(
            "{name:?}: pseudo-headers and host cannot be changed by header mutations"
        )));
    }
    HeaderName::from_bytes(name.as_bytes())
        .map_err(|_| FieldError::message(format!("{name:?} is not a valid header name")))
}

/// Envoy header values are format strings: `%%` is a literal `%`; any other `%` starts a
/// substitution command, which the proxy does not support.
fn unescape(raw: &[u8]) -> Result<HeaderValue, FieldError> {
    let mut out = Vec::with_capacity(raw.len());
    let mut bytes = raw.iter().copied();
    while let Some(b) = bytes.next() {
        if b == b'%' && bytes.next() != Some(b'%') {
            return Err(FieldError::message(
                "substitution commands (%COMMAND%) are not supported; write %% for a literal %",
            ));
        }
        out.push(b);
    }
    HeaderValue::from_bytes(&out)
        .map_err(|_| FieldError::message("not a valid header value (control characters?)"))
}

#[cfg(test)]
mod tests {
    use envoy_types::pb::envoy::config::core::v3::HeaderValue as PbHeaderValue;

    use super::*;

    fn option(key: &str, value: &str, action: HeaderAppendAction) -> HeaderValueOption {
        HeaderValueOption {
            header: Some(PbHeaderValue {
                key: key.to_owned(),
                value: value.to_owned(),
                ..PbHeaderValue::default()
            }),
            append_action: action as i32,
            ..HeaderValueOption::default()
        }
    }

    #[test]
    fn removals_come_before_additions_and_each_action_does_what_envoy_does() {
        let m = HeaderMutations::compile(
            &[
                option("x-set", "new", HeaderAppendAction::OverwriteIfExistsOrAdd),
                option("x-add", "two", HeaderAppendAction::AppendIfExistsOrAdd),
                option("x-absent", "no", HeaderAppendAction::AddIfAbsent),
                option("x-fresh", "yes", HeaderAppendAction::AddIfAbsent),
                option("x-missing", "no", HeaderAppendAction::OverwriteIfExists),
                option("x-gone", "back", HeaderAppendAction::AppendIfExistsOrAdd),
                option(
                    "x-pct",
                    "100%% sure",
                    HeaderAppendAction::OverwriteIfExistsOrAdd,
                ),
                option("x-empty", "", HeaderAppendAction::OverwriteIfExistsOrAdd),
            ],
            &["x-gone".to_owned()],
            "request",
        )
        .unwrap();
        let mut h = HeaderMap::new();
        h.insert("x-set", HeaderValue::from_static("old"));
        h.append("x-set", HeaderValue::from_static("older"));
        h.insert("x-add", HeaderValue::from_static("one"));
        h.insert("x-absent", HeaderValue::from_static("kept"));
        h.insert("x-gone", HeaderValue::from_static("bye"));
        m.apply(&mut h);
        let all = |name: &str| -> Vec<&str> {
            h.get_all(name)
                .iter()
                .map(|v| v.to_str().unwrap())
                .collect()
        };
        assert_eq!(all("x-set"), ["new"]);
        assert_eq!(all("x-add"), ["one", "two"]);
        assert_eq!(all("x-absent"), ["kept"]);
        assert_eq!(all("x-fresh"), ["yes"]);
        assert!(all("x-missing").is_empty());
        assert_eq!(all("x-gone"), ["back"], "removed, then added");
        assert_eq!(all("x-pct"), ["100% sure"]);
        assert!(all("x-empty").is_empty(), "empty values are dropped");
    }

    #[test]
    fn commands_pseudo_headers_and_host_are_refused_with_the_field() {
        let cases = [
            (
                option("x-a", "%REQ(x)%", HeaderAppendAction::AppendIfExistsOrAdd),
                "request_headers_to_add[0].header.value",
            ),
            (
                option(":path", "/x", HeaderAppendAction::AppendIfExistsOrAdd),
                "request_headers_to_add[0].header.key",
            ),
            (
                option("Host", "x", HeaderAppendAction::AppendIfExistsOrAdd),
                "request_headers_to_add[0].header.key",
            ),
        ];
        for (bad, field) in cases {
            let e = HeaderMutations::compile(&[bad], &[], "request").unwrap_err();
            assert!(e.to_string().starts_with(field), "{e}");
        }
        let e = HeaderMutations::compile(&[], &["bad name".to_owned()], "response").unwrap_err();
        assert!(
            e.to_string().starts_with("response_headers_to_remove[0]"),
            "{e}"
        );
    }
}
