//! A serde deserializer over a located [`Node`]: every error it returns carries the position
//! and field path of the innermost node that failed, and messages say what was expected.

use std::fmt;

use serde::de::value::BorrowedStrDeserializer;
use serde::de::{self, DeserializeSeed, Deserializer, Expected, Unexpected, Visitor};

use super::node::{Entry, Node, Pos, Value};
use super::path::FieldPath;

/// A failure to read a typed value from a node.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
#[error("{message}")]
pub(crate) struct DeError {
    message: String,
    /// Set by the innermost node that saw the error.
    at: Option<(Pos, FieldPath)>,
    /// A required field that was absent; its name is appended to the path of the mapping.
    missing: Option<&'static str>,
}

impl DeError {
    fn new(message: String) -> Self {
        Self {
            message,
            at: None,
            missing: None,
        }
    }

    /// Records where the error happened unless a deeper node already did.
    fn at(mut self, pos: Pos, path: &FieldPath) -> Self {
        if self.at.is_none() {
            let path = match self.missing {
                Some(field) => path.key(field),
                None => path.clone(),
            };
            self.at = Some((pos, path));
        }
        self
    }

    /// Where the error is, its field path and its message.
    pub(crate) fn into_parts(self) -> (Pos, FieldPath, String) {
        let (pos, path) = self.at.unwrap_or_default();
        (pos, path, self.message)
    }
}

/// Describes a found value the way YAML users think of it.
fn found(unexp: &Unexpected<'_>) -> String {
    match unexp {
        Unexpected::Unit | Unexpected::Option => "null".into(),
        Unexpected::Str(s) => format!("string \"{s}\""),
        Unexpected::Seq => "a sequence".into(),
        Unexpected::Map => "a mapping".into(),
        Unexpected::Signed(n) => format!("integer {n}"),
        Unexpected::Unsigned(n) => format!("integer {n}"),
        Unexpected::Float(n) => format!("number {n}"),
        Unexpected::Bool(b) => format!("boolean {b}"),
        other => other.to_string(),
    }
}

/// The closest candidate within two edits, for "did you mean" hints.
fn closest<'a>(word: &str, candidates: &[&'a str]) -> Option<&'a str> {
    fn distance(a: &str, b: &str) -> usize {
        let b: Vec<char> = b.chars().collect();
        let mut row: Vec<usize> = (0..=b.len()).collect();
        for (i, ca) in a.chars().enumerate() {
            let mut prev = row[0];
            row[0] = i + 1;
            for (j, cb) in b.iter().enumerate() {
                let cur = row[j + 1];
                let cost = usize::from(!ca.eq_ignore_ascii_case(cb));
                row[j + 1] = (prev + cost).min(row[j] + 1).min(cur + 1);
                prev = cur;
            }
        }
        row[b.len()]
    }
    candidates
        .iter()
        .map(|c| (distance(word, c), *c))
        .filter(|(d, _)| *d <= 2)
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c)
}

impl de::Error for DeError {
    fn custom<T: fmt::Display>(msg: T) -> Self {
        Self::new(msg.to_string())
    }

    fn invalid_type(unexp: Unexpected<'_>, exp: &dyn Expected) -> Self {
        Self::new(format!("expected {exp}, found {}", found(&unexp)))
    }

    fn invalid_value(unexp: Unexpected<'_>, exp: &dyn Expected) -> Self {
        Self::new(format!("expected {exp}, found {}", found(&unexp)))
    }

    fn invalid_length(len: usize, exp: &dyn Expected) -> Self {
        Self::new(format!("expected {exp}, found {len} items"))
    }

    fn unknown_variant(variant: &str, expected: &'static [&'static str]) -> Self {
        Self::new(format!(
            "expected one of {}, found `{variant}`",
            expected.join(", ")
        ))
    }

    fn unknown_field(field: &str, expected: &'static [&'static str]) -> Self {
        if expected.is_empty() {
            return Self::new(format!(
                "unknown field `{field}`: this mapping takes no fields (write `{{}}`)"
            ));
        }
        let list: Vec<String> = expected.iter().map(|f| format!("`{f}`")).collect();
        let mut message = format!(
            "unknown field `{field}`, expected one of {}",
            list.join(", ")
        );
        if let Some(hint) = closest(field, expected) {
            message.push_str(&format!(" (did you mean `{hint}`?)"));
        }
        Self::new(message)
    }

    fn missing_field(field: &'static str) -> Self {
        let mut e = Self::new(format!("missing required field `{field}`"));
        e.missing = Some(field);
        e
    }

    fn duplicate_field(field: &'static str) -> Self {
        Self::new(format!("field `{field}` is given twice"))
    }
}

