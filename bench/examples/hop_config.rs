//! Writes `hop`'s sidecar inputs into a directory, for profiling the data plane by hand
//! (`bench/scripts/callgrind-hop.sh`): `flags.json` (the generated set of `SET_SIZE` flags) and
//! `proxy.toml` (context from the request headers, one route injecting `INJECTED` flags).
//!
//! `cargo run --release -p vexil-bench --example hop_config -- DIR`

use vexil_bench::scenarios::hop::{SET_SIZE, injected_flags, proxy_toml};

fn main() -> anyhow::Result<()> {
    let dir = std::env::args()
        .nth(1)
        .ok_or_else(|| anyhow::anyhow!("usage: hop_config DIR"))?;
    let dir = std::path::Path::new(&dir);
    std::fs::create_dir_all(dir)?;
    let set = vexil_bench::generate_flag_set(SET_SIZE, vexil_bench::SEED);
    let injected = injected_flags(&set);
    std::fs::write(dir.join("flags.json"), set.document.to_string())?;
    std::fs::write(dir.join("proxy.toml"), proxy_toml(&injected))?;
    Ok(())
}
