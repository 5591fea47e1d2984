//! Wire contracts shared by `vexil-control` and `vexil-proxy`.
//!
//! - [`sync::v1`]: Vexil's own snapshot-push protocol (`vexil.sync.v1`), carried on one
//!   bidirectional QUIC stream (ALPN [`SYNC_ALPN`]) in the frames of [`frame`].
//! - [`flagd::evaluation::v1`], [`flagd::evaluation::v2`], [`flagd::sync::v1`]: the OpenFeature
//!   flagd gRPC services, wire-compatible with flagd, each with a tonic server (`service_server` /
//!   `flag_sync_service_server`) and client (`service_client` / `flag_sync_service_client`).
//! - [`convert`]: JSON ⇄ `google.protobuf.Struct` / `Value` ([`prost_types::Struct`]).
//! - [`outcomes`]: the status classes and latency buckets of `Outcomes` (guarded rollouts).
//! - [`snapshot_file`]: the persisted-snapshot format (`vexil-snapshot/1`) that sidecars write to
//!   disk and read back (also as a bootstrap file), and that control exports per environment.
//!
//! The `.proto` sources live in `proto/proto/`; `build.rs` compiles them with `protox` and
//! `tonic-prost-build` (no system `protoc`). Well-known types map to [`prost_types`], which is
//! re-exported, as are [`prost`] and [`tonic`] for the generated code's users.

#![warn(missing_docs)]

pub mod convert;
pub mod digest;
pub mod frame;
pub mod outcomes;
pub mod snapshot_file;

pub use prost;
pub use prost_types;
pub use tonic;

/// ALPN protocol identifier of the QUIC sync stream (docs/sync-protocol.md).
pub const SYNC_ALPN: &[u8] = b"vexil-sync/1";

/// Encoded `google.protobuf.FileDescriptorSet` of every `.proto` file of this crate, imports
/// included (`google/protobuf/struct.proto`): for gRPC server reflection and descriptor checks.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/vexil_descriptor.bin"));

/// Vexil's own protocols.
pub mod sync {
    /// `vexil.sync.v1`: the frames of the control → sidecar snapshot push (docs/sync-protocol.md).
    ///
    /// The sidecar sends [`ClientFrame`](v1::ClientFrame)s (`Subscribe` first, then `Ack` / `Resync`); control
    /// answers with [`ServerFrame`](v1::ServerFrame)s (`Welcome` or `Error`, then `Full`, `Delta`, `Ping`).
    /// Revisions are per environment and strictly increasing; a [`Delta`](v1::Delta) applies only on top of
    /// exactly its `from` revision.
    #[allow(clippy::all, clippy::pedantic, clippy::nursery)] // generated code
    pub mod v1 {
        include!(concat!(env!("OUT_DIR"), "/vexil.sync.v1.rs"));
    }
}

/// The OpenFeature flagd gRPC protocols, wire-compatible with flagd.
pub mod flagd {
    /// flagd's evaluation API (RPC mode); the sidecar serves v1 and v2 on one port.
    pub mod evaluation {
        /// `flagd.evaluation.v1`: service `flagd.evaluation.v1.Service` (with `ResolveAll`).
        #[allow(clippy::all, clippy::pedantic, clippy::nursery)] // generated code
        pub mod v1 {
            include!(concat!(env!("OUT_DIR"), "/flagd.evaluation.v1.rs"));
        }

        /// `flagd.evaluation.v2`: service `flagd.evaluation.v2.Service`, what current providers
        /// call; typed responses have `optional` value and variant (no `ResolveAll`).
        #[allow(clippy::all, clippy::pedantic, clippy::nursery)] // generated code
        pub mod v2 {
            include!(concat!(env!("OUT_DIR"), "/flagd.evaluation.v2.rs"));
        }
    }

    /// flagd's sync API (in-process mode).
    pub mod sync {
        /// `flagd.sync.v1`: service `flagd.sync.v1.FlagSyncService` (whole-document sync).
        #[allow(clippy::all, clippy::pedantic, clippy::nursery)] // generated code
        pub mod v1 {
            include!(concat!(env!("OUT_DIR"), "/flagd.sync.v1.rs"));
        }
    }
}
