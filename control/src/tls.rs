//! Development TLS: a private CA and a server certificate for loopback, generated once into a
//! directory and reused on later starts, so sidecars started with `--ca-file DIR/ca.pem` trust the
//! control plane's QUIC endpoint and webhook. Production deployments bring their own certificates.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose,
};

/// The files of a development TLS directory.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TlsFiles {
    /// The CA certificate to give to clients (`ca.pem`).
    pub ca_cert: PathBuf,
    /// The server certificate chain (`server.pem`).
    pub cert: PathBuf,
    /// The server private key (`server.key`, mode 0600).
    pub key: PathBuf,
}

const CA_NAME: &str = "Vexil development CA";

/// Makes sure `dir` holds a development CA and a server certificate valid for `localhost`,
/// `127.0.0.1`, `::1` and `extra_names`; existing files are reused as they are.
pub fn ensure_dev_tls(dir: &Path, extra_names: &[String]) -> anyhow::Result<TlsFiles> {
    fs::create_dir_all(dir).map_err(|e| anyhow::anyhow!("creating {}: {e}", dir.display()))?;
    let files = TlsFiles {
        ca_cert: dir.join("ca.pem"),
        cert: dir.join("server.pem"),
        key: dir.join("server.key"),
    };
    let ca_key_path = dir.join("ca.key");
    let ca_key = if ca_key_path.exists() && files.ca_cert.exists() {
        KeyPair::from_pem(&read(&ca_key_path)?)
            .map_err(|e| anyhow::anyhow!("{}: {e}", ca_key_path.display()))?
    } else {
        let key = KeyPair::generate()?;
        let cert = ca_params().self_signed(&key)?;
        write_private(&ca_key_path, &key.serialize_pem())?;
        write_public(&files.ca_cert, &cert.pem())?;
        // A new CA invalidates any server certificate signed by an old one.
        let _ = fs::remove_file(&files.cert);
        key
    };
    if !(files.cert.exists() && files.key.exists()) {
        let mut names = vec!["localhost".to_string(), "127.0.0.1".into(), "::1".into()];
        names.extend(extra_names.iter().cloned());
        let mut params = CertificateParams::new(names)?;
        params.distinguished_name = DistinguishedName::new();
        params
            .distinguished_name
            .push(DnType::CommonName, "vexil-control");
        params.is_ca = IsCa::NoCa;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let key = KeyPair::generate()?;
        let issuer = Issuer::new(ca_params(), &ca_key);
        let cert = params.signed_by(&key, &issuer)?;
        write_private(&files.key, &key.serialize_pem())?;
        write_public(&files.cert, &cert.pem())?;
    }
    Ok(files)
}

/// Issues a client certificate for `name` from the development CA in `dir` (created by
/// [`ensure_dev_tls`]), for sidecars of a control started with `--tls-client-ca DIR/ca.pem`
/// (mutual TLS). Writes `client-<name>.pem` and `client-<name>.key`; returns their paths.
pub fn issue_dev_client_cert(dir: &Path, name: &str) -> anyhow::Result<(PathBuf, PathBuf)> {
    anyhow::ensure!(
        !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-'),
        "client name {name:?}: letters, digits and '-' only"
    );
    let ca_key_path = dir.join("ca.key");
    let ca_key = KeyPair::from_pem(&read(&ca_key_path)?)
        .map_err(|e| anyhow::anyhow!("{}: {e}", ca_key_path.display()))?;
    let mut params = CertificateParams::new(vec![name.to_string()])?;
    params.distinguished_name = DistinguishedName::new();
    params.distinguished_name.push(DnType::CommonName, name);
    params.is_ca = IsCa::NoCa;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    let key = KeyPair::generate()?;
    let cert = params.signed_by(&key, &Issuer::new(ca_params(), &ca_key))?;
    let (cert_path, key_path) = (
        dir.join(format!("client-{name}.pem")),
        dir.join(format!("client-{name}.key")),
    );
    write_private(&key_path, &key.serialize_pem())?;
    write_public(&cert_path, &cert.pem())?;
    Ok((cert_path, key_path))
}

