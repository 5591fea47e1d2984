//! `vexil-proxy` as a library: the parts of the sidecar, wired together by the binary and reused by
//! the benchmark harness.
//!
//! - [`snapshot`]: the current flag set, swapped atomically, read without locks.
//! - [`sync`]: the QUIC sync client that keeps it current from control.
//! - [`file_source`]: the offline flag source (`--flags-file`), reloaded when the file changes.
//! - [`lookup`]: what OpenFeature clients call: flagd gRPC evaluation (v1 and v2), OFREP, flagd sync.
//! - [`dataplane`]: the HTTP data plane (pingora): outbound proxy and inbound mode, injecting the
//!   decisions of each request as headers.
//! - [`lifecycle`]: the start policy and the `READY` / `STALE` / `ERROR` state providers see.
//! - [`admin`]: `/healthz`, `/readyz`, `/metrics`, `/debug/snapshot`.
//! - [`metrics`]: the Prometheus registry every part adds to.
//! - [`usage`]: evaluation counters per flag and variant, reported to control.
//! - [`shadow`]: proposals evaluated beside the live rules on a sample of decisions (shadow
//!   evaluation), counted per (live, proposed) variant and reported with the usage.
//! - [`config`], [`server`]: the sidecar's configuration and the wiring of its parts.

#![warn(missing_docs)]

pub mod admin;
pub mod config;
pub mod dataplane;
pub mod file_source;
pub mod lifecycle;
pub mod lookup;
pub mod memory;
pub mod metrics;
pub mod server;
pub mod shadow;
pub mod signing;
pub mod snapshot;
pub mod sync;
pub mod usage;
