//! The one place that owns rustls: the crypto provider, how certificates,
//! keys and CRLs are read, and the client and server configurations.
//!
//! Policy, stated once: TLS 1.3 only, the `ring` provider, ALPN `h2` (and
//! `http/1.1` for the HTTP API), client certificates verified against the
//! configured CA and CRLs, and a client certificate accepted only if it
//! carries exactly one valid `sonde://TENANT/ROLE/NAME` URI SAN. Identity is
//! then read from the certificate, never from anything the peer sends.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use rustls::client::danger::HandshakeSignatureValid;
use rustls::crypto::CryptoProvider;
use rustls::server::WebPkiClientVerifier;
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{
    CertificateError, ClientConfig, DigitallySignedStruct, DistinguishedName, OtherError,
    RootCertStore, ServerConfig, SignatureScheme,
};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, CertificateRevocationListDer, PrivateKeyDer, UnixTime};
use sonde_proto::{Identity, IdentityError};

use crate::files::{self, FileError, Kind};

/// Why TLS material could not be loaded or used. Every variant names the
/// file involved.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error(transparent)]
    File(#[from] FileError),
    #[error("{path}: no PEM {what} found")]
    Empty { path: PathBuf, what: &'static str },
    #[error("{path}: malformed PEM {what}: {reason}")]
    Malformed {
        path: PathBuf,
        what: &'static str,
        reason: String,
    },
    #[error("{path}: certificate does not match private key {key}: {reason}")]
    KeyMismatch {
        path: PathBuf,
        key: PathBuf,
        reason: String,
    },
    #[error("CA {path}: {reason}")]
    Ca { path: PathBuf, reason: String },
    #[error("{path}: {what} {subject} expired at {not_after}; issue a new one")]
    Expired {
        path: PathBuf,
        what: &'static str,
        subject: String,
        not_after: String,
    },
    #[error("{path}: {what} {subject} is not valid before {not_before}; check the clock")]
    NotYetValid {
        path: PathBuf,
        what: &'static str,
        subject: String,
        not_before: String,
    },
    #[error("TLS configuration: {0}")]
    Config(String),
}

impl TlsError {
    /// The file the error is about, if any.
    pub fn path(&self) -> Option<&Path> {
        match self {
            TlsError::File(e) => Some(e.path()),
            TlsError::Empty { path, .. }
            | TlsError::Malformed { path, .. }
            | TlsError::Ca { path, .. }
            | TlsError::Expired { path, .. }
            | TlsError::NotYetValid { path, .. } => Some(path),
            TlsError::KeyMismatch { key, .. } => Some(key),
            TlsError::Config(_) => None,
        }
    }
}

/// The process-wide crypto provider (ring).
pub fn provider() -> Arc<CryptoProvider> {
    static PROVIDER: OnceLock<Arc<CryptoProvider>> = OnceLock::new();
    PROVIDER
        .get_or_init(|| Arc::new(rustls::crypto::ring::default_provider()))
        .clone()
}

fn read(path: &Path) -> Result<Vec<u8>, TlsError> {
    Ok(files::read(path, Kind::Shared, files::PEM_LIMIT)?)
}

/// Every PEM item of type `T` in a file; at least one.
fn load_all<T: PemObject>(path: &Path, what: &'static str) -> Result<Vec<T>, TlsError> {
    let bytes = read(path)?;
    let items = T::pem_slice_iter(&bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsError::Malformed {
            path: path.to_owned(),
            what,
            reason: e.to_string(),
        })?;
    if items.is_empty() {
        return Err(TlsError::Empty {
            path: path.to_owned(),
            what,
        });
    }
    Ok(items)
}

/// All certificates in a PEM file.
pub fn load_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    load_all(path, "certificate")
}

/// The private key in a PEM file, read under the private-key rule of
/// [`files`] (mode 0600/0400, owned by root or the user running this).
pub fn load_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    let bytes = files::read(path, Kind::Private, files::PEM_LIMIT)?;
    PrivateKeyDer::from_pem_slice(&bytes).map_err(|e| match e {
        rustls_pki_types::pem::Error::NoItemsFound => TlsError::Empty {
            path: path.to_owned(),
            what: "private key",
        },
        other => TlsError::Malformed {
            path: path.to_owned(),
            what: "private key",
            reason: other.to_string(),
        },
    })
}

