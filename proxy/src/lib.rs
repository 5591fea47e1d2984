//! `vexil-proxy` as a library: the parts of the sidecar, wired together by the binary and reused by
//! the benchmark harness.
//!
//! - [`snapshot`]: the current flag set, swapped atomically, read without locks.

pub mod snapshot;
