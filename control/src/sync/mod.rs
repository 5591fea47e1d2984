//! The sync hub: pushes each environment's flag set, then a delta per commit, to every connected
//! sidecar over QUIC (`vexil-sync/1`, docs/sync-protocol.md).
//!
//! - [`endpoint`]: the QUIC endpoint and its TLS (optionally mutual).
//! - [`session`]: one sidecar's conversation (Subscribe → Welcome → catch-up → deltas, acks).
//! - [`feed`]: one environment's change feed, read from the change log once per revision, encoded
//!   once, broadcast to its sessions.
//! - [`hub`]: the feeds, settings and authorization every session shares.
//! - [`fanout`]: Redis pub/sub between control replicas (a hint; each feed also polls the store).
//! - [`registry`]: the sidecars connected to this replica, for metrics and the fleet recorder.
//! - [`fleet`]: the fleet recorder (every session of this replica written to the store) and the
//!   fleet-wide view built from the store (`GET /api/v1/sidecars`, `?wait=`).
//! - [`usage`]: the sidecars' usage reports, checked, added up in memory and written to the store
//!   every few seconds.

pub mod endpoint;
pub mod fanout;
pub mod feed;
pub mod fleet;
pub mod frames;
pub mod hub;
pub mod registry;
pub mod session;
pub mod shadow;
pub mod usage;

pub use endpoint::{QuicTimers, QuicTls, SyncServer};
pub use fleet::SidecarInfo;
pub use hub::{Hub, Refusal, SyncSettings};
pub use registry::Sidecars;
