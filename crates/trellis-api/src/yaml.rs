//! YAML with positions: a file parses into a tree of located nodes ([`parse_file`]); typed
//! values are read from a node by a serde deserializer that reports the field path and position
//! of every failure ([`from_node`]); validators find the position of any field path
//! ([`Node::locate`]).

mod de;
mod node;
mod parse;
mod path;

pub(crate) use de::{DeError, from_node};
pub(crate) use node::{Node, Pos, Value};
pub(crate) use parse::parse_file;
pub(crate) use path::FieldPath;
