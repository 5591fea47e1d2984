//! Signed decisions: `vexil-signature`, an HMAC-SHA256 over the `vexil-flags` a sidecar wrote
//! (docs/headers.md, "Signed decisions"; ADR 0031).
//!
//! Control generates each environment's keys, rotates them, and delivers them in the `Full`
//! snapshot frame ([`SigningKeys::from_proto`]); the newest signs, every key held verifies. The
//! header is an RFC 8941 dictionary:
//!
//! ```text
//! vexil-signature: key="3f9a0c12", rev=42, t=1765100000, mac=:<base64 of 32 bytes>:
//! ```
//!
//! `mac` is HMAC-SHA256 with key `key` over `vexil-signature/1 \n <environment> \n <rev> \n <t> \n
//! <key> \n <the vexil-flags value>`: bound to the environment (a signature of another
//! environment never verifies), the signer's revision, the time it was made (a signature older than
//! the verifier's maximum age is refused, which bounds a replay) and the exact header value.

use std::fmt::Write as _;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use ring::hmac;
use sfv::{BareItem, Dictionary, ListEntry, Parser};

/// The header the signature travels in.
pub const SIGNATURE_HEADER: &str = "vexil-signature";

/// Domain separation of the MAC input (the format's version).
const CONTEXT: &str = "vexil-signature/1";

/// Longest key id accepted.
const MAX_ID: usize = 32;

/// One key.
pub struct SigningKey {
    id: Box<str>,
    secret: Vec<u8>,
    created_at_ms: i64,
    key: hmac::Key,
}

impl std::fmt::Debug for SigningKey {
    // Never the secret.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SigningKey")
            .field("id", &self.id)
            .field("created_at_ms", &self.created_at_ms)
            .finish_non_exhaustive()
    }
}

impl PartialEq for SigningKey {
    fn eq(&self, other: &Self) -> bool {
        self.id == other.id && self.secret == other.secret
    }
}

/// An environment's keys, newest first (possibly none: nothing is signed, nothing verifies).
#[derive(Debug, Default, PartialEq)]
pub struct SigningKeys {
    keys: Vec<SigningKey>,
}

/// Why a signature was not accepted (the `result` label of its metric).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Rejected {
    /// Not a dictionary with `key`, `rev`, `t` and `mac` of the right types.
    Malformed,
    /// `key` names no key this sidecar holds.
    UnknownKey,
    /// `t` is further from now than the maximum age.
    Expired,
    /// The MAC does not match.
    Invalid,
}

impl Rejected {
    /// The metric label.
    pub fn label(self) -> &'static str {
        match self {
            Rejected::Malformed => "malformed",
            Rejected::UnknownKey => "unknown_key",
            Rejected::Expired => "expired",
            Rejected::Invalid => "invalid",
        }
    }
}

impl SigningKeys {
    /// No keys.
    pub fn none() -> Arc<SigningKeys> {
        Arc::new(SigningKeys::default())
    }

    /// The keys of a `Full` frame, checked: every id 1-32 characters of `[a-z0-9]`, unique, and
    /// every secret at least 16 bytes.
    pub fn from_proto(keys: &vexil_proto::sync::v1::SigningKeys) -> Result<SigningKeys, String> {
        let mut out = Vec::with_capacity(keys.keys.len());
        for (i, k) in keys.keys.iter().enumerate() {
            out.push(
                Self::key(&k.id, k.secret.clone(), k.created_at_ms)
                    .map_err(|e| format!("Full.signing_keys.keys[{i}]: {e}"))?,
            );
        }
        Ok(SigningKeys { keys: out })
    }

    /// The keys as stored on disk: `(id, secret, created_at_ms)`.
    pub fn from_parts(parts: Vec<(String, Vec<u8>, i64)>) -> Result<SigningKeys, String> {
        let mut out = Vec::with_capacity(parts.len());
        for (id, secret, at) in parts {
            out.push(Self::key(&id, secret, at)?);
        }
        Ok(SigningKeys { keys: out })
    }