/// Reads a `T` from `node`, the root of a document.
pub(crate) fn from_node<'de, T: de::Deserialize<'de>>(node: &'de Node) -> Result<T, DeError> {
    let path = FieldPath::root();
    T::deserialize(NodeDe { node, path: &path }).map_err(|e| e.at(node.pos, &path))
}

/// A plain scalar's value under YAML 1.2's core schema.
enum Plain<'a> {
    Null,
    Bool(bool),
    Int(i64),
    Uint(u64),
    Float(f64),
    Str(&'a str),
}

fn resolve(text: &str) -> Plain<'_> {
    if super::node::is_null_text(text) {
        return Plain::Null;
    }
    match text {
        "true" | "True" | "TRUE" => return Plain::Bool(true),
        "false" | "False" | "FALSE" => return Plain::Bool(false),
        ".inf" | ".Inf" | ".INF" | "+.inf" | "+.Inf" | "+.INF" => {
            return Plain::Float(f64::INFINITY);
        }
        "-.inf" | "-.Inf" | "-.INF" => return Plain::Float(f64::NEG_INFINITY),
        ".nan" | ".NaN" | ".NAN" => return Plain::Float(f64::NAN),
        _ => {}
    }
    let radix = |prefix: &str, radix: u32| {
        text.strip_prefix(prefix)
            .filter(|d| !d.is_empty())
            .and_then(|d| u64::from_str_radix(d, radix).ok())
    };
    if let Some(n) = radix("0x", 16).or_else(|| radix("0o", 8)) {
        return Plain::Uint(n);
    }
    let digits = text.strip_prefix(['-', '+']).unwrap_or(text);
    if !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()) {
        if let Ok(n) = text.parse::<i64>() {
            return Plain::Int(n);
        }
        if let Ok(n) = text.parse::<u64>() {
            return Plain::Uint(n);
        }
    }
    let looks_numeric = digits.starts_with(|c: char| c.is_ascii_digit() || c == '.')
        && digits
            .bytes()
            .all(|b| b.is_ascii_digit() || matches!(b, b'.' | b'e' | b'E' | b'-' | b'+'));
    if looks_numeric && let Ok(f) = text.parse::<f64>() {
        return Plain::Float(f);
    }
    Plain::Str(text)
}

/// Deserializes one node; `path` is the node's field path, for errors.
#[derive(Clone, Copy)]
struct NodeDe<'de, 'p> {
    node: &'de Node,
    path: &'p FieldPath,
}

impl<'de> NodeDe<'de, '_> {
    fn fail(self, e: DeError) -> DeError {
        e.at(self.node.pos, self.path)
    }

    fn any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        match &self.node.value {
            Value::Scalar { text, plain: false } => visitor.visit_borrowed_str(text),
            Value::Scalar { text, plain: true } => match resolve(text) {
                Plain::Null => visitor.visit_unit(),
                Plain::Bool(b) => visitor.visit_bool(b),
                Plain::Int(n) => visitor.visit_i64(n),
                Plain::Uint(n) => visitor.visit_u64(n),
                Plain::Float(f) => visitor.visit_f64(f),
                Plain::Str(s) => visitor.visit_borrowed_str(s),
            },
            Value::Seq(items) => visitor.visit_seq(SeqDe::new(items, self.path)),
            Value::Map(entries) => visitor.visit_map(MapDe::new(entries, self.path)),
        }
    }

    /// Strings accept any non-null scalar as written, so `value: 10` reads as "10".
    fn string<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        match &self.node.value {
            Value::Scalar { text, .. } if !self.node.is_null() => visitor.visit_borrowed_str(text),
            _ => self.any(visitor),
        }
    }

    /// Collections treat null (`ports:` with nothing after it) as empty.
    fn seq<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        if self.node.is_null() {
            return visitor.visit_seq(SeqDe::new(&[], self.path));
        }
        self.any(visitor)
    }

    fn map<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        if self.node.is_null() {
            return visitor.visit_map(MapDe::new(&[], self.path));
        }
        self.any(visitor)
    }

    fn option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        if self.node.is_null() {
            visitor.visit_none()
        } else {
            visitor.visit_some(self)
        }
    }

    /// Enums are written as their variant names (unit variants only).
    fn enumeration<V: Visitor<'de>>(
        self,
        variants: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, DeError> {
        let found = match &self.node.value {
            Value::Scalar { text, .. } if !self.node.is_null() => {
                return visitor.visit_enum(BorrowedStrDeserializer::new(text));
            }
            Value::Seq(_) => "a sequence",
            Value::Map(_) => "a mapping",
            Value::Scalar { .. } => "null",
        };
        Err(DeError::new(format!(
            "expected one of {}, found {found}",
            variants.join(", ")
        )))
    }
}

