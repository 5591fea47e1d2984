//! The sidecar's QUIC client configuration: TLS 1.3 against a CA file, ALPN `vexil-sync/1`,
//! optional client certificate, no 0-RTT (a subscription carries a token and must not be
//! replayable).

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

/// Builds the quinn client configuration.
pub fn client_config(
    ca_file: &Path,
    client_cert: Option<(&Path, &Path)>,
    keep_alive: Duration,
    idle_timeout: Duration,
) -> anyhow::Result<quinn::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    let cas = CertificateDer::pem_file_iter(ca_file)
        .with_context(|| format!("reading the CA file {}", ca_file.display()))?;
    for ca in cas {
        let ca = ca.with_context(|| format!("parsing the CA file {}", ca_file.display()))?;
        roots
            .add(ca)
            .with_context(|| format!("{}: not a usable CA certificate", ca_file.display()))?;
    }
    anyhow::ensure!(
        !roots.is_empty(),
        "{}: no CA certificate found",
        ca_file.display()
    );
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_root_certificates(roots);
    let mut tls = match client_cert {
        None => builder.with_no_client_auth(),
        Some((cert, key)) => {
            let chain = CertificateDer::pem_file_iter(cert)
                .with_context(|| format!("reading {}", cert.display()))?
                .collect::<Result<Vec<_>, _>>()
                .with_context(|| format!("parsing {}", cert.display()))?;
            let key = PrivateKeyDer::from_pem_file(key)
                .with_context(|| format!("reading the private key {}", key.display()))?;
            builder
                .with_client_auth_cert(chain, key)
                .context("the client certificate does not match its key")?
        }
    };
    tls.alpn_protocols = vec![vexil_proto::SYNC_ALPN.to_vec()];
    tls.enable_early_data = false;
    let crypto = quinn::crypto::rustls::QuicClientConfig::try_from(tls)?;
    let mut config = quinn::ClientConfig::new(Arc::new(crypto));
    let mut transport = quinn::TransportConfig::default();
    transport
        .keep_alive_interval(Some(keep_alive))
        .max_idle_timeout(Some(idle_timeout.try_into()?));
    config.transport_config(Arc::new(transport));
    Ok(config)
}
