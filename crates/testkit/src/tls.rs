//! A private PKI for tests: a CA of their own, certificates it issues
//! written to files, HTTPS servers on loopback, and a look at the
//! certificate a server presents.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use axum_server::tls_openssl::{OpenSSLAcceptor, OpenSSLConfig};
use openssl::ssl::{SslAcceptor, SslConnector, SslFiletype, SslMethod, SslVerifyMode};
use openssl::x509::X509;
pub use paygate_tls::Validity;
use paygate_tls::{Ca, Issued};

/// A certificate, its key and the CA that signed it, as files.
#[derive(Debug, Clone)]
pub struct ServerFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
    pub ca: PathBuf,
}

/// A CA and a directory for what it issues.
pub struct Pki {
    dir: tempfile::TempDir,
    ca: Ca,
    pub ca_path: PathBuf,
}

impl Pki {
    pub fn new(name: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let ca = Ca::new(name).unwrap();
        let ca_path = dir.path().join(format!("{name}-ca.pem"));
        std::fs::write(&ca_path, ca.cert_pem()).unwrap();
        Self { dir, ca, ca_path }
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// A leaf for `names`, valid 30 days, written as `<stem>.crt`/`.key`.
    pub fn issue(&self, stem: &str, names: &[&str]) -> ServerFiles {
        self.issue_valid(stem, names, Validity::days(30))
    }

    pub fn issue_valid(&self, stem: &str, names: &[&str], validity: Validity) -> ServerFiles {
        let issued = self.ca.issue(names, validity).unwrap();
        self.write(stem, &issued)
    }

    fn write(&self, stem: &str, issued: &Issued) -> ServerFiles {
        let cert = self.dir.path().join(format!("{stem}.crt"));
        let key = self.dir.path().join(format!("{stem}.key"));
        // Written next to the target and renamed over it, as certificate
        // managers do, so a reader never sees half a file.
        for (path, bytes) in [(&cert, issued.cert_pem()), (&key, issued.key_pem())] {
            let tmp = path.with_extension("tmp");
            std::fs::write(&tmp, bytes).unwrap();
            std::fs::rename(&tmp, path).unwrap();
        }
        ServerFiles {
            cert,
            key,
            ca: self.ca_path.clone(),
        }
    }
}

/// The serial number (hex) of a certificate file's first certificate.
pub fn serial_of(cert: &Path) -> String {
    let pem = std::fs::read(cert).unwrap();
    serial(&X509::from_pem(&pem).unwrap())
}

fn serial(cert: &X509) -> String {
    cert.serial_number()
        .to_bn()
        .unwrap()
        .to_hex_str()
        .unwrap()
        .to_string()
}

/// Serves `app` over HTTPS on a free loopback port with `files`' certificate
/// (handlers may take `ConnectInfo<SocketAddr>`); with `client_ca`, a
/// client must present a certificate that CA signed.
pub async fn serve_https(
    app: axum::Router,
    files: &ServerFiles,
    client_ca: Option<&Path>,
) -> SocketAddr {
    let mut b = SslAcceptor::mozilla_intermediate_v5(SslMethod::tls()).unwrap();
    b.set_certificate_chain_file(&files.cert).unwrap();
    b.set_private_key_file(&files.key, SslFiletype::PEM)
        .unwrap();
    if let Some(ca) = client_ca {
        b.set_ca_file(ca).unwrap();
        b.set_verify(SslVerifyMode::PEER | SslVerifyMode::FAIL_IF_NO_PEER_CERT);
    }
    let config = OpenSSLConfig::from_acceptor(Arc::new(b.build()));
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let addr = listener.local_addr().unwrap();
    let server = axum_server::from_tcp(listener)
        .unwrap()
        .acceptor(OpenSSLAcceptor::new(config));
    tokio::spawn(async move {
        let _ = server
            .serve(app.into_make_service_with_connect_info::<SocketAddr>())
            .await;
    });
    addr
}

/// Handshakes with `addr` sending `server_name` as SNI and returns the
/// serial number (hex) of the certificate it presents, verified against
/// `ca` for that name; an error says why the handshake failed.
pub fn presented_serial(addr: SocketAddr, server_name: &str, ca: &Path) -> Result<String, String> {
    let mut b = SslConnector::builder(SslMethod::tls()).unwrap();
    b.set_ca_file(ca).unwrap();
    let connector = b.build();
    let tcp = std::net::TcpStream::connect(addr).map_err(|e| e.to_string())?;
    tcp.set_read_timeout(Some(std::time::Duration::from_secs(5)))
        .unwrap();
    let stream = connector
        .connect(server_name, tcp)
        .map_err(|e| e.to_string())?;
    let cert = stream
        .ssl()
        .peer_certificate()
        .ok_or("no certificate presented")?;
    Ok(serial(&cert))
}