/// A rustls server configuration (ring provider, TLS 1.2 and 1.3, ALPN `http/1.1` only: the axum
/// server speaks HTTP/1, and a client offered `h2` would use it) with
/// the certificate chain and private key of these PEM files. The files are read again when they
/// change (checked at most every [`RELOAD_CHECK`]), so a renewed certificate (cert-manager rewrites
/// its Secret's files in place) is served without a restart.
pub fn server_config(cert: &Path, key: &Path) -> anyhow::Result<rustls::ServerConfig> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let resolver = ReloadingCert::load(cert, key, provider.clone())?;
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_cert_resolver(Arc::new(resolver));
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}

/// How often the certificate files are checked for a change.
pub const RELOAD_CHECK: Duration = Duration::from_secs(10);

/// A certificate chain and key from PEM files, re-read when the files' modification times change.
#[derive(Debug)]
struct ReloadingCert {
    cert: PathBuf,
    key: PathBuf,
    provider: Arc<rustls::crypto::CryptoProvider>,
    current: Mutex<Loaded>,
}

/// The certificate being served, the files' modification times it was read at, and when they
/// were last looked at.
#[derive(Debug)]
struct Loaded {
    certified: Arc<CertifiedKey>,
    stamps: (Option<SystemTime>, Option<SystemTime>),
    checked: Instant,
}

impl ReloadingCert {
    fn load(
        cert: &Path,
        key: &Path,
        provider: Arc<rustls::crypto::CryptoProvider>,
    ) -> anyhow::Result<ReloadingCert> {
        let certified = read_certified_key(cert, key, &provider)?;
        Ok(ReloadingCert {
            cert: cert.to_path_buf(),
            key: key.to_path_buf(),
            current: Mutex::new(Loaded {
                certified: Arc::new(certified),
                stamps: (modified(cert), modified(key)),
                checked: Instant::now(),
            }),
            provider,
        })
    }

    /// The certificate to serve: re-read when the files changed; on a failed re-read (a half-written
    /// renewal), the previous one, tried again at the next check.
    fn current(&self) -> Arc<CertifiedKey> {
        let mut loaded = self.current.lock().expect("certificate lock");
        if loaded.checked.elapsed() < RELOAD_CHECK {
            return loaded.certified.clone();
        }
        loaded.checked = Instant::now();
        let stamps = (modified(&self.cert), modified(&self.key));
        if stamps != loaded.stamps {
            match read_certified_key(&self.cert, &self.key, &self.provider) {
                Ok(certified) => {
                    tracing::info!(cert = %self.cert.display(), "TLS certificate reloaded");
                    loaded.certified = Arc::new(certified);
                    loaded.stamps = stamps;
                }
                Err(e) => {
                    tracing::warn!(error = %e, "TLS certificate changed but cannot be read; keeping the previous one")
                }
            }
        }
        loaded.certified.clone()
    }
}

impl ResolvesServerCert for ReloadingCert {
    fn resolve(&self, _: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current())
    }
}

/// A file's modification time (`None` when it cannot be read).
fn modified(path: &Path) -> Option<SystemTime> {
    fs::metadata(path).and_then(|m| m.modified()).ok()
}

/// Reads a PEM certificate chain and its PEM private key, and checks that they match.
fn read_certified_key(
    cert: &Path,
    key: &Path,
    provider: &rustls::crypto::CryptoProvider,
) -> anyhow::Result<CertifiedKey> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};

    let chain = CertificateDer::pem_file_iter(cert)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .map_err(|e| anyhow::anyhow!("reading the certificate chain {}: {e}", cert.display()))?;
    if chain.is_empty() {
        anyhow::bail!("{}: no certificate in it", cert.display());
    }
    let key_der = PrivateKeyDer::from_pem_file(key)
        .map_err(|e| anyhow::anyhow!("reading the private key {}: {e}", key.display()))?;
    CertifiedKey::from_der(chain, key_der, provider)
        .map_err(|e| anyhow::anyhow!("{} and {}: {e}", cert.display(), key.display()))
}

/// The CA's parameters; the same every time, so a reloaded CA key signs certificates whose issuer
/// matches the stored CA certificate.
fn ca_params() -> CertificateParams {
    let mut params = CertificateParams::default();
    params.distinguished_name = DistinguishedName::new();
    params.distinguished_name.push(DnType::CommonName, CA_NAME);
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    params
}