macro_rules! forward {
    ($($method:ident => $inner:ident),* $(,)?) => {
        $(
            fn $method<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
                self.$inner(visitor).map_err(|e| self.fail(e))
            }
        )*
    };
}

impl<'de> Deserializer<'de> for NodeDe<'de, '_> {
    type Error = DeError;

    forward! {
        deserialize_any => any, deserialize_bool => any,
        deserialize_i8 => any, deserialize_i16 => any, deserialize_i32 => any,
        deserialize_i64 => any, deserialize_i128 => any,
        deserialize_u8 => any, deserialize_u16 => any, deserialize_u32 => any,
        deserialize_u64 => any, deserialize_u128 => any,
        deserialize_f32 => any, deserialize_f64 => any,
        deserialize_char => string, deserialize_str => string, deserialize_string => string,
        deserialize_identifier => string,
        deserialize_bytes => any, deserialize_byte_buf => any,
        deserialize_option => option, deserialize_unit => any,
        deserialize_seq => seq, deserialize_map => map,
        deserialize_ignored_any => any,
    }

    fn deserialize_unit_struct<V: Visitor<'de>>(
        self,
        _: &'static str,
        visitor: V,
    ) -> Result<V::Value, DeError> {
        self.any(visitor).map_err(|e| self.fail(e))
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        _: &'static str,
        visitor: V,
    ) -> Result<V::Value, DeError> {
        visitor.visit_newtype_struct(self).map_err(|e| self.fail(e))
    }

    fn deserialize_tuple<V: Visitor<'de>>(self, _: usize, visitor: V) -> Result<V::Value, DeError> {
        self.seq(visitor).map_err(|e| self.fail(e))
    }

    fn deserialize_tuple_struct<V: Visitor<'de>>(
        self,
        _: &'static str,
        _: usize,
        visitor: V,
    ) -> Result<V::Value, DeError> {
        self.seq(visitor).map_err(|e| self.fail(e))
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        _: &'static str,
        _: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, DeError> {
        self.map(visitor).map_err(|e| self.fail(e))
    }

    fn deserialize_enum<V: Visitor<'de>>(
        self,
        _: &'static str,
        variants: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, DeError> {
        self.enumeration(variants, visitor)
            .map_err(|e| self.fail(e))
    }
}

struct SeqDe<'de, 'p> {
    items: std::iter::Enumerate<std::slice::Iter<'de, Node>>,
    path: &'p FieldPath,
}

impl<'de, 'p> SeqDe<'de, 'p> {
    fn new(items: &'de [Node], path: &'p FieldPath) -> Self {
        Self {
            items: items.iter().enumerate(),
            path,
        }
    }
}

impl<'de> de::SeqAccess<'de> for SeqDe<'de, '_> {
    type Error = DeError;

    fn next_element_seed<T: DeserializeSeed<'de>>(
        &mut self,
        seed: T,
    ) -> Result<Option<T::Value>, DeError> {
        let Some((i, node)) = self.items.next() else {
            return Ok(None);
        };
        let path = self.path.index(i);
        seed.deserialize(NodeDe { node, path: &path })
            .map(Some)
            .map_err(|e| e.at(node.pos, &path))
    }

    fn size_hint(&self) -> Option<usize> {
        Some(self.items.len())
    }
}

struct MapDe<'de, 'p> {
    entries: std::slice::Iter<'de, Entry>,
    /// The entry whose key was read and whose value is next.
    current: Option<&'de Entry>,
    path: &'p FieldPath,
}

impl<'de, 'p> MapDe<'de, 'p> {
    fn new(entries: &'de [Entry], path: &'p FieldPath) -> Self {
        Self {
            entries: entries.iter(),
            current: None,
            path,
        }
    }
}

impl<'de> de::MapAccess<'de> for MapDe<'de, '_> {
    type Error = DeError;

    fn next_key_seed<K: DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, DeError> {
        let Some(entry) = self.entries.next() else {
            return Ok(None);
        };
        self.current = Some(entry);
        seed.deserialize(BorrowedStrDeserializer::new(&entry.key))
            .map(Some)
            .map_err(|e: DeError| e.at(entry.key_pos, &self.path.key(&entry.key)))
    }

    fn next_value_seed<V: DeserializeSeed<'de>>(&mut self, seed: V) -> Result<V::Value, DeError> {
        let Some(entry) = self.current.take() else {
            return Err(de::Error::custom("a value was requested before its key"));
        };
        let path = self.path.key(&entry.key);
        let node = &entry.value;
        seed.deserialize(NodeDe { node, path: &path })
            .map_err(|e| e.at(node.pos, &path))
    }

    fn size_hint(&self) -> Option<usize> {
        Some(self.entries.len())
    }
}

#[cfg(test)]
mod tests;