/// All CRLs in a PEM file.
pub fn load_crls(path: &Path) -> Result<Vec<CertificateRevocationListDer<'static>>, TlsError> {
    load_all(path, "CRL")
}

/// When a DER certificate stops being valid (Unix seconds), with its
/// subject; `None` if it cannot be parsed.
pub fn validity(cert: &CertificateDer<'_>) -> Option<Validity> {
    let (_, x509) = x509_parser::parse_x509_certificate(cert.as_ref()).ok()?;
    Some(Validity {
        subject: x509.subject().to_string(),
        not_before: x509.validity().not_before.timestamp(),
        not_after: x509.validity().not_after.timestamp(),
    })
}

/// A certificate's validity window.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Validity {
    /// The subject's distinguished name, as `CN=…`.
    pub subject: String,
    /// Unix seconds.
    pub not_before: i64,
    /// Unix seconds.
    pub not_after: i64,
}

/// Refuses a certificate of our own (`what`: "certificate", "CA
/// certificate") that is expired or not yet valid at `now` (Unix seconds),
/// so a stale file fails at start with its path and date instead of as an
/// anonymous handshake failure on the other side.
pub fn check_valid(
    path: &Path,
    what: &'static str,
    cert: &CertificateDer<'_>,
    now: i64,
) -> Result<(), TlsError> {
    let Some(v) = validity(cert) else {
        return Err(TlsError::Malformed {
            path: path.to_owned(),
            what,
            reason: "not an X.509 certificate".into(),
        });
    };
    if now > v.not_after {
        return Err(TlsError::Expired {
            path: path.to_owned(),
            what,
            subject: v.subject,
            not_after: crate::clock::rfc3339_seconds(v.not_after),
        });
    }
    if now < v.not_before {
        return Err(TlsError::NotYetValid {
            path: path.to_owned(),
            what,
            subject: v.subject,
            not_before: crate::clock::rfc3339_seconds(v.not_before),
        });
    }
    Ok(())
}

fn unix_now() -> i64 {
    i64::try_from(UnixTime::now().as_secs()).unwrap_or(i64::MAX)
}

fn roots(ca: &Path) -> Result<Arc<RootCertStore>, TlsError> {
    let mut store = RootCertStore::empty();
    let now = unix_now();
    for cert in load_certs(ca)? {
        check_valid(ca, "CA certificate", &cert, now)?;
        store.add(cert).map_err(|e| TlsError::Ca {
            path: ca.to_owned(),
            reason: e.to_string(),
        })?;
    }
    Ok(Arc::new(store))
}

/// Paths of one party's TLS material; also the `[tls]` table of a config
/// file that needs nothing more.
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct TlsFiles {
    /// CA certificate(s) that issued the peer's certificate.
    pub ca: PathBuf,
    /// Own certificate chain.
    pub cert: PathBuf,
    /// Own private key (mode 0600 or stricter).
    pub key: PathBuf,
}

/// Own chain (its first certificate checked for validity now) and key.
fn identity_material(
    files: &TlsFiles,
) -> Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>), TlsError> {
    let chain = load_certs(&files.cert)?;
    check_valid(&files.cert, "certificate", &chain[0], unix_now())?;
    Ok((chain, load_key(&files.key)?))
}

fn key_mismatch(files: &TlsFiles) -> impl FnOnce(rustls::Error) -> TlsError + '_ {
    |e| TlsError::KeyMismatch {
        path: files.cert.clone(),
        key: files.key.clone(),
        reason: e.to_string(),
    }
}

