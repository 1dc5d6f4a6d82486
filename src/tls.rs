//! TLS for `wss://` and `https://`: rustls over the accept loop's TCP connections, with
//! the certificate and key read from PEM files at start and again on SIGHUP, so a renewed
//! certificate (certbot, cert-manager) is taken up without dropping a session. Also the
//! client side parley needs: `parley probe`'s, and a cluster node's to PostgreSQL.

use parking_lot::RwLock;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use tokio_rustls::TlsAcceptor;

/// Why the certificate files cannot be used; the server refuses to start (or, on a
/// reload, keeps the certificate it has) and says which file and why.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A file is missing, unreadable or holds no PEM item of the kind needed.
    #[error("cannot read {what} from {path}: {why}")]
    Unreadable {
        what: &'static str,
        path: PathBuf,
        why: String,
    },
    /// The key is not one rustls can sign with, or does not belong to the certificate.
    #[error("the key in {key} cannot serve the certificate in {cert}: {why}")]
    Mismatch {
        cert: PathBuf,
        key: PathBuf,
        why: String,
    },
}

/// The crypto rustls uses here: *ring*, which builds with a C compiler alone. Built once
/// and shared by every configuration (server, database, probe).
fn provider() -> Arc<CryptoProvider> {
    static RING: std::sync::LazyLock<Arc<CryptoProvider>> =
        std::sync::LazyLock::new(|| Arc::new(rustls::crypto::ring::default_provider()));
    RING.clone()
}

/// Make *ring* the process's default crypto, for libraries that build their own rustls
/// configuration (the Redis client does) rather than being handed one.
pub fn install_default_provider() {
    // Err only when one is installed already, which is as good.
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// The certificate chain and key in `cert` and `key`, checked to belong together.
fn load(cert: &Path, key: &Path) -> Result<CertifiedKey, TlsError> {
    let unreadable = |what, path: &Path, why: String| TlsError::Unreadable {
        what,
        path: path.to_owned(),
        why,
    };
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .map_err(|e| unreadable("a certificate", cert, e.to_string()))?
        .collect::<Result<_, _>>()
        .map_err(|e| unreadable("a certificate", cert, e.to_string()))?;
    if chain.is_empty() {
        return Err(unreadable(
            "a certificate",
            cert,
            "no CERTIFICATE in it".into(),
        ));
    }
    let private = PrivateKeyDer::from_pem_file(key)
        .map_err(|e| unreadable("a private key", key, e.to_string()))?;
    let mismatch = |why: String| TlsError::Mismatch {
        cert: cert.to_owned(),
        key: key.to_owned(),
        why,
    };
    let signing = provider()
        .key_provider
        .load_private_key(private)
        .map_err(|e| mismatch(e.to_string()))?;
    let certified = CertifiedKey::new(chain, signing);
    certified
        .keys_match()
        .map_err(|e| mismatch(e.to_string()))?;
    Ok(certified)
}

/// The certificate files and what was last read from them.
#[derive(Debug)]
struct Files {
    cert: PathBuf,
    key: PathBuf,
    current: RwLock<Arc<CertifiedKey>>,
}

impl ResolvesServerCert for Files {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current.read().clone())
    }
}

/// The server's TLS side: the acceptor every connection goes through, and its files.
#[derive(Clone)]
pub struct Tls {
    acceptor: TlsAcceptor,
    files: Arc<Files>,
}

impl std::fmt::Debug for Tls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tls")
            .field("cert", &self.files.cert)
            .field("key", &self.files.key)
            .finish()
    }
}

