//! The trellis CLI.

fn main() {}
