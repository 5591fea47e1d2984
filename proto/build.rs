//! Generates the Rust code of Vexil's wire contracts into `OUT_DIR`.
//!
//! `protox` parses the `.proto` files (it ships `google/protobuf/*.proto`, so no system `protoc` is
//! needed) and `tonic-prost-build` turns the descriptors into prost messages plus tonic clients and
//! servers for the flagd services (`vexil.sync.v1` has no gRPC service: it only gets messages).
//! The encoded descriptor set is written as well, for gRPC reflection and the wire tests.

use std::{env, error::Error, path::PathBuf};

/// The compiled files, relative to the include directory `proto/`.
const PROTOS: &[&str] = &[
    "flagd/evaluation/v1/evaluation.proto",
    "flagd/evaluation/v2/evaluation.proto",
    "flagd/sync/v1/sync.proto",
    "vexil/sync/v1/sync.proto",
];

fn main() -> Result<(), Box<dyn Error>> {
    let manifest_dir = PathBuf::from(env::var("CARGO_MANIFEST_DIR")?);
    let include = manifest_dir.join("proto");
    let out_dir = PathBuf::from(env::var("OUT_DIR")?);

    println!("cargo:rerun-if-changed=build.rs");
    // A directory is scanned recursively: any edited, added or removed .proto file reruns this.
    println!("cargo:rerun-if-changed={}", include.display());

    let files: Vec<PathBuf> = PROTOS.iter().map(|file| include.join(file)).collect();
    let fds = protox::compile(&files, [&include])?;

    // Keep the descriptors (with imports, i.e. google/protobuf/struct.proto) for reflection/tests.
    std::fs::write(
        out_dir.join("vexil_descriptor.bin"),
        prost::Message::encode_to_vec(&fds),
    )?;

    tonic_prost_build::configure()
        .build_server(true)
        .build_client(true)
        .build_transport(true)
        .emit_rerun_if_changed(false)
        .out_dir(&out_dir)
        .compile_fds(fds)?;
    Ok(())
}
