//! Integration tests of the sidecar's lookup surfaces, admin endpoints and file source, each
//! server on 127.0.0.1:0 with real clients (tonic, reqwest).

mod admin;
mod common;
mod file_source;
mod flagd_sync;
mod grpc;
mod ofrep;
