//! The smallest useful Pingora HTTP reverse proxy: every request goes to one
//! fixed upstream. No auth, no limits, no metering, no logging. It is the
//! framework's own ceiling that `bench/run.sh` compares paygate against.
//!
//! Configuration (environment, or positional arguments `LISTEN UPSTREAM [THREADS]`):
//!   BARE_PROXY_LISTEN    listen address            (default 127.0.0.1:18081)
//!   BARE_PROXY_UPSTREAM  backend address host:port (default 127.0.0.1:18080)
//!   BARE_PROXY_THREADS   worker threads            (default 2)
//!
//! Optional HTTPS listener (environment only; all three or none):
//!   BARE_PROXY_TLS_LISTEN  HTTPS listen address, served besides BARE_PROXY_LISTEN
//!   BARE_PROXY_TLS_CERT    certificate chain, PEM (leaf first)
//!   BARE_PROXY_TLS_KEY     private key of the leaf, PEM
//! It uses Pingora's OpenSSL defaults, `TlsSettings::intermediate` (Mozilla's
//! intermediate profile: TLS 1.2 and 1.3), and offers HTTP/2 and HTTP/1.1
//! through ALPN. The upstream side stays plain HTTP/1.1.

use std::net::{SocketAddr, ToSocketAddrs};
use std::process::ExitCode;

use async_trait::async_trait;
use pingora::listeners::tls::TlsSettings;
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
    tls: Option<TlsListen>,
}

/// The optional HTTPS listener.
struct TlsListen {
    listen: String,
    cert: String,
    key: String,
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
             (or BARE_PROXY_LISTEN / BARE_PROXY_UPSTREAM / BARE_PROXY_THREADS; \
             HTTPS besides: BARE_PROXY_TLS_LISTEN + BARE_PROXY_TLS_CERT + BARE_PROXY_TLS_KEY)"
            .to_string());
    }
    let listen = setting(&args, 0, "BARE_PROXY_LISTEN", "127.0.0.1:18081");
    probe_listen(&listen)?;
    let tls = tls_listen()?;

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
        tls,
    })
}

/// Pingora only logs a failed bind (and we install no logger), so probe it here.
fn probe_listen(listen: &str) -> std::result::Result<(), String> {
    let addr = listen
        .parse::<SocketAddr>()
        .map_err(|e| format!("bad listen address {listen:?}: {e}"))?;
    drop(std::net::TcpListener::bind(addr).map_err(|e| format!("cannot listen on {listen}: {e}"))?);
    Ok(())
}

/// BARE_PROXY_TLS_LISTEN / _CERT / _KEY: all three, or none of them.
fn tls_listen() -> std::result::Result<Option<TlsListen>, String> {
    let var = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
    match (
        var("BARE_PROXY_TLS_LISTEN"),
        var("BARE_PROXY_TLS_CERT"),
        var("BARE_PROXY_TLS_KEY"),
    ) {
        (None, None, None) => Ok(None),
        (Some(listen), Some(cert), Some(key)) => {
            probe_listen(&listen)?;
            Ok(Some(TlsListen { listen, cert, key }))
        }
        _ => Err(
            "BARE_PROXY_TLS_LISTEN, BARE_PROXY_TLS_CERT and BARE_PROXY_TLS_KEY \
                  go together: set all three or none"
                .to_string(),
        ),
    }
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
    if let Some(tls) = &args.tls {
        // Reads and checks the certificate and key now, before serving.
        let mut settings = match TlsSettings::intermediate(&tls.cert, &tls.key) {
            Ok(s) => s,
            Err(e) => {
                eprintln!("bare-proxy: TLS settings: {e}");
                return ExitCode::from(2);
            }
        };
        settings.enable_h2();
        proxy.add_tls_with_settings(&tls.listen, None, settings);
    }
    server.add_service(proxy);

    let https = args
        .tls
        .as_ref()
        .map(|t| format!(" and https://{}", t.listen))
        .unwrap_or_default();
    eprintln!(
        "bare-proxy: listening on http://{}{https} -> {} ({} threads)",
        args.listen, args.upstream, args.threads
    );
    server.run_forever()
}
