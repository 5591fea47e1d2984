//! Keys: one algorithm each, parsed once (PEM, DER, JWK), and the set a verifier chooses from.

use std::fmt;

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use ring::signature::{
    ECDSA_P256_SHA256_FIXED, RSA_PKCS1_2048_8192_SHA256, RsaPublicKeyComponents, UnparsedPublicKey,
};
use serde_json::Value;

use crate::error::JwtError;

/// A signature algorithm this crate verifies. A key has exactly one.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Algorithm {
    /// HMAC with SHA-256 over a shared secret.
    HS256,
    /// RSASSA-PKCS1-v1_5 with SHA-256 (RSA keys of 2048 to 8192 bits).
    RS256,
    /// ECDSA on P-256 with SHA-256 (the 64-byte `r || s` signature of JWS).
    ES256,
}

impl Algorithm {
    /// The JOSE name.
    pub fn as_str(self) -> &'static str {
        match self {
            Algorithm::HS256 => "HS256",
            Algorithm::RS256 => "RS256",
            Algorithm::ES256 => "ES256",
        }
    }

    /// The algorithm of a JOSE name (exact, case-sensitive).
    pub fn from_name(name: &str) -> Option<Algorithm> {
        match name {
            "HS256" => Some(Algorithm::HS256),
            "RS256" => Some(Algorithm::RS256),
            "ES256" => Some(Algorithm::ES256),
            _ => None,
        }
    }
}

impl fmt::Display for Algorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Parsed key material, ready for ring.
#[derive(Clone)]
enum Material {
    Hs256(ring::hmac::Key),
    /// Modulus and exponent, big-endian without leading zeros.
    Rs256(RsaPublicKeyComponents<Box<[u8]>>),
    /// The uncompressed P-256 point (`04 || x || y`).
    Es256(UnparsedPublicKey<Box<[u8]>>),
}

/// A verification key: its algorithm, its material, and an optional key id.
#[derive(Clone)]
pub struct Key {
    kid: Option<Box<str>>,
    material: Material,
    /// A digest of the material, to compare key sets (for logs on refresh) without exposing it.
    fingerprint: [u8; 32],
}

impl fmt::Debug for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never the material (an HMAC secret is a secret).
        f.debug_struct("Key")
            .field("alg", &self.algorithm())
            .field("kid", &self.kid)
            .finish()
    }
}

impl PartialEq for Key {
    fn eq(&self, other: &Key) -> bool {
        self.kid == other.kid
            && self.algorithm() == other.algorithm()
            && self.fingerprint == other.fingerprint
    }
}

fn fingerprint(alg: Algorithm, parts: &[&[u8]]) -> [u8; 32] {
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
    ctx.update(alg.as_str().as_bytes());
    for p in parts {
        ctx.update(&(p.len() as u64).to_be_bytes());
        ctx.update(p);
    }
    let mut out = [0; 32];
    out.copy_from_slice(ctx.finish().as_ref());
    out
}

