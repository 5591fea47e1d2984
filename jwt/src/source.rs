//! Key sources (secret, PEM file, JWKS file or URL), loading them, and the background refresh of
//! JWKS sources.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, mpsc};
use std::time::Duration;

use arc_swap::ArcSwap;

use crate::error::{JwtError, LoadError};
use crate::fetch::{self, Target};
use crate::key::{Algorithm, Key, KeySet, parse_jwks};
use crate::verifier::{Limits, VerifierConfig};

/// Where keys come from.
#[derive(Clone, PartialEq, Eq)]
pub enum KeySource {
    /// An HS256 secret.
    HmacSecret(Vec<u8>),
    /// A file holding an HS256 secret (its bytes, without a trailing `\n` or `\r\n`).
    HmacSecretFile(PathBuf),
    /// A PEM public key file (`PUBLIC KEY`: RSA or EC P-256; `RSA PUBLIC KEY`: PKCS#1). With
    /// `algorithm` set, the key must be of that algorithm (an EC key given as an RS256 key is
    /// an error).
    PublicKeyFile {
        /// The file.
        path: PathBuf,
        /// The algorithm the configuration expects.
        algorithm: Option<Algorithm>,
    },
    /// A JWKS file, read at start and at every refresh.
    JwksFile(PathBuf),
    /// A JWKS URL (`http://` or `https://`), fetched at start and at every refresh.
    JwksUrl(String),
}

impl fmt::Debug for KeySource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KeySource::HmacSecret(_) => f.write_str("HmacSecret(<redacted>)"),
            KeySource::HmacSecretFile(p) => f.debug_tuple("HmacSecretFile").field(p).finish(),
            KeySource::PublicKeyFile { path, algorithm } => f
                .debug_struct("PublicKeyFile")
                .field("path", path)
                .field("algorithm", algorithm)
                .finish(),
            KeySource::JwksFile(p) => f.debug_tuple("JwksFile").field(p).finish(),
            KeySource::JwksUrl(u) => f.debug_tuple("JwksUrl").field(u).finish(),
        }
    }
}

impl KeySource {
    /// True for the sources a refresh reloads (JWKS files and URLs).
    pub fn is_refreshable(&self) -> bool {
        matches!(self, KeySource::JwksFile(_) | KeySource::JwksUrl(_))
    }
}

/// A key source with the label its errors carry (a configuration key, e.g.
/// `context_options.jwt_rs256_public_key`) and, for single-key sources, an optional key id.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeySpec {
    /// Prefix of this source's errors.
    pub label: String,
    /// The source.
    pub source: KeySource,
    /// The `kid` of the key of a secret or PEM source (JWKS keys carry their own).
    pub kid: Option<String>,
}

impl KeySpec {
    /// `source`, labelled `label`, without key id.
    pub fn new(label: impl Into<String>, source: KeySource) -> KeySpec {
        KeySpec {
            label: label.into(),
            source,
            kid: None,
        }
    }
}

/// The key sources a configuration can name, each optional: what control's `[jwt]` and the
/// sidecar's `[context_options] jwt_*` settings both offer, turned into labelled [`KeySpec`]s in one
/// place.
#[derive(Clone, Debug, Default)]
pub struct KeySources<'a> {
    /// HS256 shared secret.
    pub hs256_secret: Option<&'a [u8]>,
    /// A file holding the HS256 secret.
    pub hs256_secret_file: Option<&'a PathBuf>,
    /// RS256 public key (PEM file).
    pub rs256_public_key: Option<&'a PathBuf>,
    /// ES256 public key (PEM file).
    pub es256_public_key: Option<&'a PathBuf>,
    /// A JWKS file.
    pub jwks_file: Option<&'a PathBuf>,
    /// A JWKS URL.
    pub jwks_url: Option<&'a str>,
}

impl KeySources<'_> {
    /// True when at least one source is set.
    pub fn any(&self) -> bool {
        self.hs256_secret.is_some()
            || self.hs256_secret_file.is_some()
            || self.rs256_public_key.is_some()
            || self.es256_public_key.is_some()
            || self.jwks_file.is_some()
            || self.jwks_url.is_some()
    }

    /// The sources that are set, in this order, each labelled `label(name)` where `name` is the
    /// field's name (`hs256_secret`, ..., `jwks_url`), so that errors name the setting.
    pub fn specs(&self, label: impl Fn(&str) -> String) -> Vec<KeySpec> {
        let pem = |path: Option<&PathBuf>, alg| {
            path.map(|path| KeySource::PublicKeyFile {
                path: path.clone(),
                algorithm: Some(alg),
            })
        };
        [
            (
                "hs256_secret",
                self.hs256_secret.map(|s| KeySource::HmacSecret(s.to_vec())),
            ),
            (
                "hs256_secret_file",
                self.hs256_secret_file
                    .cloned()
                    .map(KeySource::HmacSecretFile),
            ),
            (
                "rs256_public_key",
                pem(self.rs256_public_key, Algorithm::RS256),
            ),
            (
                "es256_public_key",
                pem(self.es256_public_key, Algorithm::ES256),
            ),
            (
                "jwks_file",
                self.jwks_file.cloned().map(KeySource::JwksFile),
            ),
            (
                "jwks_url",
                self.jwks_url.map(|u| KeySource::JwksUrl(u.to_string())),
            ),
        ]
        .into_iter()
        .filter_map(|(name, source)| source.map(|s| KeySpec::new(label(name), s)))
        .collect()
    }
}

