//! rustls client configurations for the three TLS modes, always with the ring provider (the
//! process-wide default provider is neither needed nor touched).

use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::WebPkiSupportedAlgorithms;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};
use tokio_postgres_rustls::MakeRustlsConnect;

use crate::{Error, TlsConfig, TlsError, TlsMode};

/// The connector for `tls`. With [`TlsMode::Disable`] it is never used (the driver is told
/// not to negotiate TLS), but one connector type keeps the pool's type the same in every mode.
pub(crate) fn connector(tls: &TlsConfig) -> Result<MakeRustlsConnect, Error> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ClientConfig::builder_with_provider(Arc::clone(&provider))
        .with_safe_default_protocol_versions()
        .map_err(|e| Error::Tls(TlsError::Rustls(e)))?;
    let config = match tls.mode {
        TlsMode::Disable => builder
            .with_root_certificates(RootCertStore::empty())
            .with_no_client_auth(),
        TlsMode::Require => builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(EncryptOnly {
                algorithms: provider.signature_verification_algorithms,
            }))
            .with_no_client_auth(),
        TlsMode::VerifyFull => builder
            .with_root_certificates(roots(tls)?)
            .with_no_client_auth(),
    };
    Ok(MakeRustlsConnect::new(config))
}

fn roots(tls: &TlsConfig) -> Result<RootCertStore, Error> {
    let mut store = RootCertStore::empty();
    match &tls.ca_file {
        Some(path) => {
            let bad = |reason: String| Error::config("tls.ca_file", reason);
            let pem = std::fs::read(path)
                .map_err(|e| bad(format!("cannot read {}: {e}", path.display())))?;
            let mut found = 0usize;
            for cert in CertificateDer::pem_slice_iter(&pem) {
                let cert =
                    cert.map_err(|e| bad(format!("{} is not valid PEM: {e}", path.display())))?;
                store.add(cert).map_err(|e| {
                    bad(format!(
                        "{} holds an unusable certificate: {e}",
                        path.display()
                    ))
                })?;
                found += 1;
            }
            if found == 0 {
                return Err(bad(format!("{} holds no certificate", path.display())));
            }
        }
        None => {
            let loaded = rustls_native_certs::load_native_certs();
            let (added, _ignored) = store.add_parsable_certificates(loaded.certs);
            if added == 0 {
                let reason = if loaded.errors.is_empty() {
                    "the store is empty".to_owned()
                } else {
                    loaded
                        .errors
                        .iter()
                        .map(ToString::to_string)
                        .collect::<Vec<_>>()
                        .join("; ")
                };
                return Err(Error::Tls(TlsError::NoNativeRoots { reason }));
            }
        }
    }
    Ok(store)
}

/// `require`: encrypts, accepts any certificate. The handshake signatures are still checked,
/// so the session keys belong to whoever holds the presented certificate's key; who that is
/// goes unchecked.
#[derive(Debug)]
struct EncryptOnly {
    algorithms: WebPkiSupportedAlgorithms,
}

impl ServerCertVerifier for EncryptOnly {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_mode_builds_without_a_process_default_provider() {
        connector(&TlsConfig::new(TlsMode::Disable)).unwrap();
        connector(&TlsConfig::new(TlsMode::Require)).unwrap();
    }

    #[test]
    fn a_ca_file_without_certificates_is_refused() {
        let dir = std::env::temp_dir().join(format!("unite-pool-ca-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("empty.pem");
        std::fs::write(&path, "not a certificate\n").unwrap();
        let Err(err) = connector(&TlsConfig::new(TlsMode::VerifyFull).with_ca_file(&path)) else {
            panic!("a CA file without certificates was accepted");
        };
        assert!(
            matches!(
                err,
                Error::Config {
                    field: "tls.ca_file",
                    ..
                }
            ),
            "{err:?}"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
}