impl Key {
    /// An HS256 key over `secret` (not empty; 32 bytes or more is recommended).
    pub fn hs256(secret: &[u8]) -> Result<Key, String> {
        if secret.is_empty() {
            return Err("the HMAC secret is empty".into());
        }
        Ok(Key {
            kid: None,
            material: Material::Hs256(ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret)),
            fingerprint: fingerprint(Algorithm::HS256, &[secret]),
        })
    }

    /// An RS256 key from its modulus and public exponent (big-endian).
    pub fn rs256(n: &[u8], e: &[u8]) -> Result<Key, String> {
        let n = strip_zeros(n);
        let e = strip_zeros(e);
        let bits = match n.first() {
            None => 0,
            Some(b) => (n.len() - 1) * 8 + (8 - b.leading_zeros() as usize),
        };
        if !(2048..=8192).contains(&bits) {
            return Err(format!(
                "an RSA key of {bits} bits (2048 to 8192 are supported)"
            ));
        }
        if e.is_empty() || e.len() > 4 || e[e.len() - 1] & 1 == 0 {
            return Err("the RSA public exponent is not an odd number of at most 32 bits".into());
        }
        Ok(Key {
            kid: None,
            fingerprint: fingerprint(Algorithm::RS256, &[n, e]),
            material: Material::Rs256(RsaPublicKeyComponents {
                n: n.into(),
                e: e.into(),
            }),
        })
    }

    /// An ES256 key from the affine coordinates of its P-256 point (32 bytes each).
    pub fn es256(x: &[u8], y: &[u8]) -> Result<Key, String> {
        if x.len() != 32 || y.len() != 32 {
            return Err("a P-256 coordinate is not 32 bytes".into());
        }
        let mut point = Vec::with_capacity(65);
        point.push(4);
        point.extend_from_slice(x);
        point.extend_from_slice(y);
        Key::es256_point(&point)
    }

    /// An ES256 key from its uncompressed SEC1 point (`04 || x || y`).
    fn es256_point(point: &[u8]) -> Result<Key, String> {
        match point.first() {
            Some(4) if point.len() == 65 => {}
            Some(2 | 3) => {
                return Err(
                    "a compressed EC point (only uncompressed points are supported)".into(),
                );
            }
            _ => return Err("not a P-256 public point".into()),
        }
        Ok(Key {
            kid: None,
            fingerprint: fingerprint(Algorithm::ES256, &[point]),
            material: Material::Es256(UnparsedPublicKey::new(
                &ECDSA_P256_SHA256_FIXED,
                point.into(),
            )),
        })
    }

    /// A public key from PEM text: `PUBLIC KEY` (SubjectPublicKeyInfo: RSA, or EC on P-256) or
    /// `RSA PUBLIC KEY` (PKCS#1). RSA keys are RS256 keys, P-256 keys ES256 keys.
    pub fn from_pem(pem: &str) -> Result<Key, String> {
        let (label, der) = pem_block(pem)?;
        match label {
            "PUBLIC KEY" => Key::from_spki_der(&der),
            "RSA PUBLIC KEY" => {
                let (n, e) = rsa_public_key(&der)
                    .ok_or("the RSA PUBLIC KEY block is not a DER RSAPublicKey (PKCS#1)")?;
                Key::rs256(n, e)
            }
            l if l.contains("PRIVATE KEY") => Err(format!(
                "a PEM {l:?} block: give the public key (PUBLIC KEY), never the private one"
            )),
            l => Err(format!(
                "a PEM {l:?} block (expected PUBLIC KEY or RSA PUBLIC KEY)"
            )),
        }
    }

    /// A public key from a DER SubjectPublicKeyInfo (RSA, or EC on P-256).
    pub fn from_spki_der(der: &[u8]) -> Result<Key, String> {
        const RSA: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x01];
        const EC: &[u8] = &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01];
        const P256: &[u8] = &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07];
        let bad = || "not a DER SubjectPublicKeyInfo".to_string();
        let (spki, rest) = expect(der, 0x30).ok_or_else(bad)?;
        if !rest.is_empty() {
            return Err(bad());
        }
        let (algorithm, rest) = expect(spki, 0x30).ok_or_else(bad)?;
        let (bits, rest) = expect(rest, 0x03).ok_or_else(bad)?;
        if !rest.is_empty() {
            return Err(bad());
        }
        let key = match bits.split_first() {
            Some((0, key)) => key,
            _ => return Err(bad()),
        };
        let (oid, params) = expect(algorithm, 0x06).ok_or_else(bad)?;
        if oid == RSA {
            let (n, e) = rsa_public_key(key).ok_or_else(bad)?;
            Key::rs256(n, e)
        } else if oid == EC {
            match expect(params, 0x06) {
                Some((curve, [])) if curve == P256 => Key::es256_point(key),
                _ => Err("an EC key on a curve other than P-256 (ES256 needs P-256)".into()),
            }
        } else {
            Err("a public key of an unsupported type (RSA and EC P-256 are supported)".into())
        }
    }

    /// A key from a JWK. `Ok(None)` for a key this crate does not verify with (another key type,
    /// curve or algorithm, or `use` other than `sig`): JWKS documents often hold such keys.
    pub fn from_jwk(jwk: &Value) -> Result<Option<Key>, String> {
        let obj = jwk.as_object().ok_or("not a JSON object")?;
        let text = |field: &str| -> Result<Option<&str>, String> {
            match obj.get(field) {
                None => Ok(None),
                Some(Value::String(s)) => Ok(Some(s)),
                Some(_) => Err(format!("\"{field}\" is not a string")),
            }
        };
        let bytes = |field: &str| -> Result<Vec<u8>, String> {
            let s = text(field)?.ok_or_else(|| format!("missing \"{field}\""))?;
            URL_SAFE_NO_PAD
                .decode(s.trim_end_matches('='))
                .map_err(|_| format!("\"{field}\" is not base64url"))
        };
        if text("use")?.is_some_and(|u| u != "sig") {
            return Ok(None);
        }
        let alg = text("alg")?;
        let wants = |a: Algorithm| alg.is_none_or(|alg| alg == a.as_str());
        let key = match text("kty")?.ok_or("missing \"kty\"")? {
            "RSA" if wants(Algorithm::RS256) => Key::rs256(&bytes("n")?, &bytes("e")?)?,
            "EC" if wants(Algorithm::ES256) => {
                if text("crv")? != Some("P-256") {
                    return Ok(None);
                }
                Key::es256(&bytes("x")?, &bytes("y")?)?
            }
            "oct" if wants(Algorithm::HS256) => Key::hs256(&bytes("k")?)?,
            _ => return Ok(None),
        };
        Ok(Some(match text("kid")? {
            Some(kid) => key.with_kid(kid),
            None => key,
        }))
    }

    /// The key, named `kid`.
    pub fn with_kid(mut self, kid: &str) -> Key {
        self.kid = Some(kid.into());
        self
    }

    /// Its algorithm.
    pub fn algorithm(&self) -> Algorithm {
        match self.material {
            Material::Hs256(_) => Algorithm::HS256,
            Material::Rs256(_) => Algorithm::RS256,
            Material::Es256(_) => Algorithm::ES256,
        }
    }

    /// Its key id.
    pub fn kid(&self) -> Option<&str> {
        self.kid.as_deref()
    }

    /// True when `signature` is this key's over `message`. HMAC tags are compared by ring in
    /// constant time; no signature is compared with `==`.
    pub(crate) fn verify(&self, message: &[u8], signature: &[u8]) -> bool {
        match &self.material {
            Material::Hs256(key) => ring::hmac::verify(key, message, signature).is_ok(),
            Material::Rs256(key) => key
                .verify(&RSA_PKCS1_2048_8192_SHA256, message, signature)
                .is_ok(),
            Material::Es256(key) => key.verify(message, signature).is_ok(),
        }
    }
}