/// What loading needs besides the source.
pub(crate) struct Loader {
    pub(crate) limits: Limits,
    pub(crate) fetch_timeout: Duration,
    pub(crate) tls: Option<Arc<rustls::ClientConfig>>,
}

impl Loader {
    /// Loads a source other than a JWKS URL.
    fn load_local(&self, spec: &KeySpec) -> Result<Vec<Key>, String> {
        let named = |key: Key| match &spec.kid {
            Some(kid) => key.with_kid(kid),
            None => key,
        };
        match &spec.source {
            KeySource::HmacSecret(secret) => Ok(vec![named(Key::hs256(secret)?)]),
            KeySource::HmacSecretFile(path) => {
                let bytes = read(path, 64 << 10)?;
                let secret = bytes
                    .strip_suffix(b"\n")
                    .map(|s| s.strip_suffix(b"\r").unwrap_or(s))
                    .unwrap_or(&bytes);
                Key::hs256(secret)
                    .map(|k| vec![named(k)])
                    .map_err(|e| format!("{}: {e}", path.display()))
            }
            KeySource::PublicKeyFile { path, algorithm } => {
                let text = read(path, 64 << 10)?;
                let text = std::str::from_utf8(&text)
                    .map_err(|_| format!("{}: not a PEM text file", path.display()))?;
                let key = Key::from_pem(text).map_err(|e| format!("{}: {e}", path.display()))?;
                if let Some(alg) = algorithm
                    && key.algorithm() != *alg
                {
                    return Err(format!(
                        "{}: a {} key, where a {alg} key is expected",
                        path.display(),
                        key.algorithm()
                    ));
                }
                Ok(vec![named(key)])
            }
            KeySource::JwksFile(path) => {
                let text = read(path, self.limits.max_jwks_bytes)?;
                parse_jwks(&text, self.limits.max_jwks_keys)
                    .map_err(|e| format!("{}: {e}", path.display()))
            }
            KeySource::JwksUrl(_) => unreachable!("fetched by load"),
        }
    }

    /// Loads one source; a URL is fetched on the current tokio runtime.
    pub(crate) async fn load(&self, spec: &KeySpec) -> Result<Vec<Key>, JwtError> {
        let result = match &spec.source {
            KeySource::JwksUrl(url) => self.fetch_jwks(url).await,
            _ => self.load_local(spec),
        };
        result.map_err(|reason| JwtError::key(spec.label.clone(), reason))
    }

    async fn fetch_jwks(&self, url: &str) -> Result<Vec<Key>, String> {
        let target = Target::parse(url).map_err(|e| format!("{url}: {e}"))?;
        let body = fetch::get(
            &target,
            self.tls.as_ref(),
            self.fetch_timeout,
            self.limits.max_jwks_bytes,
        )
        .await
        .map_err(|e| format!("{url}: {e}"))?;
        parse_jwks(&body, self.limits.max_jwks_keys).map_err(|e| format!("{url}: {e}"))
    }
}

