//! trellis-test: in progress.
