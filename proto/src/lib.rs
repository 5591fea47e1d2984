//! Wire contracts shared by `vexil-control` and `vexil-proxy`.
//!
//! This crate will hold the generated protobuf types of `vexil.sync.v1` (the QUIC snapshot push),
//! the wire-compatible flagd services (`flagd.evaluation.v1`, `flagd.evaluation.v2`,
//! `flagd.sync.v1`) and the length-delimited frame codec of the sync stream. Until the sync path
//! lands it only names its protocol constants.

/// ALPN protocol identifier of the QUIC sync stream (design §5).
pub const SYNC_ALPN: &[u8] = b"vexil-sync/1";
