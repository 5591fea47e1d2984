//! Loopback ports and the one HTTP request readiness checks need.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A free TCP port on loopback (bound, read and released: another process may take it, rarely).
pub fn free_tcp_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free TCP port on loopback")
        .port()
}

/// A free TCP port on loopback for a server that is killed and started again on it (Redis),
/// drawn below the kernel's ephemeral range: a port from that range can be taken meanwhile as the
/// source port of any outgoing connection (even a client's connection to this very port, which
/// then connects to itself), and the server could not bind again. Drawn at random, so only for
/// the few ports that need it: [`free_tcp_port`] otherwise.
pub fn restartable_tcp_port() -> u16 {
    free_port(|port| std::net::TcpListener::bind(("127.0.0.1", port)).map(drop))
}

/// A free UDP port on loopback for a QUIC endpoint that must come back on the same port after a
/// restart, drawn like [`restartable_tcp_port`] (a client's endpoint bound to port 0 could take
/// it meanwhile).
pub fn free_udp_port() -> u16 {
    free_port(|port| std::net::UdpSocket::bind(("127.0.0.1", port)).map(drop))
}

/// The lowest port of the range below the ephemeral one that [`free_port`] draws from.
const LOWEST: u16 = 15_000;

/// A port in `LOWEST..` the first ephemeral port that `bind` accepts; the kernel's choice (an
/// ephemeral port) when the ephemeral range starts too low to leave room.
fn free_port(bind: impl Fn(u16) -> std::io::Result<()>) -> u16 {
    let ephemeral = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|range| range.split_whitespace().next()?.parse::<u16>().ok())
        .unwrap_or(32_768);
    if ephemeral > LOWEST + 1_000 {
        for _ in 0..1_000 {
            let port = rand::random_range(LOWEST..ephemeral);
            if bind(port).is_ok() {
                return port;
            }
        }
    }
    for _ in 0..100 {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port on loopback")
            .port();
        if bind(port).is_ok() {
            return port;
        }
    }
    panic!("no free port on loopback")
}

/// `127.0.0.1:port`.
pub fn loopback(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

/// `127.0.0.1:` a free TCP port (for servers that must be given an address to bind, not a
/// listener).
pub fn free_addr() -> SocketAddr {
    loopback(free_tcp_port())
}

/// The request of [`http_status`]: `GET path`, no body, connection closed after the answer.
fn request(addr: SocketAddr, path: &str) -> String {
    format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n")
}

/// The status code of an HTTP/1 response (its first line), if it is one.
fn status_of(response: &[u8]) -> Option<u16> {
    let line = response.split(|&b| b == b'\n').next()?;
    std::str::from_utf8(line)
        .ok()?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

/// The status of `GET path` on `addr`; `None` when nothing answers within a few seconds.
pub async fn http_status(addr: SocketAddr, path: &str) -> Option<u16> {
    let exchange = async {
        let mut stream = tokio::net::TcpStream::connect(addr).await.ok()?;
        stream
            .write_all(request(addr, path).as_bytes())
            .await
            .ok()?;
        let mut response = Vec::new();
        stream.read_to_end(&mut response).await.ok()?;
        status_of(&response)
    };
    tokio::time::timeout(Duration::from_secs(3), exchange)
        .await
        .ok()
        .flatten()
}

/// [`http_status`] for code outside an async runtime.
pub fn http_status_blocking(addr: SocketAddr, path: &str) -> Option<u16> {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(1)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    stream.write_all(request(addr, path).as_bytes()).ok()?;
    let mut response = Vec::new();
    stream.read_to_end(&mut response).ok()?;
    status_of(&response)
}
