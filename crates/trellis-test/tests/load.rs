//! Load tests, in their own test binary (test binaries run one after another).

#[path = "e2e/common.rs"]
#[allow(dead_code)] // Shared with the e2e binary; this one uses only part of it.
mod common;
#[path = "e2e/rotation.rs"]
mod rotation;
