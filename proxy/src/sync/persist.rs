//! The applied snapshot on disk, so a sidecar restarted while control is away still serves.
//!
//! One file per environment, `STATE_DIR/snapshot-<environment>.json`: a header line (JSON: format,
//! environment, revision, SHA-256 of the body, time saved), then the body, the flagd document as
//! sent by control. It is written to a temporary file, fsynced, renamed over the old one and the
//! directory fsynced, so a crash leaves the old file or the new one, never a mix. On load, a file
//! whose header does not parse or whose body does not match its checksum (truncated, edited,
//! corrupted) is set aside as `*.corrupt-<unix time>` and not served.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use serde_json::Value;
use vexil_proto::snapshot_file;

use crate::shadow::{Proposal, Proposals};
use crate::signing::SigningKeys;

/// The format tag of the header (`vexil_proto::snapshot_file`).
pub use vexil_proto::snapshot_file::FORMAT;

/// A snapshot read back from disk.
#[derive(Debug)]
pub struct Persisted {
    /// Environment it belongs to.
    pub environment: String,
    /// Its revision.
    pub revision: i64,
    /// The environment's incarnation it belongs to (empty: unknown, a file of an older version).
    pub incarnation: String,
    /// The flagd document.
    pub document: Value,
}

/// Why a persisted snapshot could not be used.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// The file could not be read.
    #[error("reading {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// The file is damaged or not a snapshot of this environment.
    #[error("{path}: {reason}")]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
}

/// The file of `environment`'s snapshot in `dir`.
pub fn path(dir: &Path, environment: &str) -> PathBuf {
    let safe: String = environment
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.' {
                c
            } else {
                '_'
            }
        })
        .collect();
    dir.join(format!("snapshot-{safe}.json"))
}

/// Writes `document` (JSON text) as `environment`'s snapshot at `revision`, of an unknown
/// incarnation, atomically.
pub fn save(dir: &Path, environment: &str, revision: i64, document: &str) -> std::io::Result<()> {
    save_incarnation(dir, environment, "", revision, document)
}

/// [`save`] of revision `revision` of incarnation `incarnation`.
pub fn save_incarnation(
    dir: &Path,
    environment: &str,
    incarnation: &str,
    revision: i64,
    document: &str,
) -> std::io::Result<()> {
    let bytes = snapshot_file::encode_incarnation(
        environment,
        incarnation,
        revision,
        document,
        snapshot_file::now_ms(),
    );
    write_atomic(dir, &path(dir, environment), &bytes, 0o644)
}

/// Writes `bytes` to `target` in `dir` through a temporary file of mode `mode`, fsynced, renamed
/// over it, and the directory fsynced: a crash leaves the old file or the new one.
fn write_atomic(dir: &Path, target: &Path, bytes: &[u8], mode: u32) -> std::io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt as _;
    fs::create_dir_all(dir)?;
    let tmp = target.with_extension(format!("tmp-{}", std::process::id()));
    {
        let mut file = fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(mode)
            .open(&tmp)?;
        file.write_all(bytes)?;
        file.sync_all()?;
    }
    fs::rename(&tmp, target)?;
    // Make the rename itself durable.
    fs::File::open(dir)?.sync_all()?;
    Ok(())
}

/// The file of `environment`'s signing keys in `dir` (mode 0600: a key lets its holder sign
/// decisions other sidecars believe).
pub fn keys_path(dir: &Path, environment: &str) -> PathBuf {
    let snapshot = path(dir, environment);
    let name = snapshot
        .file_name()
        .and_then(|n| n.to_str())
        .and_then(|n| n.strip_prefix("snapshot-"))
        .unwrap_or("environment.json");
    dir.join(format!("signing-keys-{name}"))
}

#[derive(serde::Serialize, serde::Deserialize)]
struct KeysFile {
    environment: String,
    incarnation: String,
    keys: Vec<KeyEntry>,
}

#[derive(serde::Serialize, serde::Deserialize)]
struct KeyEntry {
    id: String,
    /// Base64.
    secret: String,
    created_at_ms: i64,
}

