//! The offline flag source (`--flags-file PATH`): a flagd document on disk, reloaded when it
//! changes.
//!
//! The file is compiled in [`Mode::Lenient`], as flagd loads files: a flag with problems is kept and
//! answers `PARSE_ERROR`, and every tolerated problem is logged with its JSON path (and shown on
//! `/debug/snapshot`). A file that cannot be used at all (unreadable, not JSON, not a flag set)
//! changes nothing: the last good snapshot stays in service and the error is logged with its
//! position or JSON path.
//!
//! Each published snapshot has [`Source::File`], the file name as its environment (unless one is
//! configured) and a reload counter as its revision (1 for the first load). A change is noticed by
//! polling (every 250 ms by default, no dependency, works for editors that replace the file and for
//! Kubernetes ConfigMap symlink swaps): the file is read again when its modification time or length
//! changed, or while its modification time is within the last two seconds (file systems with a
//! coarse clock); it is compiled only when its SHA-256 differs from the last one read, and published
//! only when the compiled set differs from the one being served.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use sha2::{Digest, Sha256};
use vexil_engine::{CompileOptions, FlagSet, Mode, ValidationErrors, parse_json};

use crate::metrics::Metrics;
use crate::snapshot::{Snapshot, SnapshotCell, Source, changed_keys};

/// Settings of a file source.
#[derive(Clone, Debug)]
pub struct FileSourceConfig {
    /// The flagd document.
    pub path: PathBuf,
    /// The environment reported for it; default: the file name.
    pub environment: Option<String>,
    /// How often the file is checked.
    pub poll_interval: Duration,
    /// Compilation limits.
    pub limits: vexil_engine::Limits,
}

impl FileSourceConfig {
    /// Defaults for `path`: its file name as environment, checked every 250 ms, default limits.
    pub fn new(path: impl Into<PathBuf>) -> Self {
        FileSourceConfig {
            path: path.into(),
            environment: None,
            poll_interval: Duration::from_millis(250),
            limits: vexil_engine::Limits::default(),
        }
    }
}

/// Why the file could not be used; the last good snapshot stays in service.
#[derive(Debug)]
pub enum LoadError {
    /// It could not be read.
    Io(PathBuf, std::io::Error),
    /// It is not a flag set (not UTF-8, not JSON, or not a flagd document); every problem is listed
    /// with its JSON path or position.
    Invalid(PathBuf, ValidationErrors),
}

impl std::fmt::Display for LoadError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            LoadError::Io(path, e) => write!(f, "reading {}: {e}", path.display()),
            LoadError::Invalid(path, errors) => {
                write!(f, "{}: not a usable flag set", path.display())?;
                for e in errors {
                    write!(f, "\n  {e}")?;
                }
                Ok(())
            }
        }
    }
}

impl std::error::Error for LoadError {}

/// What one check of the file did.
#[derive(Debug)]
pub enum Reload {
    /// A new snapshot was published.
    Published(Arc<Snapshot>),
    /// Nothing to do: the file (or the flag set it compiles to) did not change, or it is the same
    /// broken content already reported.
    Unchanged,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabels {
    result: &'static str,
}

#[derive(Clone)]
struct FileMetrics {
    reloads: Family<ResultLabels, Counter>,
    problems: Gauge,
}

/// Identifies a version of the file without reading it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Stat {
    modified: Option<SystemTime>,
    len: u64,
}

/// Loads a flagd file into a [`SnapshotCell`] and keeps it current.
pub struct FileSource {
    config: FileSourceConfig,
    cell: Arc<SnapshotCell>,
    environment: String,
    reloads: i64,
    stat: Option<Stat>,
    loaded_hash: Option<[u8; 32]>,
    failed_hash: Option<[u8; 32]>,
    unreadable: bool,
    metrics: Option<FileMetrics>,
}

/// Modification times this recent are not trusted to change on the next write.
const RECENT: Duration = Duration::from_secs(2);

impl FileSource {
    /// A source for `config.path` publishing into `cell`. Nothing is read yet.
    pub fn new(config: FileSourceConfig, cell: Arc<SnapshotCell>) -> Self {
        let environment = config.environment.clone().unwrap_or_else(|| {
            config.path.file_name().map_or_else(
                || config.path.display().to_string(),
                |n| n.to_string_lossy().into_owned(),
            )
        });
        FileSource {
            config,
            cell,
            environment,
            reloads: 0,
            stat: None,
            loaded_hash: None,
            failed_hash: None,
            unreadable: false,
            metrics: None,
        }
    }

    /// Registers `file_reloads_total{result="ok"|"error"}` and `file_problems` in `metrics`.
    pub fn with_metrics(mut self, metrics: &Metrics) -> Self {
        let file_metrics = FileMetrics {
            reloads: Family::default(),
            problems: Gauge::default(),
        };
        metrics.register(
            "file_reloads",
            "Loads of the flags file by result (error: the last good flag set stays in service)",
            file_metrics.reloads.clone(),
        );
        metrics.register(
            "file_problems",
            "Problems tolerated in the flags file being served (flags answering PARSE_ERROR)",
            file_metrics.problems.clone(),
        );
        self.metrics = Some(file_metrics);
        self
    }

