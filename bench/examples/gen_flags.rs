//! Prints the generated flag set of the benchmarks (`generate_flag_set(N, SEED)`), for profiling a
//! sidecar by hand: `cargo run --release -p vexil-bench --example gen_flags -- 350 > flags.json`.

fn main() {
    let n: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(vexil_bench::FLAG_COUNT);
    println!(
        "{}",
        vexil_bench::generate_flag_set(n, vexil_bench::SEED).document
    );
}
