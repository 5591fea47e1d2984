//! `vexil-control`: the control plane binary.
//!
//! The source of truth for environments and flags. Its store, admin API and sync hub arrive with
//! their own issues; today the binary validates flag-set documents with the shared engine.

#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() -> anyhow::Result<()> {
    Ok(())
}
