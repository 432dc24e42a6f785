//! Turns a file's text into one located [`Node`] tree per non-empty YAML document, using the
//! event parser that serde-saphyr is built on. Parsing continues after a syntax error at the
//! next `---`, so that every broken document is reported.

use std::collections::HashMap;

use serde_saphyr::granit_parser::{Event, Marker, Parser, ScalarStyle, ScanError};

use super::node::{Entry, Node, Pos, Value, is_null_text};
use super::path::FieldPath;

/// Aliases may expand to at most this many nodes per file, so that a small file full of
/// nested aliases ("billion laughs") cannot exhaust memory.
const ALIAS_BUDGET: usize = 100_000;

/// A problem found while reading the YAML itself, before any field is interpreted.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub(crate) enum ParseError {
    /// The text is not valid YAML.
    #[error("invalid YAML: {message}")]
    Syntax { pos: Pos, message: String },
    /// A mapping has the same key twice.
    #[error("duplicate key `{key}` (first given on line {first_line}); remove one of them")]
    DuplicateKey {
        pos: Pos,
        path: FieldPath,
        key: String,
        first_line: usize,
    },
    /// A mapping key is a sequence or a mapping.
    #[error("mapping keys must be strings, found a sequence or mapping")]
    ComplexKey { pos: Pos, path: FieldPath },
    /// Aliases expand to too many nodes.
    #[error(
        "aliases expand to more than {ALIAS_BUDGET} nodes; write the values out or split the file"
    )]
    AliasBudget { pos: Pos, path: FieldPath },
}

impl ParseError {
    /// Where the problem is.
    pub(crate) fn pos(&self) -> Pos {
        match self {
            Self::Syntax { pos, .. }
            | Self::DuplicateKey { pos, .. }
            | Self::ComplexKey { pos, .. }
            | Self::AliasBudget { pos, .. } => *pos,
        }
    }

    /// The path of the field concerned, empty for syntax errors.
    pub(crate) fn path(&self) -> FieldPath {
        match self {
            Self::Syntax { .. } => FieldPath::root(),
            Self::DuplicateKey { path, .. }
            | Self::ComplexKey { path, .. }
            | Self::AliasBudget { path, .. } => path.clone(),
        }
    }
}

/// The documents of one file and the problems found in its YAML.
#[derive(Debug, Default)]
pub(crate) struct ParsedFile {
    /// The root node of each non-empty document, in order.
    pub(crate) documents: Vec<Node>,
    /// Problems in the YAML, in order. A document with a syntax error is left out of
    /// `documents`; one with another problem is kept (duplicate keys keep the first value).
    pub(crate) errors: Vec<ParseError>,
}

/// Parses every document of `text`.
pub(crate) fn parse_file(text: &str) -> ParsedFile {
    let mut parser = Parser::new_from_str(text);
    let mut builder = Builder::default();
    loop {
        match parser.next_event() {
            None => break,
            Some(Ok((event, span))) => builder.event(event, pos(&span.start)),
            Some(Err(e)) => {
                builder.syntax_error(&e);
                match parser.proceed_next_document() {
                    Ok(true) => continue,
                    Ok(false) => break,
                    Err(e) => {
                        builder.syntax_error(&e);
                        break;
                    }
                }
            }
        }
    }
    builder.out
}

fn pos(marker: &Marker) -> Pos {
    Pos {
        line: marker.line(),
        column: marker.col() + 1,
    }
}

/// A collection whose end has not been seen yet.
#[derive(Debug)]
enum Frame {
    Seq {
        pos: Pos,
        anchor: usize,
        items: Vec<Node>,
    },
    Map {
        pos: Pos,
        anchor: usize,
        entries: Vec<Entry>,
        /// The key waiting for its value; `None` inside means the key was unusable and its value
        /// is dropped.
        key: Option<Option<(String, Pos)>>,
    },
}

#[derive(Debug, Default)]
struct Builder {
    out: ParsedFile,
    stack: Vec<Frame>,
    root: Option<Node>,
    /// Anchored nodes of the current document with their sizes.
    anchors: HashMap<usize, (Node, usize)>,
    alias_nodes: usize,
}

