//! `vexil-telemetry`: what both binaries log and trace, set up the same way.
//!
//! - [`TelemetryConfig`]: the `[telemetry]` settings both binaries declare (a section of
//!   `ControlConfig` and of `ProxyConfig`): the log format, text or JSON.
//! - [`init`]: installs the process's `tracing` subscriber from them: the `VEXIL_LOG` filter, then
//!   one line per event on standard output, as text or as one JSON object.

use std::fmt;

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

/// The log filter's variable (a `tracing` filter: `info`, `warn,vexil_proxy=debug`, ...).
pub const LOG_FILTER_VAR: &str = "VEXIL_LOG";

/// What [`init`] installed; kept by `main` for the life of the process.
#[must_use = "dropping it ends the process's telemetry"]
pub struct Telemetry {
    _private: (),
}

/// Installs the process's `tracing` subscriber: the filter of `VEXIL_LOG` (else `default_filter`),
/// then every event on standard output in `config.log_format`. Call once, at start.
pub fn init(config: &TelemetryConfig, default_filter: &str) -> Telemetry {
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
    tracing_subscriber::registry()
        .with(logs)
        .with(filter)
        .init();
    Telemetry { _private: () }
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