/// Client configuration: TLS 1.3, trusting `files.ca`, presenting
/// `files.cert`. ALPN `h2` for gRPC.
pub fn client_config(files: &TlsFiles) -> Result<ClientConfig, TlsError> {
    let roots = roots(&files.ca)?;
    let (chain, key) = identity_material(files)?;
    let mut config = ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| TlsError::Config(e.to_string()))?
        .with_root_certificates(roots)
        .with_client_auth_cert(chain, key)
        .map_err(key_mismatch(files))?;
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(config)
}

/// Client configuration for public HTTPS services (public-IP sources,
/// later webhooks): the Mozilla root set compiled in (`webpki-roots`, so a
/// host without `ca-certificates` works too), TLS 1.2 or 1.3 as the far
/// side offers, ALPN `h2` and `http/1.1`, no client certificate.
pub fn public_client_config() -> Result<ClientConfig, TlsError> {
    let roots = RootCertStore {
        roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
    };
    let mut config = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Config(e.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(config)
}

/// The server side: the rustls configuration and the client verifier it
/// was built with, so the listener can ask again, after a reload, whether
/// a connection accepted earlier would still be accepted (a certificate
/// revoked by the new CRL, or signed by a CA no longer trusted).
#[derive(Clone)]
pub struct ServerTls {
    pub config: Arc<ServerConfig>,
    verifier: Arc<dyn ClientCertVerifier>,
}

impl fmt::Debug for ServerTls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ServerTls")
    }
}

impl ServerTls {
    /// Verifies a client chain (end entity first) as a new handshake would
    /// now.
    pub fn recheck(&self, chain: &[CertificateDer<'_>]) -> Result<(), rustls::Error> {
        let Some((end_entity, intermediates)) = chain.split_first() else {
            return Err(rustls::Error::NoCertificatesPresented);
        };
        self.verifier
            .verify_client_cert(end_entity, intermediates, UnixTime::now())
            .map(|_| ())
    }
}

/// Server configuration: TLS 1.3, client certificate required and verified
/// against `files.ca` and `crls`, plus the sonde SAN rule. Own certificate
/// and CA must be valid now.
pub fn server_config(files: &TlsFiles, crl_files: &[PathBuf]) -> Result<ServerTls, TlsError> {
    let roots = roots(&files.ca)?;
    let mut crls = Vec::new();
    for path in crl_files {
        crls.extend(load_crls(path)?);
    }
    let inner = WebPkiClientVerifier::builder_with_provider(roots, provider())
        .with_crls(crls)
        .only_check_end_entity_revocation()
        .build()
        .map_err(|e| TlsError::Config(format!("client verifier: {e}")))?;
    let verifier: Arc<dyn ClientCertVerifier> = Arc::new(SondeClientVerifier { inner });
    let (chain, key) = identity_material(files)?;
    let mut config = ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| TlsError::Config(e.to_string()))?
        .with_client_cert_verifier(verifier.clone())
        .with_single_cert(chain, key)
        .map_err(key_mismatch(files))?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(ServerTls {
        config: Arc::new(config),
        verifier,
    })
}

/// Server configuration for a listener that asks no client certificate
/// (the collector's ping URLs, used by `curl` in cron jobs and by
/// appliances): the same certificate and key as the mTLS listener, TLS
/// 1.2 or 1.3 as the client offers, ALPN `h2` and `http/1.1`.
pub fn public_server_config(files: &TlsFiles) -> Result<Arc<ServerConfig>, TlsError> {
    let (chain, key) = identity_material(files)?;
    let mut config = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Config(e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .map_err(key_mismatch(files))?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// The sonde identity in a DER certificate's URI SANs.
pub fn identity_of(cert: &CertificateDer<'_>) -> Result<Identity, IdentityError> {
    let Ok((_, x509)) = x509_parser::parse_x509_certificate(cert.as_ref()) else {
        return Err(IdentityError::Missing);
    };
    let Ok(Some(san)) = x509.subject_alternative_name() else {
        return Err(IdentityError::Missing);
    };
    Identity::from_uri_sans(san.value.general_names.iter().filter_map(|n| match n {
        x509_parser::extensions::GeneralName::URI(u) => Some(*u),
        _ => None,
    }))
}

/// Wraps webpki's verifier and additionally requires a valid sonde SAN, so a
/// certificate without one is refused during the handshake, not later.
struct SondeClientVerifier {
    inner: Arc<dyn ClientCertVerifier>,
}

impl fmt::Debug for SondeClientVerifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SondeClientVerifier")
    }
}

