//! `vexil-proxy` as a library: the parts of the sidecar, wired together by the binary and reused by
//! the benchmark harness.
//!
//! - [`snapshot`]: the current flag set, swapped atomically, read without locks.
//! - [`sync`]: the QUIC sync client that keeps it current from control.

pub mod snapshot;
pub mod sync;
