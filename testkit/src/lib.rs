//! What the integration tests of Vexil's crates share.
//!
//! - [`TempDir`]: a temporary directory, removed (with its content) on drop.
//! - [`free_tcp_port`], [`free_udp_port`], [`free_addr`]: loopback ports nothing listens on;
//!   [`http_status`] / [`http_status_blocking`]: the status of one `GET`, or `None`.
//! - [`pg::PgDb`]: a fresh PostgreSQL database, dropped afterwards; [`redis::Redis`]: a private
//!   `redis-server` a test can kill and start again.
//! - [`echo::Echo`]: an HTTP/1 upstream that answers with the request it received.
//! - [`FaultProxy`]: a TCP proxy that can cut or freeze a link (to PostgreSQL), at once or when the
//!   client sends given bytes (mid-transaction).
//! - [`process::Process`]: a child process, its output captured (and its tail printed when the
//!   test fails), killed on drop; [`control::ControlCmd`] and [`proxy::ProxyCmd`] start the real
//!   `vexil-control` and `vexil-proxy` on free ports and wait until they answer.
//! - [`wait_for`]: polls a probe until it succeeds, or fails with what it saw last.
//! - [`tools`]: the pinned Python and JavaScript test clients `scripts/ensure-deps.sh` installs.
//!
//! A test that needs a service (PostgreSQL, Redis) or a tool it cannot find calls [`skip`]: under
//! CI ([`is_ci`]) that fails the test, elsewhere it prints a notice and the test returns.

pub mod control;
pub mod echo;
pub mod fault_proxy;
pub mod net;
pub mod otlp;
pub mod pg;
pub mod process;
pub mod proxy;
pub mod redis;
pub mod tls;
pub mod tools;

mod cmd;
mod dir;
mod wait;

pub use cmd::BinaryCmd;
pub use dir::TempDir;
pub use fault_proxy::FaultProxy;
pub use net::{
    free_addr, free_tcp_port, free_udp_port, http_status, http_status_blocking, loopback,
};
pub use process::{Process, binary};
pub use wait::wait_for;

/// Whether this runs under CI (`CI=true`, `1` or `yes`): a missing service or tool then fails the
/// tests that need it instead of skipping them.
pub fn is_ci() -> bool {
    matches!(
        std::env::var("CI").as_deref(),
        Ok("true" | "TRUE" | "True" | "1" | "yes")
    )
}

/// Reports that a test cannot run here because `what` (a service or tool it needs) is missing.
///
/// Under CI ([`is_ci`]) this panics: such a test fails, it never skips. Elsewhere it prints a
/// `NOTICE: skipping: ...` line and returns, and the caller then returns too.
#[track_caller]
pub fn skip(what: impl std::fmt::Display) {
    assert!(!is_ci(), "{what} (required under CI=true)");
    eprintln!("NOTICE: skipping: {what}");
}
