//! What a peer answers to a TLS ClientHello: used at start to catch an
//! upstream configured `tls = true` whose target speaks plain HTTP, which
//! would otherwise fail every call with an opaque handshake error.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use openssl::ssl::{SslConnector, SslMethod, SslVerifyMode};

/// The answer of a target to a TLS ClientHello.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Probe {
    /// It speaks TLS (whether or not the handshake would be trusted).
    Tls,
    /// It answered with HTTP: a plain-HTTP server.
    PlainHttp,
    /// No answer to judge by (refused, timed out, closed): not an error at
    /// start, the target may come up later.
    Unknown(String),
}

/// Keeps the first bytes the peer sent, to tell TLS from HTTP afterwards.
#[derive(Debug)]
struct Recording {
    inner: TcpStream,
    first: Vec<u8>,
}

impl Read for Recording {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        if self.first.len() < 16 {
            let keep = n.min(16 - self.first.len());
            self.first.extend_from_slice(&buf[..keep]);
        }
        Ok(n)
    }
}

impl Write for Recording {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.inner.write(buf)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

/// Sends a ClientHello to `addr` (blocking, at most about `timeout` per step).
pub fn probe(addr: SocketAddr, timeout: Duration) -> Probe {
    let tcp = match TcpStream::connect_timeout(&addr, timeout) {
        Ok(t) => t,
        Err(e) => return Probe::Unknown(e.to_string()),
    };
    let _ = tcp.set_read_timeout(Some(timeout));
    let _ = tcp.set_write_timeout(Some(timeout));
    let connector = match SslConnector::builder(SslMethod::tls()) {
        Ok(mut b) => {
            b.set_verify(SslVerifyMode::NONE);
            b.build()
        }
        Err(e) => return Probe::Unknown(e.to_string()),
    };
    let config = match connector.configure() {
        Ok(c) => c.verify_hostname(false).use_server_name_indication(false),
        Err(e) => return Probe::Unknown(e.to_string()),
    };
    let stream = Recording {
        inner: tcp,
        first: Vec::new(),
    };
    match config.connect("", stream) {
        Ok(_) => Probe::Tls,
        Err(e) => {
            let first = match &e {
                openssl::ssl::HandshakeError::Failure(m)
                | openssl::ssl::HandshakeError::WouldBlock(m) => m.get_ref().first.clone(),
                openssl::ssl::HandshakeError::SetupFailure(_) => Vec::new(),
            };
            match first.first() {
                // A TLS record: handshake (0x16) or alert (0x15).
                Some(0x15 | 0x16) => Probe::Tls,
                Some(_) if first.starts_with(b"HTTP/") => Probe::PlainHttp,
                _ => Probe::Unknown(e.to_string()),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_http_server_is_told_from_a_closed_port() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let server = std::thread::spawn(move || {
            let (mut s, _) = listener.accept().unwrap();
            let mut buf = [0u8; 512];
            let _ = s.read(&mut buf);
            let _ = s.write_all(b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\n\r\n");
        });
        assert_eq!(probe(addr, Duration::from_secs(2)), Probe::PlainHttp);
        server.join().unwrap();
        // Nobody listens there any more.
        assert!(matches!(
            probe(addr, Duration::from_secs(2)),
            Probe::Unknown(_)
        ));
    }
}
