//! The errors a user sees: one [`ConfigError`] per problem, each with file, line, column and
//! field path, collected into [`ConfigErrors`].

use std::fmt;

/// One problem in one configuration file.
///
/// `line` and `column` are 1-based and relative to the file (not to the YAML document inside
/// it). They are 0 when the problem has no position, such as an unreadable file.
/// `field` is the dotted path of the offending field, e.g. `spec.rules[0].backendRefs[1].weight`,
/// or empty when the problem is not about one field (a YAML syntax error).
// The public shape is fixed by the API contract, so Display is written by hand rather than
// derived by thiserror (which only derives field-less formats for structs).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigError {
    /// The file the problem is in, as it was given to the loader.
    pub file: String,
    /// 1-based line in the file, or 0 when unknown.
    pub line: usize,
    /// 1-based column in the line, or 0 when unknown.
    pub column: usize,
    /// Path of the offending field, e.g. `spec.rules[0].matches[0].path.value`.
    pub field: String,
    /// What is wrong and what was expected.
    pub message: String,
}

/// Renders `{file}:{line}:{column}: {field}: {message}`, leaving out the position when it is
/// unknown and the field when it is empty.
impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file)?;
        if self.line > 0 {
            write!(f, ":{}:{}", self.line, self.column)?;
        }
        if !self.field.is_empty() {
            write!(f, ": {}", self.field)?;
        }
        write!(f, ": {}", self.message)
    }
}

impl std::error::Error for ConfigError {}

/// Every problem found while loading a configuration, in file order.
///
/// Displays one error per line.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

impl ConfigErrors {
    /// The number of problems.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether there are no problems (a loader never returns an empty `ConfigErrors`).
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Iterates over the problems in file order.
    pub fn iter(&self) -> std::slice::Iter<'_, ConfigError> {
        self.0.iter()
    }
}

impl IntoIterator for ConfigErrors {
    type Item = ConfigError;
    type IntoIter = std::vec::IntoIter<ConfigError>;

    fn into_iter(self) -> Self::IntoIter {
        self.0.into_iter()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(line: usize, field: &str) -> ConfigError {
        ConfigError {
            file: "routes.yaml".into(),
            line,
            column: if line > 0 { 17 } else { 0 },
            field: field.into(),
            message: "boom".into(),
        }
    }

    #[test]
    fn display_formats() {
        let cases = [
            (
                err(14, "spec.rules[0].weight"),
                "routes.yaml:14:17: spec.rules[0].weight: boom",
            ),
            (err(3, ""), "routes.yaml:3:17: boom"),
            (err(0, ""), "routes.yaml: boom"),
        ];
        for (e, want) in cases {
            assert_eq!(e.to_string(), want);
        }
        let all = ConfigErrors(vec![err(1, "a"), err(2, "b")]);
        assert_eq!(
            all.to_string(),
            "routes.yaml:1:17: a: boom\nroutes.yaml:2:17: b: boom"
        );
    }
}
