//! trellis-proxy: in progress.
