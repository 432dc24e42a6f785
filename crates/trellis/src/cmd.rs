//! One module per subcommand.

pub(crate) mod control;
pub(crate) mod demo;
pub(crate) mod identity;
pub(crate) mod proxy;
pub(crate) mod run;
mod signal;
