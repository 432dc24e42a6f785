//! Field paths such as `spec.rules[0].backendRefs[1].weight`, as shown to users.

use std::fmt;

/// One step of a [`FieldPath`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Seg {
    /// A mapping key (a field name as written in YAML).
    Key(String),
    /// A sequence index.
    Index(usize),
}

/// A path from a document's root to one of its nodes.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct FieldPath(Vec<Seg>);

impl FieldPath {
    /// The path of the document root.
    pub(crate) fn root() -> Self {
        Self::default()
    }

    /// This path extended by a mapping key.
    pub(crate) fn key(&self, key: &str) -> Self {
        let mut segs = self.0.clone();
        segs.push(Seg::Key(key.to_owned()));
        Self(segs)
    }

    /// This path extended by a sequence index.
    pub(crate) fn index(&self, index: usize) -> Self {
        let mut segs = self.0.clone();
        segs.push(Seg::Index(index));
        Self(segs)
    }

    /// The steps from the root.
    pub(crate) fn segments(&self) -> &[Seg] {
        &self.0
    }
}

/// Keys that are not plain identifiers (label keys like `app.kubernetes.io/name`) are shown
/// bracketed and quoted so that the path stays unambiguous.
fn is_plain_key(key: &str) -> bool {
    !key.is_empty()
        && key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
}

impl fmt::Display for FieldPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, seg) in self.0.iter().enumerate() {
            match seg {
                Seg::Key(k) if is_plain_key(k) => {
                    if i > 0 {
                        f.write_str(".")?;
                    }
                    f.write_str(k)?;
                }
                Seg::Key(k) => write!(f, "[{k:?}]")?,
                Seg::Index(n) => write!(f, "[{n}]")?,
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn displays_like_users_write_it() {
        let p = FieldPath::root()
            .key("spec")
            .key("rules")
            .index(0)
            .key("backendRefs")
            .index(1)
            .key("weight");
        assert_eq!(p.to_string(), "spec.rules[0].backendRefs[1].weight");
        let l = FieldPath::root()
            .key("metadata")
            .key("labels")
            .key("app.io/name");
        assert_eq!(l.to_string(), "metadata.labels[\"app.io/name\"]");
        assert_eq!(FieldPath::root().to_string(), "");
    }
}
