//! `vexil-telemetry`: what both binaries log and trace, set up the same way.
//!
//! - [`TelemetryConfig`]: the `[telemetry]` settings both binaries declare (a section of
//!   `ControlConfig` and of `ProxyConfig`): the log format, text or JSON, and where to send traces.
//! - [`init`]: installs the process's `tracing` subscriber from them: the `VEXIL_LOG` filter, then
//!   one line per event on standard output, as text or as one JSON object; and, when an OTLP
//!   endpoint is set, every span (and the events in it) as OpenTelemetry traces over OTLP/gRPC.
//!
//! The sidecar's per-request span and its `feature_flag.evaluation` events are at `TRACE` level
//! under the targets [`OTEL_TARGET`] and [`FEATURE_FLAG_TARGET`]: only the trace layer enables
//! them (whatever `VEXIL_LOG` says), so without an endpoint they cost the request path one
//! check of a cached interest.

use std::fmt;
use std::time::Duration;

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::WithExportConfig as _;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::trace::{
    BatchConfigBuilder, BatchSpanProcessor, Sampler, SdkTracerProvider, SpanData, SpanExporter,
};
use tracing::Level;
use tracing_subscriber::filter::Targets;
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;
use tracing_subscriber::{EnvFilter, Layer, Registry};
use vexil_settings::Problems;

vexil_settings::settings! {
    /// `[telemetry]`: logs and traces.
    #[derive(Clone, Debug)]
    pub struct TelemetryConfig {
        group "telemetry" {
            /// `text` (one human-readable line per event) or `json` (one JSON object per line:
            /// `timestamp`, `level`, `target`, `message` and the event's fields, `span` with the
            /// current span's name and fields) for a log collector. The filter is `VEXIL_LOG`.
            log_format: LogFormat = LogFormat::Text, flag "log-format", env "VEXIL_LOG_FORMAT",
                key "log_format";
            /// Send traces to this OpenTelemetry collector, over OTLP/gRPC in plaintext
            /// (`http://HOST:PORT`, usually a collector agent on the node or beside the process;
            /// it forwards with TLS if it must). Unset: no traces.
            otlp_endpoint: Option<String>, flag "otlp-endpoint", env "VEXIL_OTLP_ENDPOINT",
                key "otlp_endpoint", check otlp_endpoint;
            /// The share of traces recorded, 0 to 1 (a trace started by a caller that sampled it
            /// is recorded whatever this says: parent-based sampling).
            trace_sample_ratio: f64 = 1.0, env "VEXIL_TRACE_SAMPLE_RATIO",
                key "trace_sample_ratio", check sample_ratio;
        }
    }
}

/// How log lines are written.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum LogFormat {
    /// One human-readable line per event.
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

impl fmt::Display for LogFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            LogFormat::Text => "text",
            LogFormat::Json => "json",
        })
    }
}

impl vexil_settings::Value for LogFormat {
    fn from_text(text: &str) -> Result<Self, Problems> {
        match text.trim() {
            "text" => Ok(LogFormat::Text),
            "json" => Ok(LogFormat::Json),
            other => Err(format!("unknown log format {other:?} (expected text or json)").into()),
        }
    }

    fn show(&self) -> Option<toml::Value> {
        Some(toml::Value::String(self.to_string()))
    }
}

fn otlp_endpoint(endpoint: &Option<String>) -> Result<(), String> {
    match endpoint {
        Some(e) if !e.starts_with("http://") || e.len() <= "http://".len() => Err(format!(
            "{e:?}: expected http://HOST:PORT (OTLP/gRPC in plaintext, to a collector nearby)"
        )),
        _ => Ok(()),
    }
}

fn sample_ratio(ratio: &f64) -> Result<(), String> {
    if (0.0..=1.0).contains(ratio) {
        Ok(())
    } else {
        Err(format!("{ratio}: expected a share from 0 to 1"))
    }
}

/// The target of the spans only traces want (the sidecar's per-request span), at `TRACE` level.
pub const OTEL_TARGET: &str = "vexil::otel";

/// The target of the `feature_flag.evaluation` events (OpenTelemetry's semantic conventions for
/// feature flags: `feature_flag.key`, `feature_flag.result.variant`, `feature_flag.provider.name`,
/// `feature_flag.set.id`, `feature_flag.version`), at `TRACE` level.
pub const FEATURE_FLAG_TARGET: &str = "vexil::feature_flag";

/// How often spans are sent (and at exit).
const EXPORT_EVERY: Duration = Duration::from_millis(1000);

/// The log filter's variable (a `tracing` filter: `info`, `warn,vexil_proxy=debug`, ...).
pub const LOG_FILTER_VAR: &str = "VEXIL_LOG";

/// What [`init`] installed; kept by `main` for the life of the process. Dropping it sends the
/// spans not sent yet.
#[must_use = "dropping it ends the process's telemetry"]
pub struct Telemetry {
    traces: Option<Traces>,
}

/// The trace pipeline: the provider, and the runtime its exporter's gRPC client runs on.
struct Traces {
    provider: SdkTracerProvider,
    runtime: Option<tokio::runtime::Runtime>,
}

