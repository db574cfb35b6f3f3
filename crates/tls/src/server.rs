//! A listener's certificates: a default one and more chosen by SNI, held
//! behind an [`ArcSwap`] so a reload swaps them for new handshakes while
//! open connections keep the session they already have.

use std::sync::Arc;

use arc_swap::ArcSwap;
use openssl::ssl::{SslAcceptor, SslMethod, SslVersion};

use crate::cert::{CertPair, PairSource};
use crate::TlsError;

/// The certificates of one listener.
pub struct ServerCerts {
    default: Arc<CertPair>,
    /// Server names (lower case, `*.example.com` for one label) and their
    /// certificate, in config order.
    named: Vec<(String, Arc<CertPair>)>,
}

impl ServerCerts {
    pub fn load(default: &PairSource, named: &[(String, PairSource)]) -> Result<Self, TlsError> {
        Ok(Self {
            default: Arc::new(CertPair::load(default)?),
            named: named
                .iter()
                .map(|(name, src)| Ok((name.to_ascii_lowercase(), Arc::new(CertPair::load(src)?))))
                .collect::<Result<_, TlsError>>()?,
        })
    }

    /// The certificate for a client's SNI: an exact server name first, then
    /// a `*.` wildcard for the first label, else the default one (also for
    /// clients that send no SNI, such as a bare IP address).
    pub fn select(&self, server_name: Option<&str>) -> &Arc<CertPair> {
        let Some(name) = server_name.map(str::to_ascii_lowercase) else {
            return &self.default;
        };
        if let Some((_, pair)) = self.named.iter().find(|(n, _)| *n == name) {
            return pair;
        }
        let parent = name.split_once('.').map(|(_, rest)| rest);
        parent
            .and_then(|p| {
                self.named
                    .iter()
                    .find(|(n, _)| n.strip_prefix("*.") == Some(p))
            })
            .map(|(_, pair)| pair)
            .unwrap_or(&self.default)
    }

    /// Every certificate, default first (for expiry).
    pub fn pairs(&self) -> impl Iterator<Item = &Arc<CertPair>> {
        std::iter::once(&self.default).chain(self.named.iter().map(|(_, p)| p))
    }

    pub fn default_pair(&self) -> &Arc<CertPair> {
        &self.default
    }
}

/// A listener's certificates and where they come from, re-readable.
pub struct CertStore {
    current: ArcSwap<ServerCerts>,
    default: PairSource,
    named: Vec<(String, PairSource)>,
}

impl CertStore {
    pub fn load(default: PairSource, named: Vec<(String, PairSource)>) -> Result<Self, TlsError> {
        let certs = ServerCerts::load(&default, &named)?;
        Ok(Self {
            current: ArcSwap::from_pointee(certs),
            default,
            named,
        })
    }

    /// Re-reads every file. On any error the certificates in use stay.
    pub fn reload(&self) -> Result<(), TlsError> {
        let certs = ServerCerts::load(&self.default, &self.named)?;
        self.current.store(Arc::new(certs));
        Ok(())
    }

    pub fn current(&self) -> Arc<ServerCerts> {
        self.current.load_full()
    }
}

/// An OpenSSL acceptor serving one certificate (Mozilla's intermediate
/// profile, raised to `min_version`), for listeners without SNI choice.
pub fn acceptor(pair: &CertPair, min_version: SslVersion) -> Result<SslAcceptor, TlsError> {
    let invalid = |e: openssl::error::ErrorStack| TlsError::Invalid {
        key: pair.label.clone(),
        detail: e.to_string(),
    };
    let mut b = SslAcceptor::mozilla_intermediate_v5(SslMethod::tls()).map_err(invalid)?;
    b.set_min_proto_version(Some(min_version))
        .map_err(invalid)?;
    b.set_certificate(pair.leaf()).map_err(invalid)?;
    for c in pair.intermediates() {
        b.add_extra_chain_cert(c.clone()).map_err(invalid)?;
    }
    b.set_private_key(&pair.key).map_err(invalid)?;
    b.check_private_key().map_err(invalid)?;
    Ok(b.build())
}
