//! What the `trellis` and `trellis-proxy` commands share: the sidecar's flags and how it runs,
//! the process set-up (logging, async runtime) and termination signals. `trellis-proxy` links
//! only this and the proxy library, so a sidecar process maps no control plane, CLI or
//! dashboard code (see docs/benchmarks.md for what that saves per proxy).

pub mod args;
pub mod process;
pub mod sidecar;
pub mod signal;

/// The allocator of both commands. mimalloc serves the proxy's many small, short-lived
/// allocations (per request and per frame) from per-thread pages: at maximum load over HTTP/2,
/// glibc's malloc took about 6.4k instructions per request pair, mimalloc 1.6k
/// (docs/benchmarks.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;