/// Removes `target`; a file that is not there is fine.
fn remove_if_present(target: &Path) -> std::io::Result<()> {
    match fs::remove_file(target) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

/// Writes `environment`'s signing keys (of `incarnation`) to `dir`, readable by the sidecar's
/// user only; no keys: the file is removed.
pub fn save_keys(
    dir: &Path,
    environment: &str,
    incarnation: &str,
    keys: &SigningKeys,
) -> std::io::Result<()> {
    use base64::Engine as _;
    let target = keys_path(dir, environment);
    if keys.is_empty() {
        return remove_if_present(&target);
    }
    let file = KeysFile {
        environment: environment.to_string(),
        incarnation: incarnation.to_string(),
        keys: keys
            .parts()
            .into_iter()
            .map(|(id, secret, created_at_ms)| KeyEntry {
                id,
                secret: base64::engine::general_purpose::STANDARD.encode(secret),
                created_at_ms,
            })
            .collect(),
    };
    let bytes = serde_json::to_vec(&file).map_err(std::io::Error::other)?;
    write_atomic(dir, &target, &bytes, 0o600)
}

/// The signing keys saved for `incarnation` of `environment` in `dir`: none when there is no
/// file or it is of another incarnation; an error when it is damaged.
pub fn load_keys(dir: &Path, environment: &str, incarnation: &str) -> Result<SigningKeys, String> {
    use base64::Engine as _;
    let target = keys_path(dir, environment);
    let bytes = match fs::read(&target) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(SigningKeys::default()),
        Err(e) => return Err(format!("reading {}: {e}", target.display())),
    };
    let file: KeysFile =
        serde_json::from_slice(&bytes).map_err(|e| format!("{}: {e}", target.display()))?;
    if file.environment != environment || file.incarnation != incarnation || incarnation.is_empty()
    {
        return Ok(SigningKeys::default());
    }
    let mut parts = Vec::with_capacity(file.keys.len());
    for k in file.keys {
        let secret = base64::engine::general_purpose::STANDARD
            .decode(&k.secret)
            .map_err(|e| format!("{}: key {:?}: {e}", target.display(), k.id))?;
        parts.push((k.id, secret, k.created_at_ms));
    }
    SigningKeys::from_parts(parts).map_err(|e| format!("{}: {e}", target.display()))
}

/// The file of `environment`'s proposals in `dir` (shadow evaluation).
pub fn proposals_path(dir: &Path, environment: &str) -> PathBuf {
    let snapshot = path(dir, environment);
    let name = snapshot
        .file_name()
        .and_then(|n| n.to_str())
        .and_then(|n| n.strip_prefix("snapshot-"))
        .unwrap_or("environment.json");
    dir.join(format!("proposals-{name}"))
}

#[derive(serde::Serialize, serde::Deserialize)]
struct ProposalsFile {
    environment: String,
    incarnation: String,
    proposals: Vec<Proposal>,
}

/// Writes `environment`'s proposals (of `incarnation`) to `dir`; none: the file is removed.
pub fn save_proposals(
    dir: &Path,
    environment: &str,
    incarnation: &str,
    proposals: &Proposals,
) -> std::io::Result<()> {
    let target = proposals_path(dir, environment);
    if proposals.is_empty() {
        return remove_if_present(&target);
    }
    let file = ProposalsFile {
        environment: environment.to_string(),
        incarnation: incarnation.to_string(),
        proposals: proposals.0.clone(),
    };
    let bytes = serde_json::to_vec(&file).map_err(std::io::Error::other)?;
    write_atomic(dir, &target, &bytes, 0o644)
}

/// The proposals saved for `incarnation` of `environment` in `dir`: none when there is no file or
/// it is of another incarnation; an error when it is damaged.
pub fn load_proposals(
    dir: &Path,
    environment: &str,
    incarnation: &str,
) -> Result<Proposals, String> {
    let target = proposals_path(dir, environment);
    let bytes = match fs::read(&target) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Proposals::default()),
        Err(e) => return Err(format!("reading {}: {e}", target.display())),
    };
    let file: ProposalsFile =
        serde_json::from_slice(&bytes).map_err(|e| format!("{}: {e}", target.display()))?;
    if file.environment != environment || file.incarnation != incarnation || incarnation.is_empty()
    {
        return Ok(Proposals::default());
    }
    Ok(Proposals(file.proposals))
}

