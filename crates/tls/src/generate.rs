//! Certificates made on the spot: the demo's self-signed one and the test
//! kit's private CAs. P-256 keys: quick to generate, accepted everywhere.

use std::net::IpAddr;

use openssl::asn1::{Asn1Integer, Asn1Time};
use openssl::bn::BigNum;
use openssl::ec::{EcGroup, EcKey};
use openssl::hash::MessageDigest;
use openssl::nid::Nid;
use openssl::pkey::{PKey, Private};
use openssl::x509::extension::{
    BasicConstraints, ExtendedKeyUsage, KeyUsage, SubjectAlternativeName, SubjectKeyIdentifier,
};
use openssl::x509::{X509Builder, X509NameBuilder, X509};

use crate::TlsError;

/// A certificate and its key, as PEM.
pub struct Issued {
    pub cert: X509,
    pub key: PKey<Private>,
}

impl Issued {
    pub fn cert_pem(&self) -> Vec<u8> {
        self.cert.to_pem().unwrap_or_default()
    }

    pub fn key_pem(&self) -> Vec<u8> {
        self.key.private_key_to_pem_pkcs8().unwrap_or_default()
    }
}

/// A certificate authority that issues leaf certificates.
pub struct Ca(Issued);

fn err(e: openssl::error::ErrorStack) -> TlsError {
    TlsError::Invalid {
        key: "generated certificate".into(),
        detail: e.to_string(),
    }
}

fn new_key() -> Result<PKey<Private>, openssl::error::ErrorStack> {
    let group = EcGroup::from_curve_name(Nid::X9_62_PRIME256V1)?;
    PKey::from_ec_key(EcKey::generate(&group)?)
}

/// Validity relative to now, in seconds (negative is in the past).
#[derive(Debug, Clone, Copy)]
pub struct Validity {
    pub from: i64,
    pub until: i64,
}

impl Validity {
    pub fn days(days: i64) -> Self {
        Self {
            from: -3600,
            until: days * 86_400,
        }
    }
}

struct Spec<'a> {
    common_name: &'a str,
    names: &'a [&'a str],
    validity: Validity,
    is_ca: bool,
}

fn build(
    spec: &Spec<'_>,
    key: &PKey<Private>,
    issuer: Option<&Issued>,
) -> Result<X509, openssl::error::ErrorStack> {
    let mut name = X509NameBuilder::new()?;
    name.append_entry_by_nid(Nid::COMMONNAME, spec.common_name)?;
    let name = name.build();
    let mut b = X509Builder::new()?;
    b.set_version(2)?;
    let mut serial = BigNum::new()?;
    serial.rand(127, openssl::bn::MsbOption::MAYBE_ZERO, false)?;
    b.set_serial_number(Asn1Integer::from_bn(&serial)?.as_ref())?;
    b.set_subject_name(&name)?;
    b.set_issuer_name(issuer.map_or(&name, |i| i.cert.subject_name()))?;
    b.set_pubkey(key)?;
    let now = crate::now_unix();
    b.set_not_before(Asn1Time::from_unix(now + spec.validity.from)?.as_ref())?;
    b.set_not_after(Asn1Time::from_unix(now + spec.validity.until)?.as_ref())?;
    if spec.is_ca {
        b.append_extension(BasicConstraints::new().critical().ca().build()?)?;
        b.append_extension(
            KeyUsage::new()
                .critical()
                .key_cert_sign()
                .crl_sign()
                .build()?,
        )?;
    } else {
        b.append_extension(BasicConstraints::new().build()?)?;
        b.append_extension(
            KeyUsage::new()
                .critical()
                .digital_signature()
                .key_encipherment()
                .build()?,
        )?;
        b.append_extension(
            ExtendedKeyUsage::new()
                .server_auth()
                .client_auth()
                .build()?,
        )?;
        if !spec.names.is_empty() {
            let mut san = SubjectAlternativeName::new();
            for n in spec.names {
                if n.parse::<IpAddr>().is_ok() {
                    san.ip(n);
                } else {
                    san.dns(n);
                }
            }
            let ext = san.build(&b.x509v3_context(issuer.map(|i| i.cert.as_ref()), None))?;
            b.append_extension(ext)?;
        }
    }
    let ski = SubjectKeyIdentifier::new().build(&b.x509v3_context(None, None))?;
    b.append_extension(ski)?;
    b.sign(issuer.map_or(key, |i| &i.key), MessageDigest::sha256())?;
    Ok(b.build())
}

impl Ca {
    pub fn new(common_name: &str) -> Result<Self, TlsError> {
        let key = new_key().map_err(err)?;
        let spec = Spec {
            common_name,
            names: &[],
            validity: Validity::days(3650),
            is_ca: true,
        };
        let cert = build(&spec, &key, None).map_err(err)?;
        Ok(Self(Issued { cert, key }))
    }

    pub fn cert_pem(&self) -> Vec<u8> {
        self.0.cert_pem()
    }

