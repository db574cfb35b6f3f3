//! HTTPS for callers: Pingora's OpenSSL listener, with the certificate
//! chosen per handshake from a [`CertStore`], so a reload reaches the next
//! handshake and never the connections already open.

use std::sync::Arc;

use async_trait::async_trait;
use paygate_tls::{CertStore, SslVersion};
use pingora::listeners::tls::TlsSettings;
use pingora::listeners::TlsAccept;
use pingora::protocols::tls::TlsRef;
use pingora::tls::ext;
use pingora::tls::ssl::NameType;

/// Serves the certificate the client's SNI asks for.
pub struct SniCertificates(pub Arc<CertStore>);

#[async_trait]
impl TlsAccept for SniCertificates {
    async fn certificate_callback(&self, ssl: &mut TlsRef) {
        let name = ssl.servername(NameType::HOST_NAME).map(str::to_owned);
        let certs = self.0.current();
        let pair = certs.select(name.as_deref());
        // A failure leaves the handshake without a certificate, which
        // OpenSSL then refuses: the client sees a handshake failure.
        let used = ext::ssl_use_certificate(ssl, pair.leaf()).and_then(|()| {
            pair.intermediates()
                .iter()
                .try_for_each(|c| ext::ssl_add_chain_cert(ssl, c))?;
            ext::ssl_use_private_key(ssl, &pair.key)
        });
        if let Err(e) = used {
            tracing::warn!(certificate = %pair.label, error = %e, "TLS certificate not usable");
        }
    }
}

/// The listener settings of `[gateway.tls]`: Mozilla's intermediate
/// profile, `min_version`, and HTTP/2 offered through ALPN when asked.
pub fn listener_settings(
    certs: Arc<CertStore>,
    min_version: SslVersion,
    http2: bool,
) -> pingora::Result<TlsSettings> {
    let mut settings = TlsSettings::with_callbacks(Box::new(SniCertificates(certs)))?;
    settings
        .set_min_proto_version(Some(min_version))
        .map_err(|e| {
            pingora::Error::because(pingora::ErrorType::InternalError, "min_version", e)
        })?;
    if http2 {
        settings.enable_h2();
    }
    Ok(settings)
}
