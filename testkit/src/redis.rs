//! A private Redis server.

use std::process::{Command, Stdio};
use std::time::Duration;

use crate::net::restartable_tcp_port;
use crate::process::Process;

/// A private `redis-server` on a free port (no persistence), so a test can kill it and start it
/// again on the same port. Killed on drop.
pub struct Redis {
    port: u16,
    process: Option<Process>,
}

impl Redis {
    /// Starts one. When `redis-server` is not installed: `None` after a notice, or a panic under
    /// CI (see [`crate::skip`]).
    pub fn start() -> Option<Redis> {
        let mut redis = Redis {
            port: restartable_tcp_port(),
            process: None,
        };
        if !redis.restart() {
            crate::skip("redis-server is not installed");
            return None;
        }
        Some(redis)
    }

    /// Its port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `redis://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// (Re)starts the server on its port and waits (at most 20 s) until it accepts connections;
    /// `false` when `redis-server` cannot be run.
    pub fn restart(&mut self) -> bool {
        if Command::new("redis-server")
            .arg("--version")
            .stdout(Stdio::null())
            .status()
            .is_err()
        {
            return false;
        }
        let mut cmd = Command::new("redis-server");
        cmd.args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"]);
        let mut process = Process::spawn("redis-server", cmd);
        let port = self.port;
        process.wait_until_blocking(Duration::from_secs(20), "accepting connections", |_| {
            std::net::TcpStream::connect(("127.0.0.1", port)).ok()
        });
        self.process = Some(process);
        true
    }

    /// `kill -9` (a no-op when it is not running).
    pub fn kill(&mut self) {
        if let Some(mut p) = self.process.take() {
            p.kill9();
        }
    }

    /// A connection to it.
    pub async fn connection(&self) -> Result<redis::aio::MultiplexedConnection, String> {
        let client = redis::Client::open(self.url()).map_err(|e| e.to_string())?;
        client
            .get_multiplexed_async_connection()
            .await
            .map_err(|e| e.to_string())
    }

    /// Subscribers of `channel` (`PUBSUB NUMSUB`).
    pub async fn subscribers(&self, channel: &str) -> Result<i64, String> {
        let mut conn = self.connection().await?;
        let (_, n): (String, i64) = redis::cmd("PUBSUB")
            .arg("NUMSUB")
            .arg(channel)
            .query_async(&mut conn)
            .await
            .map_err(|e| e.to_string())?;
        Ok(n)
    }
}
