use std::path::{Path, PathBuf};

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose};

use crate::Error;

/// A throwaway certificate authority and a server certificate it signed, written to a
/// temporary folder (removed on drop). For TLS tests against servers the testkit starts.
#[derive(Debug)]
pub struct TestCerts {
    dir: tempfile::TempDir,
    ca_pem: String,
    cert_pem: String,
    key_pem: String,
}

impl TestCerts {
    /// A new CA and a server certificate for `names` (DNS names or IP addresses).
    pub fn generate(names: &[&str]) -> Result<Self, Error> {
        let fail = |e: rcgen::Error| Error::Start {
            what: "certificate authority",
            reason: e.to_string(),
        };
        let ca_key = KeyPair::generate().map_err(fail)?;
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).map_err(fail)?;
        ca_params
            .distinguished_name
            .push(DnType::CommonName, "Unite test CA");
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let ca_cert = ca_params.self_signed(&ca_key).map_err(fail)?;
        let issuer = Issuer::new(ca_params, &ca_key);

        let key = KeyPair::generate().map_err(fail)?;
        let names: Vec<String> = names.iter().map(|s| (*s).to_owned()).collect();
        let mut params = CertificateParams::new(names).map_err(fail)?;
        params
            .distinguished_name
            .push(DnType::CommonName, "Unite test server");
        let cert = params.signed_by(&key, &issuer).map_err(fail)?;

        let dir = tempfile::Builder::new().prefix("unite-certs-").tempdir()?;
        let me = Self {
            dir,
            ca_pem: ca_cert.pem(),
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        };
        std::fs::write(me.ca_path(), &me.ca_pem)?;
        std::fs::write(me.cert_path(), &me.cert_pem)?;
        std::fs::write(me.key_path(), &me.key_pem)?;
        Ok(me)
    }

    /// The folder holding `ca.pem`, `server.pem` and `server.key`.
    #[must_use]
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Path of the CA certificate (PEM).
    #[must_use]
    pub fn ca_path(&self) -> PathBuf {
        self.dir.path().join("ca.pem")
    }

    /// Path of the server certificate (PEM).
    #[must_use]
    pub fn cert_path(&self) -> PathBuf {
        self.dir.path().join("server.pem")
    }

    /// Path of the server's private key (PEM).
    #[must_use]
    pub fn key_path(&self) -> PathBuf {
        self.dir.path().join("server.key")
    }

    /// The CA certificate (PEM).
    #[must_use]
    pub fn ca_pem(&self) -> &str {
        &self.ca_pem
    }

    /// The server certificate (PEM).
    #[must_use]
    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    /// The server's private key (PEM).
    #[must_use]
    pub fn key_pem(&self) -> &str {
        &self.key_pem
    }
}
