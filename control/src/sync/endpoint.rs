//! The QUIC endpoint: TLS 1.3 with ALPN `vexil-sync/1` (rustls, ring provider), an accept loop
//! handing each connection to a session, and a graceful stop.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

use super::hub::Hub;
use super::session::serve_connection;

/// Where the endpoint's TLS material comes from.
#[derive(Clone, Debug)]
pub struct QuicTls {
    /// Server certificate chain (PEM).
    pub cert: PathBuf,
    /// Server private key (PEM).
    pub key: PathBuf,
    /// When set, clients must present a certificate signed by this CA (PEM): mutual TLS.
    pub client_ca: Option<PathBuf>,
}

/// Transport timers of the sync endpoint.
#[derive(Clone, Copy, Debug)]
pub struct QuicTimers {
    /// A connection silent for this long is closed (the effective value is the smaller of the
    /// two peers').
    pub idle_timeout: Duration,
    /// QUIC PING interval from this side (`None`: leave keep-alives to the sidecars).
    pub keep_alive: Option<Duration>,
}

impl Default for QuicTimers {
    fn default() -> Self {
        QuicTimers {
            idle_timeout: Duration::from_secs(10),
            keep_alive: None,
        }
    }
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn read_certs(path: &Path) -> anyhow::Result<Vec<CertificateDer<'static>>> {
    let certs = CertificateDer::pem_file_iter(path)
        .with_context(|| format!("reading certificates from {}", path.display()))?
        .collect::<Result<Vec<_>, _>>()
        .with_context(|| format!("parsing certificates in {}", path.display()))?;
    anyhow::ensure!(
        !certs.is_empty(),
        "{}: no certificate found",
        path.display()
    );
    Ok(certs)
}

/// The rustls server configuration: TLS 1.3 only, ALPN `vexil-sync/1`, no early data (a
/// subscription must never be replayable), client certificates when `client_ca` is set.
pub fn server_tls(tls: &QuicTls) -> anyhow::Result<rustls::ServerConfig> {
    let certs = read_certs(&tls.cert)?;
    let key = PrivateKeyDer::from_pem_file(&tls.key)
        .with_context(|| format!("reading the private key {}", tls.key.display()))?;
    let builder = rustls::ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])?;
    let builder = match &tls.client_ca {
        None => builder.with_no_client_auth(),
        Some(ca) => {
            let mut roots = rustls::RootCertStore::empty();
            for cert in read_certs(ca)? {
                roots.add(cert)?;
            }
            let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
                Arc::new(roots),
                provider(),
            )
            .build()?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let mut config = builder
        .with_single_cert(certs, key)
        .context("the server certificate does not match its key")?;
    config.alpn_protocols = vec![vexil_proto::SYNC_ALPN.to_vec()];
    config.max_early_data_size = 0;
    Ok(config)
}

/// Receive and send buffer asked for the sync endpoint's UDP socket. A reconnect storm (a
/// thousand sidecars handshaking at once after control restarts) overflows the kernel's default
/// (about 208 KiB on Linux): every Initial packet dropped costs its sidecar a retransmission
/// timeout of a second or more. The kernel grants at most `net.core.rmem_max`/`wmem_max`.
pub const UDP_BUFFER_BYTES: usize = 4 << 20;

/// Binds a UDP socket for a quinn endpoint with receive and send buffers of `bytes`, or as much
/// of them as the kernel grants (a smaller grant is logged with the sysctl to raise).
pub fn bind_udp(addr: SocketAddr, bytes: usize) -> anyhow::Result<std::net::UdpSocket> {
    let socket = std::net::UdpSocket::bind(addr)?;
    let sock = socket2::SockRef::from(&socket);
    sock.set_recv_buffer_size(bytes)?;
    sock.set_send_buffer_size(bytes)?;
    // Linux reports twice the grant (it counts its bookkeeping), so this catches grants under
    // half of `bytes`, such as the 208 KiB default.
    let granted = sock.recv_buffer_size()?;
    if granted < bytes {
        tracing::warn!(
            %addr,
            asked = bytes,
            granted,
            "the UDP receive buffer is smaller than asked: a burst of sidecar handshakes may be \
             dropped and retried; raise the sysctl net.core.rmem_max"
        );
    }
    Ok(socket)
}

