//! TLS (`[tls]`): the rustls server config built from PEM files at start. With it, every shard's
//! listener speaks TLS (wss:// and https:// on the configured port); the handshake counts
//! against `server.handshake_timeout_ms` like the HTTP request that follows it.

use std::path::Path;
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

/// Plaintext and ciphertext each connection's TLS session may buffer for sending. Past it the
/// outbox keeps the frames, under `connection.outbox_max_bytes`.
pub const TLS_BUFFER_LIMIT: usize = 64 << 10;

/// Why the certificate or key cannot be used; the message names the file.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read tls.cert_file {path}: {source}")]
    Certificates {
        path: String,
        source: rustls::pki_types::pem::Error,
    },
    #[error("tls.cert_file {0} holds no certificate")]
    NoCertificate(String),
    #[error("cannot read tls.key_file {path}: {source}")]
    Key {
        path: String,
        source: rustls::pki_types::pem::Error,
    },
    #[error("tls.cert_file and tls.key_file do not make a server config: {0}")]
    Config(#[from] rustls::Error),
}

/// Loads the certificate chain and private key (PEM) into a server config offering HTTP/1.1.
pub fn server_config(
    cert_file: &Path,
    key_file: &Path,
) -> Result<Arc<rustls::ServerConfig>, TlsError> {
    let name = |p: &Path| p.display().to_string();
    let chain = CertificateDer::pem_file_iter(cert_file)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .map_err(|source| TlsError::Certificates {
            path: name(cert_file),
            source,
        })?;
    if chain.is_empty() {
        return Err(TlsError::NoCertificate(name(cert_file)));
    }
    let key = PrivateKeyDer::from_pem_file(key_file).map_err(|source| TlsError::Key {
        path: name(key_file),
        source,
    })?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(chain, key)?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}