    /// A leaf for `names` (DNS names or IP addresses; the first is also the
    /// common name), valid for servers and clients.
    pub fn issue(&self, names: &[&str], validity: Validity) -> Result<Issued, TlsError> {
        leaf(names, validity, Some(&self.0))
    }
}

/// A self-signed leaf for `names`.
pub fn self_signed(names: &[&str], validity: Validity) -> Result<Issued, TlsError> {
    leaf(names, validity, None)
}

fn leaf(names: &[&str], validity: Validity, issuer: Option<&Issued>) -> Result<Issued, TlsError> {
    let key = new_key().map_err(err)?;
    let spec = Spec {
        common_name: names.first().copied().unwrap_or("paygate"),
        names,
        validity,
        is_ca: false,
    };
    let cert = build(&spec, &key, issuer).map_err(err)?;
    Ok(Issued { cert, key })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cert::{CertPair, PairSource};
    use crate::server::ServerCerts;

    fn write(dir: &std::path::Path, name: &str, issued: &Issued) -> PairSource {
        let cert_path = dir.join(format!("{name}.crt"));
        let key_path = dir.join(format!("{name}.key"));
        std::fs::write(&cert_path, issued.cert_pem()).unwrap();
        std::fs::write(&key_path, issued.key_pem()).unwrap();
        PairSource {
            label: name.into(),
            cert_path,
            key_path,
            cert_key: "t.cert_path".into(),
            key_key: "t.key_path".into(),
        }
    }

    #[test]
    fn an_issued_leaf_verifies_against_its_ca_and_names_its_hosts() {
        let ca = Ca::new("test ca").unwrap();
        let leaf = ca
            .issue(&["api.example.com", "127.0.0.1"], Validity::days(30))
            .unwrap();
        assert!(leaf.cert.verify(&ca.0.key).unwrap());
        let d = tempfile::tempdir().unwrap();
        let pair = CertPair::load(&write(d.path(), "leaf", &leaf)).unwrap();
        assert_eq!(pair.dns_names(), vec!["api.example.com"]);
        let left = pair.seconds_left(crate::now_unix());
        assert!((29 * 86_400..=30 * 86_400).contains(&left), "{left}");
    }

    #[test]
    fn a_key_of_another_certificate_is_refused_naming_the_key() {
        let ca = Ca::new("test ca").unwrap();
        let a = ca.issue(&["a.example"], Validity::days(30)).unwrap();
        let b = ca.issue(&["b.example"], Validity::days(30)).unwrap();
        let d = tempfile::tempdir().unwrap();
        let mut src = write(d.path(), "a", &a);
        src.key_path = write(d.path(), "b", &b).key_path;
        let e = CertPair::load(&src).err().unwrap().to_string();
        assert!(e.starts_with("t.key_path: the private key in"), "{e}");
    }

    #[test]
    fn an_expired_or_missing_certificate_is_refused() {
        let ca = Ca::new("test ca").unwrap();
        let old = ca
            .issue(
                &["old.example"],
                Validity {
                    from: -10 * 86_400,
                    until: -86_400,
                },
            )
            .unwrap();
        let d = tempfile::tempdir().unwrap();
        let src = write(d.path(), "old", &old);
        let e = CertPair::load(&src).err().unwrap().to_string();
        assert!(e.starts_with("t.cert_path: the certificate in"), "{e}");
        assert!(e.contains("expired"), "{e}");
        let mut missing = src.clone();
        missing.cert_path = d.path().join("nope.crt");
        let e = CertPair::load(&missing).err().unwrap().to_string();
        assert!(e.starts_with("t.cert_path: cannot read"), "{e}");
        std::fs::write(&missing.cert_path, b"not pem").unwrap();
        let e = CertPair::load(&missing).err().unwrap().to_string();
        assert!(e.contains("holds no PEM certificate"), "{e}");
    }

    #[test]
    fn sni_picks_exact_then_wildcard_then_default() {
        let ca = Ca::new("test ca").unwrap();
        let d = tempfile::tempdir().unwrap();
        let def = write(
            d.path(),
            "default",
            &ca.issue(&["default.example"], Validity::days(30)).unwrap(),
        );
        let exact = write(
            d.path(),
            "exact",
            &ca.issue(&["api.example.com"], Validity::days(30)).unwrap(),
        );
        let wild = write(
            d.path(),
            "wild",
            &ca.issue(&["*.example.com"], Validity::days(30)).unwrap(),
        );
        let certs = ServerCerts::load(
            &def,
            &[
                ("API.example.com".into(), exact),
                ("*.example.com".into(), wild),
            ],
        )
        .unwrap();
        assert_eq!(certs.select(Some("api.example.com")).label, "exact");
        assert_eq!(certs.select(Some("Api.Example.Com")).label, "exact");
        assert_eq!(certs.select(Some("www.example.com")).label, "wild");
        assert_eq!(certs.select(Some("a.b.example.com")).label, "default");
        assert_eq!(certs.select(Some("other.org")).label, "default");
        assert_eq!(certs.select(None).label, "default");
        assert_eq!(certs.pairs().count(), 3);
    }
}
