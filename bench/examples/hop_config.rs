//! Writes `hop`'s sidecar inputs into a directory, for profiling the data plane by hand
//! (`bench/scripts/callgrind-hop.sh`): `flags.json` (the generated set of `SET_SIZE` flags) and
//! `proxy.toml` (context from the request headers, one route injecting `INJECTED` flags).
//!
//! With `SHADOW_RATIO` set (shadow evaluation, docs/shadow.md), also `state/`, the same set as a
//! sidecar following control would have persisted it (environment `hop`), and `tls/ca.pem`, so the
//! sidecar can serve it with control out of reach; unless the ratio is 0, the state holds a
//! proposal for each injected flag, sampled at that ratio: the flag's own definition (a proposal
//! costs what its rule costs; this one costs what the live rule does).
//!
//! `cargo run --release -p vexil-bench --example hop_config -- DIR`

use vexil_bench::scenarios::hop::{SET_SIZE, injected_flags, proxy_toml};
use vexil_proxy::shadow::{Proposal, Proposals};
use vexil_proxy::sync::persist;

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
    if let Ok(ratio) = std::env::var("SHADOW_RATIO") {
        let ratio: f64 = ratio.parse()?;
        let state = dir.join("state");
        let incarnation = "0123456789abcdef0123456789abcdef";
        persist::save_incarnation(&state, "hop", incarnation, 1, &set.document.to_string())?;
        let proposals = if ratio > 0.0 {
            Proposals(
                injected
                    .iter()
                    .enumerate()
                    .map(|(i, key)| Proposal {
                        flag: key.clone(),
                        id: format!("{i:016x}"),
                        definition: set.document["flags"][key].to_string(),
                        sample_ratio: ratio,
                    })
                    .collect(),
            )
        } else {
            Proposals::default()
        };
        persist::save_proposals(&state, "hop", incarnation, &proposals)?;
        vexil_control::tls::ensure_dev_tls(&dir.join("tls"), &[])?;
    }
    Ok(())
}