fn read(path: &Path) -> anyhow::Result<String> {
    fs::read_to_string(path).map_err(|e| anyhow::anyhow!("reading {}: {e}", path.display()))
}

fn write_public(path: &Path, text: &str) -> anyhow::Result<()> {
    fs::write(path, text).map_err(|e| anyhow::anyhow!("writing {}: {e}", path.display()))
}

/// Writes a private key readable by its owner only.
fn write_private(path: &Path, text: &str) -> anyhow::Result<()> {
    let mut options = fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut f = options
        .open(path)
        .map_err(|e| anyhow::anyhow!("writing {}: {e}", path.display()))?;
    f.write_all(text.as_bytes())
        .map_err(|e| anyhow::anyhow!("writing {}: {e}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp_dir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("vexil-tls-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        dir
    }

    #[test]
    fn generates_once_and_reuses() {
        let dir = temp_dir("reuse");
        let files = ensure_dev_tls(&dir, &["control.internal".into()]).unwrap();
        let ca = fs::read_to_string(&files.ca_cert).unwrap();
        let cert = fs::read_to_string(&files.cert).unwrap();
        assert!(ca.starts_with("-----BEGIN CERTIFICATE-----"));
        assert!(cert.starts_with("-----BEGIN CERTIFICATE-----"));
        assert!(
            fs::read_to_string(&files.key)
                .unwrap()
                .contains("PRIVATE KEY")
        );
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = fs::metadata(&files.key).unwrap().permissions().mode();
            assert_eq!(mode & 0o077, 0, "server.key must not be readable by others");
        }
        let again = ensure_dev_tls(&dir, &[]).unwrap();
        assert_eq!(again, files);
        assert_eq!(fs::read_to_string(&again.ca_cert).unwrap(), ca);
        assert_eq!(fs::read_to_string(&again.cert).unwrap(), cert);
        // A missing server certificate is re-issued by the same CA.
        fs::remove_file(&files.cert).unwrap();
        let third = ensure_dev_tls(&dir, &[]).unwrap();
        assert_eq!(fs::read_to_string(&third.ca_cert).unwrap(), ca);
        assert_ne!(fs::read_to_string(&third.cert).unwrap(), cert);
        let _ = fs::remove_dir_all(&dir);
    }

    #[test]
    fn the_dev_certificate_makes_a_server_config() {
        let dir = temp_dir("server-config");
        let files = ensure_dev_tls(&dir, &[]).unwrap();
        let config = server_config(&files.cert, &files.key).unwrap();
        assert_eq!(config.alpn_protocols, vec![b"http/1.1".to_vec()]);
        // A key that does not match the certificate is refused.
        let other = ensure_dev_tls(&dir.join("other"), &[]).unwrap();
        assert!(server_config(&files.cert, &other.key).is_err());
        let err = server_config(&files.ca_cert, &dir.join("missing.key")).unwrap_err();
        assert!(err.to_string().contains("missing.key"), "{err}");
        let _ = fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_changed_certificate_is_served_after_the_next_check() {
        let dir = temp_dir("reload");
        let files = ensure_dev_tls(&dir, &[]).unwrap();
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let resolver = ReloadingCert::load(&files.cert, &files.key, provider).unwrap();
        let first = resolver.current();
        // A new certificate and key, as a renewal writes them.
        fs::remove_file(&files.cert).unwrap();
        std::thread::sleep(Duration::from_millis(20));
        ensure_dev_tls(&dir, &[]).unwrap();
        assert!(
            Arc::ptr_eq(&first, &resolver.current()),
            "not before the check interval"
        );
        resolver.current.lock().unwrap().checked -= RELOAD_CHECK;
        let second = resolver.current();
        assert_ne!(first.cert, second.cert, "the new certificate after it");
        // A broken file keeps the previous certificate.
        fs::write(&files.cert, "not a certificate").unwrap();
        resolver.current.lock().unwrap().checked -= RELOAD_CHECK;
        assert_eq!(resolver.current().cert, second.cert);
        let _ = fs::remove_dir_all(&dir);
    }
}
