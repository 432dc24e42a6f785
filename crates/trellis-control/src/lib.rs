//! trellis-control: in progress.
