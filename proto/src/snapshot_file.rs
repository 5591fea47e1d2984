//! The persisted-snapshot format, `vexil-snapshot/1`: one flag set at one revision of one
//! environment, with a checksum.
//!
//! A header line (JSON: `format`, `environment`, `revision`, `sha256` of the body in hex,
//! `saved_at_ms`, and `incarnation`, the environment's incarnation, absent from files of older
//! versions), a `\n`, then the body: the flagd document as JSON text. Sidecars write it to
//! `STATE_DIR/snapshot-<environment>.json` after each applied revision and read it back at start;
//! control exports it per environment (`GET /api/v1/environments/{env}/bootstrap`) for sidecars'
//! `--bootstrap-file`.

use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest, Sha256};

/// The format tag of the header.
pub const FORMAT: &str = "vexil-snapshot/1";

/// The header line.
#[derive(Debug, Serialize, Deserialize)]
struct Header {
    format: String,
    environment: String,
    revision: i64,
    sha256: String,
    saved_at_ms: u64,
    /// Empty (and left out) when unknown.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    incarnation: String,
}

/// A decoded snapshot file.
#[derive(Debug, Clone, PartialEq)]
pub struct SnapshotFile {
    /// The environment it belongs to.
    pub environment: String,
    /// Its revision.
    pub revision: i64,
    /// The environment's incarnation the revision belongs to; empty when unknown (older files).
    pub incarnation: String,
    /// The flagd document.
    pub document: Value,
}

/// Milliseconds since the Unix epoch, now (the header's `saved_at_ms`).
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// The bytes of a snapshot file holding `document` (JSON text) as `environment` at `revision`, of
/// an unknown incarnation.
pub fn encode(environment: &str, revision: i64, document: &str, saved_at_ms: u64) -> Vec<u8> {
    encode_incarnation(environment, "", revision, document, saved_at_ms)
}

/// [`encode`] for revision `revision` of incarnation `incarnation` of `environment`.
pub fn encode_incarnation(
    environment: &str,
    incarnation: &str,
    revision: i64,
    document: &str,
    saved_at_ms: u64,
) -> Vec<u8> {
    let header = Header {
        incarnation: incarnation.into(),
        format: FORMAT.into(),
        environment: environment.into(),
        revision,
        sha256: hex::encode(Sha256::digest(document.as_bytes())),
        saved_at_ms,
    };
    let mut out = serde_json::to_vec(&header).expect("a header always serializes");
    out.push(b'\n');
    out.extend_from_slice(document.as_bytes());
    out
}

/// True when `bytes` start like a snapshot file (a header line naming [`FORMAT`]) rather than a
/// bare flagd document.
pub fn looks_like(bytes: &[u8]) -> bool {
    let first = bytes.split(|&b| b == b'\n').next().unwrap_or_default();
    serde_json::from_slice::<Header>(first).is_ok()
}

/// Decodes a snapshot file, checking its format and checksum; the error says what is wrong.
pub fn decode(bytes: &[u8]) -> Result<SnapshotFile, String> {
    let newline = bytes
        .iter()
        .position(|&b| b == b'\n')
        .ok_or_else(|| "no header line".to_string())?;
    let header: Header =
        serde_json::from_slice(&bytes[..newline]).map_err(|e| format!("unreadable header: {e}"))?;
    if header.format != FORMAT {
        return Err(format!("unknown format {:?}", header.format));
    }
    let body = &bytes[newline + 1..];
    if hex::encode(Sha256::digest(body)) != header.sha256 {
        return Err("checksum mismatch (truncated or modified)".into());
    }
    let document: Value =
        serde_json::from_slice(body).map_err(|e| format!("invalid JSON body: {e}"))?;
    Ok(SnapshotFile {
        environment: header.environment,
        revision: header.revision,
        incarnation: header.incarnation,
        document,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_detects_damage() {
        let bytes = encode("prod", 7, r#"{"flags":{}}"#, 1);
        assert!(looks_like(&bytes));
        assert!(!looks_like(br#"{"flags":{}}"#));
        let file = decode(&bytes).unwrap();
        assert_eq!((file.environment.as_str(), file.revision), ("prod", 7));
        assert_eq!(file.incarnation, "", "unknown");
        let with = encode_incarnation("prod", "0123abcd", 7, r#"{"flags":{}}"#, 1);
        assert_eq!(decode(&with).unwrap().incarnation, "0123abcd");
        assert_eq!(file.document, serde_json::json!({"flags": {}}));
        let e = decode(&bytes[..bytes.len() - 2]).unwrap_err();
        assert!(e.contains("checksum mismatch"), "{e}");
        assert_eq!(decode(b"garbage").unwrap_err(), "no header line");
        let other = String::from_utf8(bytes)
            .unwrap()
            .replace(FORMAT, "vexil-snapshot/9");
        assert!(
            decode(other.as_bytes())
                .unwrap_err()
                .contains("unknown format")
        );
    }
}