    fn key(id: &str, secret: Vec<u8>, created_at_ms: i64) -> Result<SigningKey, String> {
        if id.is_empty()
            || id.len() > MAX_ID
            || !id
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
        {
            return Err(format!(
                "key id {id:?} is not 1-{MAX_ID} characters of [a-z0-9]"
            ));
        }
        if secret.len() < 16 {
            return Err(format!(
                "key {id:?}: a secret of {} bytes (at least 16)",
                secret.len()
            ));
        }
        Ok(SigningKey {
            key: hmac::Key::new(hmac::HMAC_SHA256, &secret),
            id: id.into(),
            secret,
            created_at_ms,
        })
    }

    /// The keys as `(id, secret, created_at_ms)`, for the state directory.
    pub fn parts(&self) -> Vec<(String, Vec<u8>, i64)> {
        self.keys
            .iter()
            .map(|k| (k.id.to_string(), k.secret.clone(), k.created_at_ms))
            .collect()
    }

    /// True when there is no key.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// The key ids, newest first.
    pub fn ids(&self) -> impl Iterator<Item = &str> {
        self.keys.iter().map(|k| &*k.id)
    }

    /// The `vexil-signature` value of `flags` (a `vexil-flags` value) written by this sidecar of
    /// `environment` at `revision`, at `now` (Unix seconds); `None` without a key.
    pub fn sign(&self, environment: &str, revision: i64, now: u64, flags: &str) -> Option<String> {
        let key = self.keys.first()?;
        let mac = hmac::sign(
            &key.key,
            input(environment, revision, now, &key.id, flags).as_bytes(),
        );
        let mut out = String::with_capacity(96);
        let _ = write!(
            out,
            "key=\"{}\", rev={revision}, t={now}, mac=:{}:",
            key.id,
            STANDARD.encode(mac.as_ref())
        );
        Some(out)
    }

    /// Checks `signature` (a `vexil-signature` value) of `flags` for `environment` at `now` (Unix
    /// seconds): made with a key held, within `max_age_secs` of now (either way: clocks differ),
    /// and matching.
    pub fn verify(
        &self,
        environment: &str,
        signature: &str,
        flags: &str,
        now: u64,
        max_age_secs: u64,
    ) -> Result<(), Rejected> {
        let dict: Dictionary = Parser::new(signature)
            .parse()
            .map_err(|_| Rejected::Malformed)?;
        let item = |name: &str| match dict.get(name) {
            Some(ListEntry::Item(item)) if item.params.is_empty() => Some(&item.bare_item),
            _ => None,
        };
        let (Some(BareItem::String(id)), Some(BareItem::Integer(rev)), Some(BareItem::Integer(t))) =
            (item("key"), item("rev"), item("t"))
        else {
            return Err(Rejected::Malformed);
        };
        let Some(BareItem::ByteSequence(mac)) = item("mac") else {
            return Err(Rejected::Malformed);
        };
        let (rev, t) = (i64::from(*rev), i64::from(*t));
        let t = u64::try_from(t).map_err(|_| Rejected::Malformed)?;
        let key = self
            .keys
            .iter()
            .find(|k| *k.id == *id.as_str())
            .ok_or(Rejected::UnknownKey)?;
        if now.abs_diff(t) > max_age_secs {
            return Err(Rejected::Expired);
        }
        hmac::verify(
            &key.key,
            input(environment, rev, t, &key.id, flags).as_bytes(),
            mac,
        )
        .map_err(|_| Rejected::Invalid)
    }
}

/// The bytes the MAC covers.
fn input(environment: &str, revision: i64, t: u64, id: &str, flags: &str) -> String {
    let mut s = String::with_capacity(CONTEXT.len() + environment.len() + flags.len() + 48);
    let _ = write!(
        s,
        "{CONTEXT}\n{environment}\n{revision}\n{t}\n{id}\n{flags}"
    );
    s
}