/// Parses a JWKS document (`{"keys": [...]}`) into the keys this crate verifies with. Keys of
/// other types are skipped; a malformed usable key, a duplicate `kid`, more than `max_keys`
/// entries or no usable key at all fail the document.
pub fn parse_jwks(text: &[u8], max_keys: usize) -> Result<Vec<Key>, String> {
    let doc: Value = serde_json::from_slice(text).map_err(|e| format!("not JSON: {e}"))?;
    let entries = doc
        .get("keys")
        .and_then(Value::as_array)
        .ok_or("expected a JWKS document: {\"keys\": [...]}")?;
    if entries.len() > max_keys {
        return Err(format!(
            "{} keys; at most {max_keys} are accepted",
            entries.len()
        ));
    }
    let mut keys: Vec<Key> = Vec::with_capacity(entries.len());
    for (i, jwk) in entries.iter().enumerate() {
        let Some(key) = Key::from_jwk(jwk).map_err(|e| format!("keys[{i}]: {e}"))? else {
            continue;
        };
        if key.kid.is_some() && keys.iter().any(|k| k.kid == key.kid) {
            return Err(format!("keys[{i}]: a kid used by an earlier key"));
        }
        keys.push(key);
    }
    if keys.is_empty() {
        return Err("no RS256, ES256 or HS256 key in the JWKS".into());
    }
    Ok(keys)
}

/// The keys a verifier chooses from. Immutable; a refresh builds a new one.
#[derive(Debug, Default)]
pub struct KeySet {
    keys: Vec<Key>,
    /// True when some key has a `kid`.
    named: bool,
}

impl KeySet {
    /// A set of `keys`.
    pub fn new(keys: Vec<Key>) -> KeySet {
        let named = keys.iter().any(|k| k.kid.is_some());
        KeySet { keys, named }
    }

    /// The keys.
    pub fn keys(&self) -> &[Key] {
        &self.keys
    }

    /// True when it holds no key.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// The key that must verify a token of `alg` with key id `kid`:
    ///
    /// - with a `kid`: the key of that id. A `kid` that no key has is refused, unless no key of
    ///   the set has an id at all (keys from PEM files and secrets), where the `kid` is ignored;
    /// - without (or with an ignored) `kid`: the one key of the token's algorithm; when several
    ///   keys have it the token is refused (ambiguous: it must name its key).
    ///
    /// Keys never serve another algorithm than their own.
    pub fn select(&self, alg: Algorithm, kid: Option<&str>) -> Result<&Key, JwtError> {
        if let (Some(kid), true) = (kid, self.named) {
            let key = self
                .keys
                .iter()
                .find(|k| k.kid.as_deref() == Some(kid))
                .ok_or(JwtError::UnknownKid)?;
            return if key.algorithm() == alg {
                Ok(key)
            } else {
                Err(JwtError::KeyAlgorithmMismatch {
                    key: key.algorithm(),
                    token: alg,
                })
            };
        }
        let mut found = None;
        let mut count = 0;
        for k in self.keys.iter().filter(|k| k.algorithm() == alg) {
            found.get_or_insert(k);
            count += 1;
        }
        match (found, count) {
            (Some(k), 1) => Ok(k),
            (None, _) => Err(JwtError::NoKeyForAlgorithm(alg)),
            (Some(_), count) => Err(JwtError::AmbiguousKey { alg, count }),
        }
    }
}

