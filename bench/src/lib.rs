//! Vexil's benchmark harness.
//!
//! For now it holds the workloads shared by the engine's criterion benchmarks (`benches/engine.rs`):
//! the flag sets and contexts every contender evaluates. The system scenarios (hop, lookup,
//! propagate, footprint) join it with their own issue.
