//! What traces cost the sidecar's hot path when they are off (no `--otlp-endpoint`, the default):
//! the subscriber installed as the binaries install it, then what a proxied request and a lookup
//! do for traces: the `TRACE` span of the request (`proxy.decide`, `lookup.evaluate`), entered, and
//! per evaluation the check whether the `feature_flag.evaluation` event is wanted.
//! `cargo bench -p vexil-telemetry --bench hot_path`.

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use vexil_telemetry::{FEATURE_FLAG_TARGET, OTEL_TARGET};

fn traces_off(c: &mut Criterion) {
    let config = vexil_telemetry::TelemetryConfig::default();
    let _telemetry = vexil_telemetry::init(&config, "warn", "bench");
    c.bench_function("traces off: evaluation event check", |b| {
        b.iter(|| {
            black_box(tracing::enabled!(
                target: FEATURE_FLAG_TARGET,
                tracing::Level::TRACE
            ))
        })
    });
    c.bench_function("traces off: request span created and entered", |b| {
        let path = black_box("/orders");
        b.iter(|| {
            let span = tracing::trace_span!(target: OTEL_TARGET, "proxy.decide",
                otel.kind = "client", url.path = path);
            let _inside = span.enter();
            black_box(&span);
        })
    });
}

criterion_group!(benches, traces_off);
criterion_main!(benches);
