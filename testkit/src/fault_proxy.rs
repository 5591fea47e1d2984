//! A TCP proxy that can cut or freeze the link between control and PostgreSQL.

use std::sync::Arc;

/// A TCP proxy on loopback in front of `upstream` that can be cut (every open connection closed,
/// new ones accepted and closed at once), frozen (connections stay open but nothing passes: a
/// silent partition), at once or when a client sends given bytes (e.g. a statement in the middle
/// of a transaction), and restored. Runs on its own thread.
pub struct FaultProxy {
    addr: std::net::SocketAddr,
    state: Arc<tokio::sync::watch::Sender<Link>>,
    stop: Arc<tokio::sync::Notify>,
    trigger: Trigger,
}

/// The bytes that freeze the link when a client sends them (armed once).
type Trigger = Arc<std::sync::Mutex<Option<Vec<u8>>>>;

/// What a [`FaultProxy`] does with traffic.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Link {
    Forward,
    Cut,
    Frozen,
}

impl FaultProxy {
    /// Starts one forwarding to `upstream` (`host:port`).
    pub fn start(upstream: &str) -> FaultProxy {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind the fault proxy");
        listener.set_nonblocking(true).expect("nonblocking");
        let addr = listener.local_addr().expect("address");
        let (state, _) = tokio::sync::watch::channel(Link::Forward);
        let state = Arc::new(state);
        let stop = Arc::new(tokio::sync::Notify::new());
        let upstream = upstream.to_string();
        let trigger = Trigger::default();
        let (state2, stop2, trigger2) = (state.clone(), stop.clone(), trigger.clone());
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("fault proxy runtime");
            rt.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(listener).expect("listener");
                loop {
                    let (client, _) = tokio::select! {
                        _ = stop2.notified() => return,
                        accepted = listener.accept() => match accepted {
                            Ok(a) => a,
                            Err(_) => continue,
                        },
                    };
                    let mut rx = state2.subscribe();
                    let link = *rx.borrow();
                    match link {
                        Link::Cut => drop(client),
                        // Accepted, never answered, closed when the freeze ends.
                        Link::Frozen => {
                            tokio::spawn(async move {
                                let _ = rx.wait_for(|s| *s != Link::Frozen).await;
                                drop(client);
                            });
                        }
                        Link::Forward => {
                            let upstream = upstream.clone();
                            tokio::spawn(forward(
                                client,
                                upstream,
                                rx,
                                state2.clone(),
                                trigger2.clone(),
                            ));
                        }
                    }
                }
            });
        });
        FaultProxy {
            addr,
            state,
            stop,
            trigger,
        }
    }

    /// Where clients connect.
    pub fn addr(&self) -> std::net::SocketAddr {
        self.addr
    }

    /// Closes every open connection and refuses new ones (accepted and closed at once).
    pub fn cut(&self) {
        self.state.send_replace(Link::Cut);
    }

    /// Lets nothing through, closing nothing: open connections hang, new ones are accepted and
    /// never answered. [`FaultProxy::restore`] then closes them all.
    pub fn freeze(&self) {
        self.state.send_replace(Link::Frozen);
    }

    /// Freezes the link (as [`FaultProxy::freeze`]) when a client next sends `bytes`; the chunk
    /// holding them is not passed on. For a hang in the middle of a conversation: e.g. the bytes of
    /// a statement a transaction sends after its first.
    pub fn freeze_when_sent(&self, bytes: &[u8]) {
        *self.trigger.lock().expect("trigger") = Some(bytes.to_vec());
    }

    /// Forwards new connections again.
    pub fn restore(&self) {
        self.state.send_replace(Link::Forward);
    }
}

/// Forwards one connection until the link leaves `Forward` (then holds it while frozen) or
/// either side closes. Client bytes are checked for the armed trigger, which freezes the link.
async fn forward(
    client: tokio::net::TcpStream,
    upstream: String,
    mut rx: tokio::sync::watch::Receiver<Link>,
    state: Arc<tokio::sync::watch::Sender<Link>>,
    trigger: Trigger,
) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let Ok(server) = tokio::net::TcpStream::connect(&upstream).await else {
        return;
    };
    let (mut client_read, mut client_write) = client.into_split();
    let (mut server_read, mut server_write) = server.into_split();
    let up = async {
        let mut buf = vec![0u8; 64 * 1024];
        // The end of the previous chunk, so a trigger split across two chunks is still seen.
        let mut tail: Vec<u8> = Vec::new();
        loop {
            let n = match client_read.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => n,
            };
            let armed = trigger.lock().expect("trigger").clone();
            if let Some(pattern) = armed {
                let mut seen = std::mem::take(&mut tail);
                seen.extend_from_slice(&buf[..n]);
                if seen.windows(pattern.len()).any(|w| w == pattern.as_slice()) {
                    *trigger.lock().expect("trigger") = None;
                    state.send_replace(Link::Frozen);
                    // Held (not passed on) until the select below sees the freeze.
                    std::future::pending::<()>().await;
                }
                tail = seen[seen.len().saturating_sub(pattern.len())..].to_vec();
            }
            if server_write.write_all(&buf[..n]).await.is_err() {
                return;
            }
        }
    };
    let down = tokio::io::copy(&mut server_read, &mut client_write);
    tokio::select! {
        _ = up => return,
        _ = down => return,
        _ = rx.wait_for(|s| *s != Link::Forward) => {}
    }
    if *rx.borrow() == Link::Frozen {
        let _ = rx.wait_for(|s| *s != Link::Frozen).await;
    }
    // Both sockets close here.
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.state.send_replace(Link::Cut);
        self.stop.notify_one();
    }
}