/// A quinn endpoint on `socket`: a server when `server` is given, else a client only.
pub fn endpoint_on(
    socket: std::net::UdpSocket,
    server: Option<quinn::ServerConfig>,
) -> anyhow::Result<quinn::Endpoint> {
    let runtime = quinn::default_runtime().context("no async runtime for the QUIC endpoint")?;
    Ok(quinn::Endpoint::new(
        quinn::EndpointConfig::default(),
        server,
        socket,
        runtime,
    )?)
}

/// A bound QUIC sync endpoint.
pub struct SyncServer {
    endpoint: quinn::Endpoint,
    hub: Arc<Hub>,
}

impl SyncServer {
    /// Binds `addr` (UDP) with `tls`.
    pub fn bind(
        addr: SocketAddr,
        tls: &QuicTls,
        timers: QuicTimers,
        hub: Arc<Hub>,
    ) -> anyhow::Result<SyncServer> {
        let crypto = quinn::crypto::rustls::QuicServerConfig::try_from(server_tls(tls)?)?;
        let mut config = quinn::ServerConfig::with_crypto(Arc::new(crypto));
        let mut transport = quinn::TransportConfig::default();
        transport
            .max_idle_timeout(Some(timers.idle_timeout.try_into()?))
            .keep_alive_interval(timers.keep_alive)
            // One stream per connection, opened by the sidecar; none by control.
            .max_concurrent_bidi_streams(1u32.into())
            .max_concurrent_uni_streams(0u32.into());
        config.transport_config(Arc::new(transport));
        let socket = bind_udp(addr, UDP_BUFFER_BYTES)
            .with_context(|| format!("binding the QUIC sync endpoint to udp://{addr}"))?;
        let endpoint = endpoint_on(socket, Some(config))?;
        Ok(SyncServer { endpoint, hub })
    }

    /// The bound address (useful with port 0).
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.endpoint.local_addr()
    }

    /// Accepts connections until the hub is cancelled, then closes every connection and waits
    /// (up to `grace`) for the close to reach the peers.
    pub async fn serve(self, grace: Duration) {
        let cancel = self.hub.cancelled().clone();
        loop {
            tokio::select! {
                _ = cancel.cancelled() => break,
                incoming = self.endpoint.accept() => match incoming {
                    Some(incoming) => {
                        tokio::spawn(serve_connection(self.hub.clone(), incoming));
                    }
                    None => break,
                },
            }
        }
        self.endpoint.close(0u32.into(), b"control shutting down");
        let _ = tokio::time::timeout(grace, self.endpoint.wait_idle()).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sysctl(name: &str) -> usize {
        std::fs::read_to_string(format!("/proc/sys/net/core/{name}"))
            .expect("Linux sysctl")
            .trim()
            .parse()
            .expect("a number")
    }

    #[test]
    fn the_sync_socket_gets_the_buffers_it_asks_for_up_to_the_kernel_maximum() {
        let asked = UDP_BUFFER_BYTES;
        let socket = bind_udp("127.0.0.1:0".parse().unwrap(), asked).unwrap();
        let sock = socket2::SockRef::from(&socket);
        // Linux grants min(asked, max) and reports twice the grant.
        assert!(sock.recv_buffer_size().unwrap() >= asked.min(sysctl("rmem_max")));
        assert!(sock.send_buffer_size().unwrap() >= asked.min(sysctl("wmem_max")));
        assert!(sock.recv_buffer_size().unwrap() > sysctl("rmem_default"));
    }
}