impl Builder {
    fn event(&mut self, event: Event<'_>, at: Pos) {
        match event {
            Event::DocumentStart(..) => self.reset(),
            Event::DocumentEnd => {
                if let Some(root) = self.root.take().filter(|r| !r.is_null()) {
                    self.out.documents.push(root);
                }
                self.reset();
            }
            Event::Scalar(text, style, anchor, tag) => {
                let forced_str = tag.is_some_and(|t| t.is_yaml_core_schema_tag("str"));
                let plain = style == ScalarStyle::Plain && !forced_str;
                let text = text.into_owned();
                self.finish(
                    Node {
                        pos: at,
                        value: Value::Scalar { text, plain },
                    },
                    anchor,
                );
            }
            Event::SequenceStart(_, anchor, _) => self.stack.push(Frame::Seq {
                pos: at,
                anchor,
                items: Vec::new(),
            }),
            Event::MappingStart(_, anchor, _) => self.stack.push(Frame::Map {
                pos: at,
                anchor,
                entries: Vec::new(),
                key: None,
            }),
            Event::SequenceEnd | Event::MappingEnd => self.close(),
            Event::Alias(id) => self.alias(id, at),
            _ => {}
        }
    }

    fn reset(&mut self) {
        self.stack.clear();
        self.root = None;
        self.anchors.clear();
    }

    fn syntax_error(&mut self, e: &ScanError) {
        self.out.errors.push(ParseError::Syntax {
            pos: pos(e.marker()),
            message: e.info(),
        });
        self.reset();
    }

    fn close(&mut self) {
        let (node, anchor) = match self.stack.pop() {
            Some(Frame::Seq { pos, anchor, items }) => (
                Node {
                    pos,
                    value: Value::Seq(items),
                },
                anchor,
            ),
            Some(Frame::Map {
                pos,
                anchor,
                entries,
                ..
            }) => (
                Node {
                    pos,
                    value: Value::Map(entries),
                },
                anchor,
            ),
            // The parser balances start and end events; nothing to close means nothing to do.
            None => return,
        };
        self.finish(node, anchor);
    }

    fn alias(&mut self, id: usize, at: Pos) {
        // The parser rejects aliases to unknown anchors, so a miss cannot happen; ignoring it
        // keeps the tree consistent regardless.
        let Some((node, size)) = self.anchors.get(&id).cloned() else {
            return;
        };
        self.alias_nodes += size;
        if self.alias_nodes > ALIAS_BUDGET {
            let path = self.path();
            self.out
                .errors
                .push(ParseError::AliasBudget { pos: at, path });
            // Keep the structure but not the expansion.
            let empty = Node {
                pos: at,
                value: Value::Scalar {
                    text: String::new(),
                    plain: true,
                },
            };
            self.finish(empty, 0);
            return;
        }
        self.finish(node, 0);
    }

    /// Places a completed node into its parent (or makes it the document root).
    fn finish(&mut self, node: Node, anchor: usize) {
        if anchor != 0 {
            let size = node.size();
            self.anchors.insert(anchor, (node.clone(), size));
        }
        let path = self.path();
        match self.stack.last_mut() {
            None => self.root = Some(node),
            Some(Frame::Seq { items, .. }) => items.push(node),
            Some(Frame::Map { entries, key, .. }) => match key.take() {
                None => {
                    *key = Some(match node.value {
                        Value::Scalar { text, plain } if !(plain && is_null_text(&text)) => {
                            Some((text, node.pos))
                        }
                        Value::Scalar { .. } => Some((String::new(), node.pos)),
                        _ => {
                            let err = ParseError::ComplexKey {
                                pos: node.pos,
                                path,
                            };
                            self.out.errors.push(err);
                            None
                        }
                    });
                }
                Some(None) => {}
                Some(Some((k, key_pos))) => {
                    if let Some(first) = entries.iter().find(|e| e.key == k) {
                        let err = ParseError::DuplicateKey {
                            pos: key_pos,
                            path: path.key(&k),
                            key: k,
                            first_line: first.key_pos.line,
                        };
                        self.out.errors.push(err);
                    } else {
                        entries.push(Entry {
                            key: k,
                            key_pos,
                            value: node,
                        });
                    }
                }
            },
        }
    }

    /// The path of the collection being built.
    fn path(&self) -> FieldPath {
        let mut path = FieldPath::root();
        // The innermost frame is the collection itself, so its own pending key or next index
        // belongs to the child being built, not to this path.
        let depth = self.stack.len().saturating_sub(1);
        for frame in &self.stack[..depth] {
            path = match frame {
                Frame::Seq { items, .. } => path.index(items.len()),
                Frame::Map { key, .. } => match key {
                    Some(Some((k, _))) => path.key(k),
                    _ => path,
                },
            };
        }
        path
    }
}

#[cfg(test)]
mod tests;
