//! A TCP proxy that can cut or freeze the link between control and PostgreSQL.

use std::sync::Arc;

/// A TCP proxy on loopback in front of `upstream` that can be cut (every open connection closed,
/// new ones accepted and closed at once), frozen (connections stay open but nothing passes: a
/// silent partition) and restored. Runs on its own thread.
pub struct FaultProxy {
    addr: std::net::SocketAddr,
    state: Arc<tokio::sync::watch::Sender<Link>>,
    stop: Arc<tokio::sync::Notify>,
}

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
        let (state2, stop2) = (state.clone(), stop.clone());
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
                            tokio::spawn(forward(client, upstream, rx));
                        }
                    }
                }
            });
        });
        FaultProxy { addr, state, stop }
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

    /// Forwards new connections again.
    pub fn restore(&self) {
        self.state.send_replace(Link::Forward);
    }
}

/// Forwards one connection until the link leaves `Forward` (then holds it while frozen) or
/// either side closes.
async fn forward(
    mut client: tokio::net::TcpStream,
    upstream: String,
    mut rx: tokio::sync::watch::Receiver<Link>,
) {
    let Ok(mut server) = tokio::net::TcpStream::connect(&upstream).await else {
        return;
    };
    tokio::select! {
        _ = tokio::io::copy_bidirectional(&mut client, &mut server) => return,
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
