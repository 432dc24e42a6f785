//! Object metadata shared by every resource (`metadata:`), and Kubernetes name rules.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::validate::Validator;
use crate::yaml::FieldPath;

/// The namespace of a resource that does not name one.
pub const DEFAULT_NAMESPACE: &str = "default";

fn default_namespace() -> String {
    DEFAULT_NAMESPACE.to_owned()
}

/// A resource's `metadata`: its name, namespace and labels.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Meta {
    /// The resource name, unique per kind and namespace.
    pub name: String,
    /// The namespace; `default` when not given.
    #[serde(default = "default_namespace")]
    pub namespace: String,
    /// Labels, for selection; empty when not given.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// Annotations, kept for tools; Trellis does not interpret them.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}

impl Default for Meta {
    fn default() -> Self {
        Self::new("")
    }
}

impl Meta {
    /// Metadata with `name` in the default namespace and no labels.
    pub fn new(name: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            namespace: default_namespace(),
            labels: BTreeMap::new(),
            annotations: BTreeMap::new(),
        }
    }

    /// The same metadata in `namespace`.
    pub fn in_namespace(mut self, namespace: impl Into<String>) -> Self {
        self.namespace = namespace.into();
        self
    }

    /// `name.namespace`, the resource's unique key within its kind (and its mesh host name
    /// prefix for a Service).
    pub fn key(&self) -> String {
        format!("{}.{}", self.name, self.namespace)
    }
}

/// Whether `s` is a DNS-1123 label: 1 to 63 lower-case letters, digits and `-`, starting and
/// ending with a letter or digit.
pub fn is_dns_label(s: &str) -> bool {
    let edge_ok = |c: Option<char>| c.is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit());
    (1..=63).contains(&s.len())
        && s.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        && edge_ok(s.chars().next())
        && edge_ok(s.chars().last())
}

/// Whether `s` is a DNS-1123 subdomain: at most 253 characters of dot-separated labels.
pub fn is_dns_subdomain(s: &str) -> bool {
    s.len() <= 253 && s.split('.').all(is_dns_label)
}

/// Checks the name and namespace; Service names must be DNS labels because they become host
/// names, other kinds allow DNS subdomains.
pub(crate) fn validate(meta: &Meta, name_is_label: bool, v: &mut Validator<'_>) {
    let path = FieldPath::root().key("metadata");
    if name_is_label && !is_dns_label(&meta.name) {
        v.error(
            &path.key("name"),
            format!(
                "expected a DNS label (lower-case letters, digits and '-', at most 63), found `{}`",
                meta.name
            ),
        );
    } else if !is_dns_subdomain(&meta.name) {
        v.error(
            &path.key("name"),
            format!(
                "expected a DNS subdomain (lower-case letters, digits, '-' and '.'), found `{}`",
                meta.name
            ),
        );
    }
    if !is_dns_label(&meta.namespace) {
        v.error(
            &path.key("namespace"),
            format!(
                "expected a DNS label (lower-case letters, digits and '-', at most 63), found `{}`",
                meta.namespace
            ),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dns_names() {
        for ok in ["a", "web", "catalog-v1", "0abc"] {
            assert!(is_dns_label(ok), "{ok}");
        }
        for bad in ["", "-a", "a-", "Web", "a.b", "a_b", &"a".repeat(64)] {
            assert!(!is_dns_label(bad), "{bad}");
        }
        assert!(is_dns_subdomain("a.b-c.d"));
        assert!(!is_dns_subdomain("a..b"));
    }

    #[test]
    fn key_is_name_dot_namespace() {
        assert_eq!(Meta::new("web").key(), "web.default");
        assert_eq!(Meta::new("web").in_namespace("shop").key(), "web.shop");
    }
}
