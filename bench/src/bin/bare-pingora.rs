//! `hop`'s bare pingora row: a pingora HTTP proxy that does nothing but route every request to one
//! upstream (origin-form, keep-alive) and add one header, on one worker thread, with pingora's
//! defaults otherwise (as `vexil-proxy --threads 1`). What pingora's own
//! request path costs, so that `vexil-proxy`'s cost above it can be told apart.
//!
//!     bare-pingora LISTEN UPSTREAM

use std::net::SocketAddr;

use async_trait::async_trait;
use pingora::http::RequestHeader;
use pingora::proxy::{ProxyHttp, Session};
use pingora::server::Server;
use pingora::server::configuration::ServerConf;
use pingora::upstreams::peer::HttpPeer;

struct Bare {
    upstream: SocketAddr,
}

#[async_trait]
impl ProxyHttp for Bare {
    type CTX = ();

    fn new_ctx(&self) {}

    async fn upstream_peer(
        &self,
        _session: &mut Session,
        _ctx: &mut (),
    ) -> pingora::Result<Box<HttpPeer>> {
        Ok(Box::new(HttpPeer::new(self.upstream, false, String::new())))
    }

    async fn upstream_request_filter(
        &self,
        _session: &mut Session,
        req: &mut RequestHeader,
        _ctx: &mut (),
    ) -> pingora::Result<()> {
        // An absolute-form target (from an HTTP_PROXY client) goes upstream in origin form, as
        // vexil-proxy and nginx send it.
        if req.uri.authority().is_some() {
            let path = req
                .uri
                .path_and_query()
                .map_or("/", |p| p.as_str())
                .to_string();
            req.set_uri(http::Uri::try_from(path).expect("a path"));
        }
        req.insert_header("vexil-flags", "checkout=?1")
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let [_, listen, upstream] = &args[..] else {
        eprintln!("usage: bare-pingora LISTEN UPSTREAM");
        std::process::exit(2);
    };
    let upstream: SocketAddr = upstream.parse().expect("UPSTREAM: host:port");
    let conf = ServerConf {
        threads: 1,
        grace_period_seconds: Some(0),
        graceful_shutdown_timeout_seconds: Some(0),
        ..ServerConf::default()
    };
    let mut server = Server::new_with_opt_and_conf(None, conf);
    server.bootstrap();
    let mut service = pingora::proxy::http_proxy_service(&server.configuration, Bare { upstream });
    service.add_tcp(listen);
    server.add_service(service);
    server.run_forever();
}