/// Reads `environment`'s snapshot from `dir`: `Ok(None)` when there is none.
pub fn load(dir: &Path, environment: &str) -> Result<Option<Persisted>, LoadError> {
    let path = path(dir, environment);
    let bytes = match fs::read(&path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => return Err(LoadError::Io { path, source }),
    };
    let corrupt = |reason: String| LoadError::Corrupt {
        path: path.clone(),
        reason,
    };
    let file = snapshot_file::decode(&bytes).map_err(corrupt)?;
    if file.environment != environment {
        return Err(corrupt(format!(
            "snapshot of environment {:?}, not {environment:?}",
            file.environment
        )));
    }
    Ok(Some(Persisted {
        environment: file.environment,
        revision: file.revision,
        incarnation: file.incarnation,
        document: file.document,
    }))
}

/// Moves a damaged snapshot file out of the way (kept for inspection); returns its new name.
pub fn set_aside(dir: &Path, environment: &str) -> std::io::Result<PathBuf> {
    let from = path(dir, environment);
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    // Never over an earlier one (two damaged files within a second keep both).
    let mut to = from.with_extension(format!("json.corrupt-{secs}"));
    let mut n = 1;
    while to.exists() {
        to = from.with_extension(format!("json.corrupt-{secs}-{n}"));
        n += 1;
    }
    fs::rename(&from, &to)?;
    Ok(to)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir() -> PathBuf {
        let d = std::env::temp_dir().join(format!("vexil-persist-{:016x}", rand::random::<u64>()));
        fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn round_trips_and_detects_damage() {
        let d = dir();
        assert!(load(&d, "prod").unwrap().is_none());
        save(&d, "prod", 7, r#"{"flags":{}}"#).unwrap();
        let p = load(&d, "prod").unwrap().unwrap();
        assert_eq!((p.revision, p.document["flags"].is_object()), (7, true));
        // Truncated.
        let file = path(&d, "prod");
        let text = fs::read(&file).unwrap();
        fs::write(&file, &text[..text.len() - 3]).unwrap();
        let e = load(&d, "prod").unwrap_err().to_string();
        assert!(e.contains("checksum mismatch"), "{e}");
        let aside = set_aside(&d, "prod").unwrap();
        assert!(aside.exists() && !file.exists());
        // A second damaged file set aside at once keeps the first.
        fs::write(&file, b"damaged again").unwrap();
        let again = set_aside(&d, "prod").unwrap();
        assert!(again != aside && again.exists() && aside.exists());
        fs::remove_file(&again).unwrap();
        // Garbage header.
        fs::write(&file, b"garbage").unwrap();
        assert!(
            load(&d, "prod")
                .unwrap_err()
                .to_string()
                .contains("no header line")
        );
        // Another environment's file.
        save(&d, "prod", 1, "{}").unwrap();
        fs::rename(path(&d, "prod"), path(&d, "dev")).unwrap();
        assert!(
            load(&d, "dev")
                .unwrap_err()
                .to_string()
                .contains("not \"dev\"")
        );
        fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn proposals_round_trip_for_their_incarnation_only() {
        let d = dir();
        let proposals = Proposals(vec![Proposal {
            flag: "a".into(),
            id: "0123456789abcdef".into(),
            definition: "{}".into(),
            sample_ratio: 0.5,
        }]);
        save_proposals(&d, "prod", "i1", &proposals).unwrap();
        assert_eq!(load_proposals(&d, "prod", "i1").unwrap(), proposals);
        assert!(load_proposals(&d, "prod", "i2").unwrap().is_empty());
        save_proposals(&d, "prod", "i1", &Proposals::default()).unwrap();
        assert!(!proposals_path(&d, "prod").exists());
        fs::write(proposals_path(&d, "prod"), b"{").unwrap();
        assert!(load_proposals(&d, "prod", "i1").is_err());
        fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn names_are_safe() {
        assert_eq!(
            path(Path::new("/s"), "../etc"),
            Path::new("/s/snapshot-.._etc.json")
        );
    }
}