impl PartialEq for KeySet {
    fn eq(&self, other: &KeySet) -> bool {
        self.keys == other.keys
    }
}

/// The first PEM block of `pem`: its label and DER content.
fn pem_block(pem: &str) -> Result<(&str, Vec<u8>), String> {
    let none = || "no PEM block (-----BEGIN ...-----)".to_string();
    let (_, rest) = pem.split_once("-----BEGIN ").ok_or_else(none)?;
    let (label, rest) = rest.split_once("-----").ok_or_else(none)?;
    let end = format!("-----END {label}-----");
    let (body, _) = rest
        .split_once(end.as_str())
        .ok_or_else(|| format!("the PEM {label:?} block has no END line"))?;
    let b64: String = body.chars().filter(|c| !c.is_whitespace()).collect();
    let der = STANDARD
        .decode(b64)
        .map_err(|_| format!("the PEM {label:?} block is not base64"))?;
    Ok((label, der))
}

/// RSAPublicKey ::= SEQUENCE { modulus INTEGER, publicExponent INTEGER }, nothing after.
fn rsa_public_key(der: &[u8]) -> Option<(&[u8], &[u8])> {
    let (seq, rest) = expect(der, 0x30)?;
    if !rest.is_empty() {
        return None;
    }
    let (n, rest) = expect(seq, 0x02)?;
    let (e, rest) = expect(rest, 0x02)?;
    // Negative integers are not keys.
    if !rest.is_empty() || n.first()? & 0x80 != 0 || e.first()? & 0x80 != 0 {
        return None;
    }
    Some((n, e))
}

fn strip_zeros(b: &[u8]) -> &[u8] {
    let first = b.iter().position(|&x| x != 0).unwrap_or(b.len());
    &b[first..]
}

/// One DER element of tag `tag`: (its content, what follows).
fn expect(input: &[u8], tag: u8) -> Option<(&[u8], &[u8])> {
    let (&t, rest) = input.split_first()?;
    if t != tag {
        return None;
    }
    let (&first, rest) = rest.split_first()?;
    let (len, rest) = if first < 0x80 {
        (usize::from(first), rest)
    } else {
        let n = usize::from(first & 0x7f);
        if n == 0 || n > 4 || rest.len() < n {
            return None;
        }
        let len = rest[..n]
            .iter()
            .fold(0usize, |acc, b| (acc << 8) | usize::from(*b));
        (len, &rest[n..])
    };
    (rest.len() >= len).then(|| (&rest[..len], &rest[len..]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn der_lengths_are_bounded() {
        assert!(expect(&[0x30, 0x85, 1, 1, 1, 1, 1], 0x30).is_none());
        assert!(expect(&[0x30, 0x80], 0x30).is_none());
        assert!(expect(&[0x30, 0x03, 1], 0x30).is_none());
        assert_eq!(
            expect(&[0x30, 0x01, 7, 9], 0x30),
            Some((&[7][..], &[9][..]))
        );
        assert!(expect(&[0x31, 0x00], 0x30).is_none());
    }

    #[test]
    fn small_or_even_rsa_parameters_are_refused() {
        assert!(
            Key::rs256(&[0xff; 128], &[1, 0, 1])
                .unwrap_err()
                .contains("1024 bits")
        );
        assert!(Key::rs256(&[0xff; 256], &[1, 0, 2]).is_err());
        assert!(Key::rs256(&[0xff; 256], &[]).is_err());
        assert!(Key::rs256(&[0xff; 256], &[1, 0, 1]).is_ok());
        assert!(Key::hs256(b"").is_err());
    }

    #[test]
    fn pem_errors_say_what_was_found() {
        assert!(
            Key::from_pem("nothing")
                .unwrap_err()
                .contains("no PEM block")
        );
        let private = "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n";
        assert!(
            Key::from_pem(private)
                .unwrap_err()
                .contains("never the private")
        );
        let cert = "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n";
        assert!(Key::from_pem(cert).unwrap_err().contains("CERTIFICATE"));
        let open = "-----BEGIN PUBLIC KEY-----\nAAAA\n";
        assert!(Key::from_pem(open).unwrap_err().contains("no END line"));
        let junk = "-----BEGIN PUBLIC KEY-----\n!!!!\n-----END PUBLIC KEY-----\n";
        assert!(Key::from_pem(junk).unwrap_err().contains("not base64"));
        let not_der = "-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n";
        assert!(
            Key::from_pem(not_der)
                .unwrap_err()
                .contains("SubjectPublicKeyInfo")
        );
    }
}
