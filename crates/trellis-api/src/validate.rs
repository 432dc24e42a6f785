//! Semantic checks after typing: a [`Validator`] collects errors for field paths and resolves
//! each path to its line and column in the document it came from.

use crate::error::ConfigError;
use crate::yaml::{DeError, FieldPath, Node, Pos};

/// Collects errors for one document.
pub(crate) struct Validator<'a> {
    file: &'a str,
    root: &'a Node,
    errors: &'a mut Vec<ConfigError>,
}

impl<'a> Validator<'a> {
    /// A validator for the document rooted at `root` in `file`, adding to `errors`.
    pub(crate) fn new(file: &'a str, root: &'a Node, errors: &'a mut Vec<ConfigError>) -> Self {
        Self { file, root, errors }
    }

    /// Records that the field at `path` is wrong. A field left out (so defaulted) is reported
    /// at its nearest ancestor that is present.
    pub(crate) fn error(&mut self, path: &FieldPath, message: impl Into<String>) {
        let pos = self.root.locate(path);
        self.error_at(pos, path, message);
    }

    /// Records an error at a known position.
    pub(crate) fn error_at(&mut self, pos: Pos, path: &FieldPath, message: impl Into<String>) {
        self.errors.push(ConfigError {
            file: self.file.to_owned(),
            line: pos.line,
            column: pos.column,
            field: path.to_string(),
            message: message.into(),
        });
    }

    /// Records a failure to type the document, where the deserializer saw it.
    pub(crate) fn de_error(&mut self, e: DeError) {
        let (pos, path, message) = e.into_parts();
        self.error_at(pos, &path, message);
    }

    /// Records an error when `items` has more than `max` entries.
    pub(crate) fn max_items<T>(&mut self, path: &FieldPath, items: &[T], max: usize) {
        if items.len() > max {
            self.error(
                path,
                format!("expected at most {max} items, found {}", items.len()),
            );
        }
    }

    /// Compiles `pattern`, recording an error at `path` when it is not a valid regex.
    pub(crate) fn regex(&mut self, path: &FieldPath, pattern: &str) {
        if let Err(e) = regex::Regex::new(pattern) {
            // The regex crate's message spans several lines with a caret diagram; keep the
            // last line, which says what is wrong.
            let text = e.to_string();
            let reason = text.lines().last().unwrap_or("invalid").trim();
            let reason = reason.strip_prefix("error: ").unwrap_or(reason);
            self.error(
                path,
                format!("expected a valid regular expression, found `{pattern}`: {reason}"),
            );
        }
    }
}
