//! Shared helpers of the proxy's process tests: the real binary on free ports.

#![allow(dead_code)] // each test binary uses a different part

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A free TCP port on loopback.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A fresh temporary directory.
pub fn temp_dir(prefix: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("{prefix}-{:016x}", rand::random::<u64>()));
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// A running `vexil-proxy`.
pub struct Proxy {
    child: Child,
    /// `http://127.0.0.1:PORT` of the admin listener.
    pub admin: String,
    /// `http://127.0.0.1:PORT` of OFREP.
    pub ofrep: String,
    /// Ports: outbound, gRPC, admin, flagd sync, OFREP.
    pub ports: Vec<u16>,
}

impl Proxy {
    /// Starts the binary with `args` on free ports.
    pub fn start(args: &[&str]) -> Proxy {
        let ports: Vec<u16> = (0..5).map(|_| free_port()).collect();
        let addr = |i: usize| format!("127.0.0.1:{}", ports[i]);
        let child = Command::new(env!("CARGO_BIN_EXE_vexil-proxy"))
            .args(args)
            .args(["--outbound-addr", &addr(0), "--grpc-addr", &addr(1)])
            .args(["--admin-addr", &addr(2), "--sync-addr", &addr(3)])
            .args(["--ofrep-addr", &addr(4), "--shutdown-grace-secs", "5"])
            .env_clear()
            .env("VEXIL_LOG", "info")
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("vexil-proxy starts");
        Proxy {
            child,
            admin: format!("http://{}", addr(2)),
            ofrep: format!("http://{}", addr(4)),
            ports,
        }
    }

    /// Waits until `/healthz` answers; returns how long that took.
    pub async fn wait_healthy(&self, client: &reqwest::Client) -> Duration {
        let started = Instant::now();
        loop {
            if let Ok(r) = client.get(format!("{}/healthz", self.admin)).send().await
                && r.status() == 200
            {
                return started.elapsed();
            }
            assert!(started.elapsed() < Duration::from_secs(20), "never healthy");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// `/readyz` status.
    pub async fn ready(&self, client: &reqwest::Client) -> u16 {
        client
            .get(format!("{}/readyz", self.admin))
            .send()
            .await
            .unwrap()
            .status()
            .as_u16()
    }

    /// SIGTERM; returns the exit code.
    pub fn terminate(mut self) -> Option<i32> {
        let pid = self.child.id().to_string();
        Command::new("kill").args(["-TERM", &pid]).status().unwrap();
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status.code();
            }
            assert!(Instant::now() < deadline, "did not exit after SIGTERM");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
    }
}

/// An HTTP client that never uses a proxy.
pub fn client() -> reqwest::Client {
    reqwest::Client::builder().no_proxy().build().unwrap()
}
