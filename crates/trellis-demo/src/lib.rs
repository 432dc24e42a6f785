//! trellis-demo: in progress.
