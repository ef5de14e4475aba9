//! TLS for the server: a certificate chain and its private key from PEM, served with
//! rustls (ring provider) and HTTP/2 negotiated by ALPN, as the official clients expect.

use std::path::Path;
use std::sync::Arc;

use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

use crate::error::{Error, Result};

/// The server's TLS identity: a certificate chain and its private key (see
/// [`ServerOptions::with_tls`](super::ServerOptions::with_tls)).
#[derive(Clone)]
pub struct TlsIdentity {
    config: Arc<rustls::ServerConfig>,
}

impl std::fmt::Debug for TlsIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The private key stays out of logs.
        f.debug_struct("TlsIdentity").finish_non_exhaustive()
    }
}

impl TlsIdentity {
    /// Reads a PEM certificate chain (the server's certificate first) and a PEM private
    /// key (PKCS#8, PKCS#1 or SEC1) from files.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] naming the file when one cannot be read, holds no
    /// certificate or key, or the key does not go with the certificate.
    pub fn from_pem_files(cert: &Path, key: &Path) -> Result<TlsIdentity> {
        let read = |path: &Path, what: &str| {
            std::fs::read(path).map_err(|e| {
                Error::InvalidArgument(format!(
                    "cannot read the TLS {what} {}: {e}",
                    path.display()
                ))
            })
        };
        let cert_pem = read(cert, "certificate")?;
        let key_pem = read(key, "private key")?;
        Self::from_pem(&cert_pem, &key_pem).map_err(|e| match e {
            Error::InvalidArgument(m) => Error::InvalidArgument(format!(
                "{m} (certificate {}, key {})",
                cert.display(),
                key.display()
            )),
            other => other,
        })
    }

    /// The same from PEM text in memory.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] when the certificate or key does not parse, or the key
    /// does not go with the certificate.
    pub fn from_pem(cert_pem: &[u8], key_pem: &[u8]) -> Result<TlsIdentity> {
        let chain = CertificateDer::pem_slice_iter(cert_pem)
            .collect::<std::result::Result<Vec<_>, _>>()
            .map_err(|e| Error::InvalidArgument(format!("bad PEM certificate: {e}")))?;
        if chain.is_empty() {
            return Err(Error::InvalidArgument(
                "no certificate found in the PEM certificate file".into(),
            ));
        }
        let key = PrivateKeyDer::from_pem_slice(key_pem).map_err(|e| {
            Error::InvalidArgument(format!("no usable private key in the PEM key file: {e}"))
        })?;
        // The provider is named here, not taken from the process default: another part of
        // a program may have compiled rustls with a second provider in.
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| Error::InvalidArgument(format!("TLS setup: {e}")))?
            .with_no_client_auth()
            .with_single_cert(chain, key)
            .map_err(|e| Error::InvalidArgument(format!("TLS certificate and key: {e}")))?;
        config.alpn_protocols = vec![b"h2".to_vec()];
        Ok(TlsIdentity {
            config: Arc::new(config),
        })
    }

    pub(super) fn acceptor(&self) -> tokio_rustls::TlsAcceptor {
        tokio_rustls::TlsAcceptor::from(Arc::clone(&self.config))
    }
}
