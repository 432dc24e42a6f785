//! trellis-api: in progress.
