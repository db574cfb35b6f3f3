//! The smallest useful Pingora HTTP reverse proxy: every request goes to one
//! fixed upstream. No auth, no limits, no metering, no logging. It is the
//! framework's own ceiling that `bench/run.sh` compares paygate against.
//!
//! Configuration (environment, or positional arguments `LISTEN UPSTREAM [THREADS]`):
//!   BARE_PROXY_LISTEN    listen address            (default 127.0.0.1:18081)
//!   BARE_PROXY_UPSTREAM  backend address host:port (default 127.0.0.1:18080)
//!   BARE_PROXY_THREADS   worker threads            (default 2)

use std::net::{SocketAddr, ToSocketAddrs};
use std::process::ExitCode;

use async_trait::async_trait;
use pingora::prelude::*;
use pingora::server::configuration::ServerConf;

struct BareProxy {
    upstream: SocketAddr,
}

#[async_trait]
impl ProxyHttp for BareProxy {
    type CTX = ();

    fn new_ctx(&self) -> Self::CTX {}

    async fn upstream_peer(
        &self,
        _session: &mut Session,
        _ctx: &mut Self::CTX,
    ) -> Result<Box<HttpPeer>> {
        // Plain HTTP/1.1; Pingora keeps upstream connections alive in its pool.
        Ok(Box::new(HttpPeer::new(self.upstream, false, String::new())))
    }
}

struct Args {
    listen: String,
    upstream: SocketAddr,
    threads: usize,
}

fn setting(args: &[String], pos: usize, env: &str, default: &str) -> String {
    args.get(pos)
        .cloned()
        .or_else(|| std::env::var(env).ok().filter(|v| !v.is_empty()))
        .unwrap_or_else(|| default.to_string())
}

fn parse_args() -> std::result::Result<Args, String> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.iter().any(|a| a == "-h" || a == "--help") {
        return Err("usage: bare-proxy [LISTEN [UPSTREAM [THREADS]]]  \
             (or BARE_PROXY_LISTEN / BARE_PROXY_UPSTREAM / BARE_PROXY_THREADS)"
            .to_string());
    }
    let listen = setting(&args, 0, "BARE_PROXY_LISTEN", "127.0.0.1:18081");
    let listen_addr = listen
        .parse::<SocketAddr>()
        .map_err(|e| format!("bad listen address {listen:?}: {e}"))?;
    // Pingora only logs a failed bind (and we install no logger), so probe it here.
    drop(
        std::net::TcpListener::bind(listen_addr)
            .map_err(|e| format!("cannot listen on {listen}: {e}"))?,
    );

    let upstream_s = setting(&args, 1, "BARE_PROXY_UPSTREAM", "127.0.0.1:18080");
    let upstream = upstream_s
        .to_socket_addrs()
        .map_err(|e| format!("bad upstream address {upstream_s:?}: {e}"))?
        .next()
        .ok_or_else(|| format!("upstream {upstream_s:?} resolves to nothing"))?;

    let threads_s = setting(&args, 2, "BARE_PROXY_THREADS", "2");
    let threads = match threads_s.parse::<usize>() {
        Ok(n) if n > 0 => n,
        _ => return Err(format!("bad thread count {threads_s:?}")),
    };
    Ok(Args {
        listen,
        upstream,
        threads,
    })
}

fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(a) => a,
        Err(msg) => {
            eprintln!("bare-proxy: {msg}");
            return ExitCode::from(2);
        }
    };

    let conf = ServerConf {
        threads: args.threads,
        // SIGTERM would otherwise wait 5 minutes for in-flight work; a bench
        // harness wants the process gone at once.
        grace_period_seconds: Some(0),
        graceful_shutdown_timeout_seconds: Some(1),
        ..ServerConf::default()
    };
    let mut server = Server::new_with_opt_and_conf(None::<Opt>, conf);
    server.bootstrap();

    let mut proxy = http_proxy_service(
        &server.configuration,
        BareProxy {
            upstream: args.upstream,
        },
    );
    proxy.add_tcp(&args.listen);
    server.add_service(proxy);

    eprintln!(
        "bare-proxy: listening on {} -> {} ({} threads)",
        args.listen, args.upstream, args.threads
    );
    server.run_forever()
}