fn read(path: &Path, max: usize) -> Result<Vec<u8>, String> {
    use std::io::Read as _;
    let file = std::fs::File::open(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let mut out = Vec::new();
    file.take(max as u64 + 1)
        .read_to_end(&mut out)
        .map_err(|e| format!("{}: {e}", path.display()))?;
    if out.len() > max {
        return Err(format!("{}: over the limit of {max} bytes", path.display()));
    }
    Ok(out)
}

/// The keys of every source, as last loaded successfully.
struct Sources {
    specs: Vec<KeySpec>,
    last: Vec<Vec<Key>>,
}

impl Sources {
    fn key_set(&self) -> KeySet {
        KeySet::new(self.last.iter().flatten().cloned().collect())
    }
}

/// What the refresh thread is asked.
enum Command {
    /// Reload the refreshable sources now, and say how it went.
    RefreshNow(mpsc::Sender<Result<(), LoadError>>),
}

/// The handle of the refresh thread: dropping it ends the thread.
pub(crate) struct Refresher {
    commands: mpsc::Sender<Command>,
}

impl Refresher {
    /// Asks the thread to reload now and waits for the outcome.
    pub(crate) fn refresh_now(&self) -> Result<(), LoadError> {
        let (tx, rx) = mpsc::channel();
        self.commands
            .send(Command::RefreshNow(tx))
            .map_err(|_| gone())?;
        rx.recv().map_err(|_| gone())?
    }
}

fn gone() -> LoadError {
    JwtError::key("jwks refresh", "the refresh thread has stopped").into()
}

/// Loads every source of `config`. Without JWKS sources: the key set, and no refresher. With
/// some: a thread (with its own single-threaded tokio runtime, so this works inside or outside a
/// runtime of the caller) loads them, then reloads the JWKS sources every `jwks_refresh` (and on
/// [`Refresher::refresh_now`]); a source that fails keeps its last good keys. The thread ends
/// when the refresher is dropped.
///
/// Blocks until the first load is done (a JWKS URL: up to the fetch timeout). Every source that
/// fails is reported.
pub(crate) fn start(
    config: &VerifierConfig,
) -> Result<(Arc<ArcSwap<KeySet>>, Option<Refresher>), LoadError> {
    let specs = config.keys.clone();
    for spec in &specs {
        if let KeySource::JwksUrl(url) = &spec.source
            && Target::parse(url).is_ok_and(|t| !t.is_https())
        {
            tracing::warn!(
                source = %spec.label,
                "JWKS URL over plain http: the keys are not authenticated in transit \
                 (use https outside a trusted network)"
            );
        }
    }
    let needs_tls = specs.iter().any(|s| match &s.source {
        KeySource::JwksUrl(url) => Target::parse(url).is_ok_and(|t| t.is_https()),
        _ => false,
    });
    let tls = if needs_tls {
        Some(
            fetch::tls_config(config.jwks_ca_file.as_deref())
                .map_err(|e| JwtError::key("jwks CA file", e))?,
        )
    } else {
        None
    };
    let loader = Loader {
        limits: config.limits.clone(),
        fetch_timeout: config.jwks_fetch_timeout,
        tls,
    };
    if !specs.iter().any(|s| s.source.is_refreshable()) {
        let mut keys = Vec::new();
        let mut problems = Vec::new();
        for spec in &specs {
            match loader.load_local(spec) {
                Ok(k) => keys.extend(k),
                Err(reason) => problems.push(JwtError::key(spec.label.clone(), reason)),
            }
        }
        if !problems.is_empty() {
            return Err(LoadError { problems });
        }
        return Ok((Arc::new(ArcSwap::from_pointee(KeySet::new(keys))), None));
    }
    let keys = Arc::new(ArcSwap::from_pointee(KeySet::default()));
    let (first_tx, first_rx) = mpsc::sync_channel::<Result<(), LoadError>>(1);
    let (commands, command_rx) = mpsc::channel::<Command>();
    let interval = config.jwks_refresh;
    let shared = keys.clone();
    std::thread::Builder::new()
        .name("vexil-jwks".into())
        .spawn(move || {
            let rt = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(rt) => rt,
                Err(e) => {
                    let _ = first_tx.send(Err(JwtError::key("jwks refresh", e).into()));
                    return;
                }
            };
            let mut sources = match rt.block_on(load_all(&loader, specs)) {
                Ok(s) => s,
                Err(e) => {
                    let _ = first_tx.send(Err(e));
                    return;
                }
            };
            shared.store(Arc::new(sources.key_set()));
            let _ = first_tx.send(Ok(()));
            loop {
                let command = if interval.is_zero() {
                    command_rx.recv().ok()
                } else {
                    match command_rx.recv_timeout(interval) {
                        Ok(c) => Some(c),
                        Err(mpsc::RecvTimeoutError::Timeout) => {
                            let _ = rt.block_on(refresh(&loader, &mut sources, &shared));
                            continue;
                        }
                        Err(mpsc::RecvTimeoutError::Disconnected) => None,
                    }
                };
                match command {
                    None => return,
                    Some(Command::RefreshNow(reply)) => {
                        let outcome = rt.block_on(refresh(&loader, &mut sources, &shared));
                        let _ = reply.send(outcome);
                    }
                }
            }
        })
        .map_err(|e| JwtError::key("jwks refresh", e))?;
    first_rx.recv().map_err(|_| gone())??;
    Ok((keys, Some(Refresher { commands })))
}

/// Loads every source; every failure is reported.
async fn load_all(loader: &Loader, specs: Vec<KeySpec>) -> Result<Sources, LoadError> {
    let mut last = Vec::with_capacity(specs.len());
    let mut problems = Vec::new();
    for spec in &specs {
        match loader.load(spec).await {
            Ok(keys) => last.push(keys),
            Err(e) => problems.push(e),
        }
    }
    if problems.is_empty() {
        Ok(Sources { specs, last })
    } else {
        Err(LoadError { problems })
    }
}

/// Reloads the refreshable sources; one that fails keeps its last good keys (and is reported).
/// The new set is swapped in when it differs from the current one.
async fn refresh(
    loader: &Loader,
    sources: &mut Sources,
    keys: &ArcSwap<KeySet>,
) -> Result<(), LoadError> {
    let mut problems = Vec::new();
    for i in 0..sources.specs.len() {
        if !sources.specs[i].source.is_refreshable() {
            continue;
        }
        match loader.load(&sources.specs[i]).await {
            Ok(new) => sources.last[i] = new,
            Err(e) => {
                tracing::warn!(error = %e, "JWKS refresh failed; keeping the last good keys");
                problems.push(e);
            }
        }
    }
    let set = sources.key_set();
    if *keys.load_full() != set {
        tracing::info!(keys = set.keys().len(), "JWT verification keys changed");
        keys.store(Arc::new(set));
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(LoadError { problems })
    }
}