    /// The file being watched.
    pub fn path(&self) -> &Path {
        &self.config.path
    }

    /// Checks the file and reloads it when it may have changed (see the module docs).
    pub fn poll(&mut self) -> Result<Reload, LoadError> {
        let stat = match std::fs::metadata(&self.config.path) {
            Ok(meta) => Stat {
                modified: meta.modified().ok(),
                len: meta.len(),
            },
            Err(e) => {
                // Counted once while the file stays unreadable; read again once it is back.
                self.stat = None;
                if !self.unreadable {
                    self.unreadable = true;
                    self.count("error");
                }
                return Err(LoadError::Io(self.config.path.clone(), e));
            }
        };
        self.unreadable = false;
        let recent = stat.modified.is_none_or(|m| {
            SystemTime::now()
                .duration_since(m)
                .map_or(true, |age| age < RECENT)
        });
        if self.stat == Some(stat) && !recent {
            return Ok(Reload::Unchanged);
        }
        self.stat = Some(stat);
        self.load()
    }

    /// Reads the file and publishes it when its flag set differs from the one being served.
    pub fn load(&mut self) -> Result<Reload, LoadError> {
        let bytes = std::fs::read(&self.config.path).map_err(|e| self.io_error(e))?;
        let hash: [u8; 32] = Sha256::digest(&bytes).into();
        if self.loaded_hash == Some(hash) || self.failed_hash == Some(hash) {
            return Ok(Reload::Unchanged);
        }
        match self.compile(&bytes) {
            Ok(set) => {
                self.loaded_hash = Some(hash);
                self.failed_hash = None;
                Ok(self.publish(set))
            }
            Err(errors) => {
                self.failed_hash = Some(hash);
                self.count("error");
                Err(LoadError::Invalid(self.config.path.clone(), errors))
            }
        }
    }

    /// Polls every [`FileSourceConfig::poll_interval`] until `shutdown` resolves, logging each
    /// reload and each new error (a file that stays broken or missing is reported once).
    pub async fn run(mut self, shutdown: impl Future<Output = ()> + Send) {
        let mut tick = tokio::time::interval(self.config.poll_interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tokio::pin!(shutdown);
        let mut last_error: Option<String> = None;
        loop {
            tokio::select! {
                () = &mut shutdown => return,
                _ = tick.tick() => {}
            }
            // File I/O off the async workers: a large file must not stall a lookup.
            let (source, result) = match tokio::task::spawn_blocking(move || {
                let result = self.poll();
                (self, result)
            })
            .await
            {
                Ok(done) => done,
                Err(e) => {
                    tracing::error!("flags file watcher failed: {e}");
                    return;
                }
            };
            self = source;
            match result {
                Ok(_) => last_error = None,
                Err(e) => {
                    let message = e.to_string();
                    if last_error.as_deref() != Some(&message) {
                        tracing::error!("{message}; still serving the last good flag set");
                        last_error = Some(message);
                    }
                }
            }
        }
    }

    fn io_error(&self, e: std::io::Error) -> LoadError {
        self.count("error");
        LoadError::Io(self.config.path.clone(), e)
    }

    fn compile(&self, bytes: &[u8]) -> Result<FlagSet, ValidationErrors> {
        let text = std::str::from_utf8(bytes).map_err(|e| {
            ValidationErrors(vec![vexil_engine::ValidationError {
                path: String::new(),
                message: format!("not UTF-8 text: {e}"),
            }])
        })?;
        let doc = parse_json(text)?;
        let options = CompileOptions {
            limits: self.config.limits,
            mode: Mode::Lenient,
        };
        FlagSet::compile(&doc, &options)
    }

    /// Publishes `set` unless it is the flag set already served.
    fn publish(&mut self, set: FlagSet) -> Reload {
        if let Some(current) = self.cell.load()
            && same_flags(&current.flags, &set)
        {
            tracing::debug!(file = %self.config.path.display(), "flags file rewritten without changes");
            return Reload::Unchanged;
        }
        let problems = set.problems().len();
        for problem in set.problems() {
            tracing::warn!(
                file = %self.config.path.display(),
                "{problem} (this flag answers PARSE_ERROR)"
            );
        }
        if let Some(m) = &self.metrics {
            m.problems.set(i64::try_from(problems).unwrap_or(i64::MAX));
        }
        self.reloads += 1;
        let source = Source::File(self.config.path.display().to_string());
        let snapshot = Snapshot::new(self.environment.clone(), self.reloads, set, source);
        let published = self.cell.publish(snapshot);
        self.count("ok");
        tracing::info!(
            file = %self.config.path.display(),
            revision = published.revision,
            flags = published.flags.len(),
            changed = published.changed.len(),
            problems,
            "flags file loaded"
        );
        Reload::Published(published)
    }

    fn count(&self, result: &'static str) {
        if let Some(m) = &self.metrics {
            m.reloads.get_or_create(&ResultLabels { result }).inc();
        }
    }
}

/// True when two sets evaluate alike: same flag definitions and effective metadata, same shared
/// rules, same set metadata.
fn same_flags(a: &FlagSet, b: &FlagSet) -> bool {
    a.metadata() == b.metadata()
        && a.evaluators() == b.evaluators()
        && changed_keys(Some(a), b).is_empty()
}