impl Drop for Telemetry {
    fn drop(&mut self) {
        if let Some(mut traces) = self.traces.take() {
            if let Err(e) = traces.provider.shutdown() {
                eprintln!("telemetry: the last spans were not sent: {e}");
            }
            if let Some(runtime) = traces.runtime.take() {
                // Dropping a runtime inside another one's context panics; this does not.
                runtime.shutdown_background();
            }
        }
    }
}

/// The OTLP exporter, run on a runtime of its own: the batch processor exports from a thread of its
/// own, where tonic's client would find no tokio reactor.
#[derive(Debug)]
struct OnRuntime {
    exporter: opentelemetry_otlp::SpanExporter,
    handle: tokio::runtime::Handle,
}

impl SpanExporter for OnRuntime {
    async fn export(&self, batch: Vec<SpanData>) -> OTelSdkResult {
        // Called on the batch processor's thread, outside any runtime: blocking it on the export
        // is what it expects.
        self.handle.block_on(self.exporter.export(batch))
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        self.exporter.shutdown_with_timeout(timeout)
    }

    fn set_resource(&mut self, resource: &Resource) {
        self.exporter.set_resource(resource);
    }
}

/// The trace pipeline to `endpoint`, for service `service`.
fn traces(endpoint: &str, ratio: f64, service: &'static str) -> Result<Traces, String> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name("vexil-otlp")
        .enable_all()
        .build()
        .map_err(|e| format!("the OTLP exporter's runtime: {e}"))?;
    let exporter = {
        // tonic's channel is made in a runtime's context.
        let _in_runtime = runtime.enter();
        opentelemetry_otlp::SpanExporter::builder()
            .with_tonic()
            .with_endpoint(endpoint)
            .with_timeout(Duration::from_secs(5))
            .build()
            .map_err(|e| format!("the OTLP exporter to {endpoint}: {e}"))?
    };
    let exporter = OnRuntime {
        exporter,
        handle: runtime.handle().clone(),
    };
    let processor = BatchSpanProcessor::builder(exporter)
        .with_batch_config(
            BatchConfigBuilder::default()
                .with_scheduled_delay(EXPORT_EVERY)
                .build(),
        )
        .build();
    let provider = SdkTracerProvider::builder()
        .with_span_processor(processor)
        .with_sampler(Sampler::ParentBased(Box::new(Sampler::TraceIdRatioBased(
            ratio,
        ))))
        .with_resource(Resource::builder().with_service_name(service).build())
        .build();
    Ok(Traces {
        provider,
        runtime: Some(runtime),
    })
}

/// Installs the process's `tracing` subscriber: the filter of `VEXIL_LOG` (else `default_filter`),
/// then every event on standard output in `config.log_format`; and with `config.otlp_endpoint`,
/// traces of service `service` (`vexil-control`, `vexil-proxy`). Call once, at start.
pub fn init(config: &TelemetryConfig, default_filter: &str, service: &'static str) -> Telemetry {
    let filter =
        EnvFilter::try_from_env(LOG_FILTER_VAR).unwrap_or_else(|_| EnvFilter::new(default_filter));
    let logs: Box<dyn Layer<Registry> + Send + Sync> = match config.log_format {
        LogFormat::Text => tracing_subscriber::fmt::layer().boxed(),
        LogFormat::Json => tracing_subscriber::fmt::layer()
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_span_list(false)
            .boxed(),
    };
    let (traces, trouble) = match &config.otlp_endpoint {
        None => (None, None),
        Some(endpoint) => match traces(endpoint, config.trace_sample_ratio, service) {
            Ok(t) => (Some(t), None),
            Err(e) => (None, Some(e)),
        },
    };
    // Traces get the spans at `info` and up, and the sidecar's request spans and flag events.
    let trace_layer = traces.as_ref().map(|t| {
        tracing_opentelemetry::layer()
            .with_tracer(t.provider.tracer("vexil"))
            .with_filter(
                Targets::new()
                    .with_default(Level::INFO)
                    .with_target(OTEL_TARGET, Level::TRACE)
                    .with_target(FEATURE_FLAG_TARGET, Level::TRACE),
            )
    });
    tracing_subscriber::registry()
        .with(logs.with_filter(filter))
        .with(trace_layer)
        .init();
    if let Some(e) = trouble {
        tracing::error!(error = %e, "traces are off");
    } else if let Some(endpoint) = &config.otlp_endpoint {
        tracing::info!(%endpoint, ratio = config.trace_sample_ratio, "sending traces over OTLP");
    }
    Telemetry { traces }
}

#[cfg(test)]
mod tests {
    use super::*;
    use vexil_settings::Value as _;

    #[test]
    fn log_formats_parse_and_show() {
        assert_eq!(LogFormat::from_text("json").unwrap(), LogFormat::Json);
        assert_eq!(LogFormat::from_text(" text ").unwrap(), LogFormat::Text);
        let err = LogFormat::from_text("yaml").unwrap_err().to_string();
        assert!(
            err.contains("\"yaml\"") && err.contains("text or json"),
            "{err}"
        );
        assert_eq!(
            LogFormat::Json.show(),
            Some(toml::Value::String("json".into()))
        );
    }
}