/// Now, in Unix seconds.
pub fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(ids: &[(&str, u8)]) -> SigningKeys {
        SigningKeys::from_parts(
            ids.iter()
                .map(|(id, fill)| (id.to_string(), vec![*fill; 32], 1))
                .collect(),
        )
        .unwrap()
    }

    const FLAGS: &str = "new-checkout=?1, theme=\"dark\"";

    #[test]
    fn a_signature_verifies_with_any_key_held_and_only_for_its_value() {
        let signer = keys(&[("bbbb", 2), ("aaaa", 1)]);
        let sig = signer.sign("prod", 42, 1000, FLAGS).unwrap();
        assert!(
            sig.starts_with("key=\"bbbb\", rev=42, t=1000, mac=:"),
            "{sig}"
        );
        assert_eq!(signer.verify("prod", &sig, FLAGS, 1000, 300), Ok(()));
        // A verifier that has rotated once more still holds bbbb.
        let later = keys(&[("cccc", 3), ("bbbb", 2)]);
        assert_eq!(later.verify("prod", &sig, FLAGS, 1100, 300), Ok(()));
        // Another value, another environment, another key, another time: refused.
        let other = "new-checkout=?1, theme=\"light\"";
        assert_eq!(
            signer.verify("prod", &sig, other, 1000, 300),
            Err(Rejected::Invalid)
        );
        assert_eq!(
            signer.verify("staging", &sig, FLAGS, 1000, 300),
            Err(Rejected::Invalid)
        );
        assert_eq!(
            keys(&[("aaaa", 1)]).verify("prod", &sig, FLAGS, 1000, 300),
            Err(Rejected::UnknownKey)
        );
        // Same id, another secret (an attacker's guess).
        assert_eq!(
            keys(&[("bbbb", 9)]).verify("prod", &sig, FLAGS, 1000, 300),
            Err(Rejected::Invalid)
        );
        assert_eq!(
            signer.verify("prod", &sig, FLAGS, 1301, 300),
            Err(Rejected::Expired)
        );
        assert_eq!(
            signer.verify("prod", &sig, FLAGS, 699, 300),
            Err(Rejected::Expired)
        );
        // The revision and time are covered by the MAC.
        let moved = sig.replace("rev=42", "rev=43");
        assert_eq!(
            signer.verify("prod", &moved, FLAGS, 1000, 300),
            Err(Rejected::Invalid)
        );
        let moved = sig.replace("t=1000", "t=1001");
        assert_eq!(
            signer.verify("prod", &moved, FLAGS, 1000, 300),
            Err(Rejected::Invalid)
        );
    }

    #[test]
    fn malformed_signatures_and_keys() {
        let k = keys(&[("aaaa", 1)]);
        for bad in [
            "",
            "nonsense",
            "key=aaaa, rev=1, t=1000, mac=:AAAA:",
            "key=\"aaaa\", rev=1, t=1000",
            "key=\"aaaa\", rev=1, t=-5, mac=:AAAA:",
            "key=\"aaaa\";x=1, rev=1, t=1000, mac=:AAAA:",
            "key=\"aaaa\", rev=\"1\", t=1000, mac=:AAAA:",
        ] {
            assert_eq!(
                k.verify("prod", bad, FLAGS, 1000, 300),
                Err(Rejected::Malformed),
                "{bad}"
            );
        }
        assert!(SigningKeys::default().sign("prod", 1, 1, FLAGS).is_none());
        for (id, len) in [("", 32), ("UPPER", 32), ("a-b", 32), ("ok", 8)] {
            let e = SigningKeys::from_parts(vec![(id.into(), vec![0; len], 0)]).unwrap_err();
            assert!(e.contains("key"), "{e}");
        }
        // The secret never shows in Debug output.
        assert!(!format!("{k:?}").contains("secret"));
    }
}
