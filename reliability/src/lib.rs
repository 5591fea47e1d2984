//! A process harness for Vexil's fault-injection tests (`tests/faults/`).
//!
//! Everything here runs the REAL binaries as child processes, on loopback, with temp dirs and
//! free ports: control replicas (`vexil-control serve`, [`Control`]), sidecars (`vexil-proxy`,
//! [`Sidecar`]), and a TCP [`FaultProxy`] that can stand between control and PostgreSQL and be cut
//! and restored. Temp dirs, ports, the fresh PostgreSQL database per test, the private
//! `redis-server` and the child processes themselves come from the test kit (`vexil-testkit`). The
//! binaries are taken from the target directory beside the test executable, and built first when
//! they are missing.

pub mod control;
pub mod http;
pub mod sidecar;

pub use control::{Control, ControlOptions, flag_path, string_flag};
pub use http::{Resp, http_client, metric_value, send};
pub use sidecar::{Sidecar, SidecarOptions, default_values};
pub use vexil_testkit::FaultProxy;

/// The admin token every control started here is bootstrapped with (`VEXIL_ADMIN_TOKEN`).
pub const ADMIN: &str = "vxl_reliability-test-admin-secret";
