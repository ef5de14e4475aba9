//! TLS for the server: a certificate chain and its private key from PEM, served with
//! rustls (ring provider) and HTTP/2 negotiated by ALPN, as the official clients expect;
//! and, for a cluster node's raft client and `streamlog cluster`, the trust roots its
//! peers' certificates are verified against ([`TlsRoots`]).

use std::path::Path;
use std::sync::Arc;

use rustls::RootCertStore;
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

use crate::error::{Error, Result};

/// The server's TLS identity: a certificate chain and its private key (see
/// [`ServerOptions::with_tls`](super::ServerOptions::with_tls)).
#[derive(Clone)]
pub struct TlsIdentity {
    config: Arc<rustls::ServerConfig>,
    /// The certificate chain, the default trust roots of a cluster node's raft client
    /// ([`TlsIdentity::own_roots`]).
    chain: Vec<CertificateDer<'static>>,
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
            .with_single_cert(chain.clone(), key)
            .map_err(|e| Error::InvalidArgument(format!("TLS certificate and key: {e}")))?;
        config.alpn_protocols = vec![b"h2".to_vec()];
        Ok(TlsIdentity {
            config: Arc::new(config),
            chain,
        })
    }

    /// Every certificate of this identity's chain as trust roots: what a cluster node
    /// verifies its peers against when it is given no CA file (`serve` without
    /// `--tls-ca`). Peers then verify when they present this same certificate (nodes
    /// that share one certificate), or one issued by a CA whose certificate is in this
    /// chain; any other is refused at the handshake.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] when no certificate of the chain can be a trust root.
    pub fn own_roots(&self) -> Result<TlsRoots> {
        TlsRoots::from_certificates(self.chain.clone())
            .map_err(|e| Error::InvalidArgument(format!("the server's certificate chain: {e}")))
    }

    pub(super) fn acceptor(&self) -> tokio_rustls::TlsAcceptor {
        tokio_rustls::TlsAcceptor::from(Arc::clone(&self.config))
    }
}

/// The certificates a TLS client of the cluster trusts: a node's raft client, when it
/// reaches its peers, and `streamlog cluster` (see
/// [`ClusterNode::start`](super::cluster::ClusterNode::start)). A peer is accepted only
/// when its certificate chain leads to one of them and names the host of its address
/// (a DNS name, or an IP address SAN for an address such as `127.0.0.1`); there is no
/// way to turn the check off.
#[derive(Clone)]
pub struct TlsRoots {
    roots: RootCertStore,
}

impl std::fmt::Debug for TlsRoots {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsRoots")
            .field("certificates", &self.roots.len())
            .finish()
    }
}

impl TlsRoots {
    /// Reads PEM trust roots (one or more certificates, e.g. the cluster's CA) from a
    /// file.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] naming the file when it cannot be read, holds no
    /// certificate, or holds one that does not parse as a trust root.
    pub fn from_pem_file(path: &Path) -> Result<TlsRoots> {
        let pem = std::fs::read(path).map_err(|e| {
            Error::InvalidArgument(format!(
                "cannot read the TLS CA file {}: {e}",
                path.display()
            ))
        })?;
        Self::from_pem(&pem).map_err(|e| match e {
            Error::InvalidArgument(m) => {
                Error::InvalidArgument(format!("{m} (CA file {})", path.display()))
            }
            other => other,
        })
    }

    /// The same from PEM text in memory.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] when the text holds no certificate, or one that does
    /// not parse as a trust root.
    pub fn from_pem(pem: &[u8]) -> Result<TlsRoots> {
        let certificates = CertificateDer::pem_slice_iter(pem)
            .collect::<std::result::Result<Vec<_>, _>>()
            .map_err(|e| Error::InvalidArgument(format!("bad PEM certificate: {e}")))?;
        Self::from_certificates(certificates)
    }

    /// Every one of `certificates` as a trust root; none may be skipped, so a damaged
    /// root is an error rather than a root less.
    fn from_certificates(certificates: Vec<CertificateDer<'static>>) -> Result<TlsRoots> {
        if certificates.is_empty() {
            return Err(Error::InvalidArgument(
                "no certificate found to trust (want PEM `CERTIFICATE` blocks)".into(),
            ));
        }
        let mut roots = RootCertStore::empty();
        for (i, certificate) in certificates.into_iter().enumerate() {
            roots.add(certificate).map_err(|e| {
                Error::InvalidArgument(format!("certificate {} cannot be a trust root: {e}", i + 1))
            })?;
        }
        Ok(TlsRoots { roots })
    }

    /// tonic's client TLS settings: these roots only, `server_name` (the host of the
    /// peer's address) as the name its certificate must carry.
    #[cfg(feature = "cluster")]
    pub(super) fn client_config(&self, server_name: &str) -> tonic::transport::ClientTlsConfig {
        tonic::transport::ClientTlsConfig::new()
            .trust_anchors(self.roots.roots.iter().cloned())
            .domain_name(server_name)
    }
}
