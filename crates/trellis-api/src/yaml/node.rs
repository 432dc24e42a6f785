//! The located node tree: every scalar, sequence, mapping and mapping key keeps the line and
//! column where it starts in its file.

use super::path::{FieldPath, Seg};

/// A 1-based line and column in a file.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Pos {
    /// 1-based line.
    pub(crate) line: usize,
    /// 1-based column.
    pub(crate) column: usize,
}

/// A YAML node and where it starts.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Node {
    /// Where the node's content starts (for a block collection: its first entry).
    pub(crate) pos: Pos,
    /// The content.
    pub(crate) value: Value,
}

/// The content of a [`Node`].
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Value {
    /// A scalar's text after escape processing; `plain` when it was unquoted (and untagged), so
    /// that YAML's core schema (null, booleans, numbers) applies to it.
    Scalar { text: String, plain: bool },
    /// A sequence.
    Seq(Vec<Node>),
    /// A mapping, in source order, with unique keys.
    Map(Vec<Entry>),
}

/// One key/value pair of a mapping.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Entry {
    /// The key's text.
    pub(crate) key: String,
    /// Where the key starts.
    pub(crate) key_pos: Pos,
    /// The value.
    pub(crate) value: Node,
}

/// Plain scalars that YAML's core schema reads as null.
pub(crate) fn is_null_text(text: &str) -> bool {
    matches!(text, "" | "~" | "null" | "Null" | "NULL")
}

impl Node {
    /// Whether this is a null (`~`, `null` or nothing at all).
    pub(crate) fn is_null(&self) -> bool {
        matches!(&self.value, Value::Scalar { text, plain: true } if is_null_text(text))
    }

    /// The value of `key` when this is a mapping that has it.
    pub(crate) fn get(&self, key: &str) -> Option<&Node> {
        match &self.value {
            Value::Map(entries) => entries.iter().find(|e| e.key == key).map(|e| &e.value),
            _ => None,
        }
    }

    /// The text of a non-null scalar.
    pub(crate) fn as_str(&self) -> Option<&str> {
        match &self.value {
            Value::Scalar { text, .. } if !self.is_null() => Some(text),
            _ => None,
        }
    }

    /// The number of nodes in this tree, counting mapping keys.
    pub(crate) fn size(&self) -> usize {
        1 + match &self.value {
            Value::Scalar { .. } => 0,
            Value::Seq(items) => items.iter().map(Node::size).sum(),
            Value::Map(entries) => entries.iter().map(|e| 1 + e.value.size()).sum(),
        }
    }

    /// The position of the node at `path`, or of its deepest ancestor that exists when the
    /// path leads to a field that was left out (and so took its default).
    pub(crate) fn locate(&self, path: &FieldPath) -> Pos {
        let mut node = self;
        for seg in path.segments() {
            let next = match (seg, &node.value) {
                (Seg::Key(k), Value::Map(_)) => node.get(k),
                (Seg::Index(i), Value::Seq(items)) => items.get(*i),
                _ => None,
            };
            match next {
                Some(n) => node = n,
                None => break,
            }
        }
        node.pos
    }
}