impl ClientCertVerifier for SondeClientVerifier {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        true
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        self.inner.root_hint_subjects()
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        // Whose certificate this was, for the log line of a refusal.
        let _ = PRESENTED.try_with(|slot| {
            *slot
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(describe(end_entity));
        });
        let verified = self
            .inner
            .verify_client_cert(end_entity, intermediates, now)?;
        identity_of(end_entity).map_err(|e| {
            rustls::Error::InvalidCertificate(CertificateError::Other(OtherError(Arc::new(e))))
        })?;
        Ok(verified)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

tokio::task_local! {
    /// Set by [`presented_during`]: the client certificate the verifier saw.
    static PRESENTED: Arc<std::sync::Mutex<Option<String>>>;
}

/// Runs a server handshake `fut` and also returns which client
/// certificate it presented (its `sonde://` identity, else its subject and
/// serial), so a refusal can name who was refused.
pub async fn presented_during<F: std::future::Future>(fut: F) -> (F::Output, Option<String>) {
    let slot = Arc::new(std::sync::Mutex::new(None));
    let out = PRESENTED.scope(slot.clone(), fut).await;
    let who = slot
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .take();
    (out, who)
}

/// A certificate's serial number in hex (`""` if it cannot be parsed).
pub fn serial_of(cert: &CertificateDer<'_>) -> String {
    x509_parser::parse_x509_certificate(cert.as_ref())
        .map(|(_, x)| x.raw_serial_as_string())
        .unwrap_or_default()
}

/// A client certificate in a log line.
fn describe(cert: &CertificateDer<'_>) -> String {
    if let Ok(id) = identity_of(cert) {
        return id.to_uri();
    }
    match x509_parser::parse_x509_certificate(cert.as_ref()) {
        Ok((_, x)) => format!(
            "subject {} serial {}",
            x.subject(),
            x.raw_serial_as_string()
        ),
        Err(_) => "an unparsable certificate".to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sonde_certs::Pki;
    use sonde_proto::Role;

    #[test]
    fn loads_dev_pki_and_builds_configs() {
        let dir = tempfile::tempdir().unwrap();
        let pki = Pki::init(dir.path(), &[]).unwrap();
        pki.issue(&Identity::new("t", Role::Agent, "a").unwrap(), None, 1)
            .unwrap();
        let d = dir.path();
        let server = TlsFiles {
            ca: d.join("ca.pem"),
            cert: d.join("collector.pem"),
            key: d.join("collector.key"),
        };
        server_config(&server, &[d.join("crl.pem")]).unwrap();
        let client = TlsFiles {
            ca: d.join("ca.pem"),
            cert: d.join("a.pem"),
            key: d.join("a.key"),
        };
        client_config(&client).unwrap();
        let cert = &load_certs(&client.cert).unwrap()[0];
        assert_eq!(identity_of(cert).unwrap().to_uri(), "sonde://t/agent/a");

        // A key readable by others is refused, naming the file.
        std::fs::set_permissions(
            &client.key,
            <std::fs::Permissions as std::os::unix::fs::PermissionsExt>::from_mode(0o644),
        )
        .unwrap();
        let err = client_config(&client).unwrap_err().to_string();
        assert!(err.contains("a.key") && err.contains("chmod 600"), "{err}");
        // A certificate paired with the wrong key is refused.
        let wrong = TlsFiles {
            key: d.join("collector.key"),
            ..client
        };
        let err = client_config(&wrong).unwrap_err().to_string();
        assert!(err.contains("does not match"), "{err}");
        // Garbage is named.
        std::fs::write(d.join("junk.pem"), "hello").unwrap();
        let err = load_certs(&d.join("junk.pem")).unwrap_err().to_string();
        assert!(
            err.contains("junk.pem") && err.contains("no PEM certificate"),
            "{err}"
        );
    }
}