impl Tls {
    /// Read `cert` (a PEM chain, leaf first) and `key` (PEM, PKCS#8, PKCS#1 or SEC1).
    pub fn from_files(cert: &Path, key: &Path) -> Result<Tls, TlsError> {
        let files = Arc::new(Files {
            cert: cert.to_owned(),
            key: key.to_owned(),
            current: RwLock::new(Arc::new(load(cert, key)?)),
        });
        let mut config = rustls::ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .expect("the provider supports the default versions")
            .with_no_client_auth()
            .with_cert_resolver(files.clone());
        // WebSocket upgrades are HTTP/1.1 requests.
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Tls {
            acceptor: TlsAcceptor::from(Arc::new(config)),
            files,
        })
    }

    /// Read the files again; new handshakes use what they hold now. On an error the
    /// certificate in use stays.
    pub fn reload(&self) -> Result<(), TlsError> {
        let fresh = load(&self.files.cert, &self.files.key)?;
        *self.files.current.write() = Arc::new(fresh);
        Ok(())
    }

    /// The certificate file (for log lines).
    pub fn cert_path(&self) -> &Path {
        &self.files.cert
    }

    /// The acceptor for one connection's handshake.
    pub fn acceptor(&self) -> &TlsAcceptor {
        &self.acceptor
    }
}

/// Which server certificates a client of parley's accepts.
#[derive(Debug)]
enum Accept {
    /// Exactly this one: `parley probe` asks its own host over loopback, where no
    /// certificate's name would match, and must not accept just any.
    Exactly(CertificateDer<'static>),
    /// Any, with the handshake's signatures still checked: encryption without
    /// authentication, what libpq's `sslmode=require` asks for.
    Any,
}

/// A [`rustls::client::danger::ServerCertVerifier`] for [`Accept`].
#[derive(Debug)]
struct Verifier {
    accept: Accept,
    algorithms: rustls::crypto::WebPkiSupportedAlgorithms,
}

impl rustls::client::danger::ServerCertVerifier for Verifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &rustls::pki_types::ServerName<'_>,
        _ocsp_response: &[u8],
        _now: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        match &self.accept {
            Accept::Exactly(expected) if end_entity.as_ref() != expected.as_ref() => {
                Err(rustls::Error::General(
                    "the server presents another certificate than its file holds".into(),
                ))
            }
            _ => Ok(rustls::client::danger::ServerCertVerified::assertion()),
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

/// A client configuration that accepts server certificates as `accept` says.
fn client_accepting(accept: Accept) -> rustls::ClientConfig {
    let provider = provider();
    let verifier = Verifier {
        accept,
        algorithms: provider.signature_verification_algorithms,
    };
    rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("the provider supports the default versions")
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(verifier))
        .with_no_client_auth()
}

/// A client that encrypts but accepts any server certificate (libpq's `sslmode=require`).
pub fn unauthenticated_client() -> rustls::ClientConfig {
    client_accepting(Accept::Any)
}

/// A client that accepts servers whose certificate chains to one in `roots` (a PEM file)
/// and names the host asked for.
pub fn verifying_client(roots: &Path) -> Result<rustls::ClientConfig, TlsError> {
    let unreadable = |why: String| TlsError::Unreadable {
        what: "root certificates",
        path: roots.to_owned(),
        why,
    };
    let mut store = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(roots).map_err(|e| unreadable(e.to_string()))? {
        let cert = cert.map_err(|e| unreadable(e.to_string()))?;
        store.add(cert).map_err(|e| unreadable(e.to_string()))?;
    }
    if store.is_empty() {
        return Err(unreadable("no CERTIFICATE in it".into()));
    }
    Ok(rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .expect("the provider supports the default versions")
        .with_root_certificates(store)
        .with_no_client_auth())
}

/// A TLS client that accepts only the server certificate in `cert` (the leaf, first).
pub fn pinned_connector(cert: &Path) -> Result<tokio_rustls::TlsConnector, TlsError> {
    let expected = CertificateDer::pem_file_iter(cert)
        .ok()
        .and_then(|mut certs| certs.next())
        .and_then(Result::ok)
        .ok_or_else(|| TlsError::Unreadable {
            what: "a certificate",
            path: cert.to_owned(),
            why: "no CERTIFICATE in it".into(),
        })?;
    let config = client_accepting(Accept::Exactly(expected));
    Ok(tokio_rustls::TlsConnector::from(Arc::new(config)))
}
