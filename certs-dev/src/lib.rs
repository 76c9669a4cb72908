//! Development PKI for sonde, built on `rcgen`.
//!
//! Tests, the demo and operators trying sonde out need a CA, a CRL, a
//! collector server certificate and client certificates carrying
//! `sonde://TENANT/ROLE/NAME` URI SANs. This crate makes them at run time so
//! no private key is ever committed.
//!
//! Two layers:
//! - [`Ca`] issues certificates and CRLs in memory (what tests use, including
//!   deliberately bad certificates: expired, foreign CA, no sonde SAN);
//! - [`Pki`] keeps a CA in a directory (`init`, `issue`, `revoke`), which is
//!   what the `sonde-certs` binary drives.
//!
//! Directory layout written by [`Pki`]:
//!
//! | file | content |
//! | --- | --- |
//! | `ca.pem`, `ca.key` | CA certificate and its key (0600) |
//! | `crl.pem` | current CRL signed by the CA |
//! | `revoked.txt` | one line per revocation: `SERIAL-HEX<TAB>UNIX-SECONDS<TAB>NAME` |
//! | `collector.pem`, `collector.key` | collector server certificate |
//! | `NAME.pem`, `NAME.key` | client certificates issued with `issue` |
//! | `NAME.p12` | the same certificate, its key and the CA as a PKCS#12 bundle for browsers (0600, password printed once) |

pub mod cli;

use std::fmt::Write as _;
use std::fs;
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, CertificateRevocationListParams, DnType,
    ExtendedKeyUsagePurpose, IsCa, Issuer, KeyIdMethod, KeyPair, KeyUsagePurpose,
    RevokedCertParams, SanType, SerialNumber,
};
use sonde_proto::Identity;
use time::{Duration, OffsetDateTime};

/// Default lifetime of issued leaf certificates.
pub const DEFAULT_LEAF_DAYS: i64 = 365;
/// Lifetime of a dev CA.
pub const CA_DAYS: i64 = 3650;
/// How long a CRL stays valid before it must be re-issued.
pub const CRL_DAYS: i64 = 365;

/// Everything that can go wrong making or storing certificates.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("certificate generation failed: {0}")]
    Rcgen(#[from] rcgen::Error),
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: {reason}")]
    Invalid { path: PathBuf, reason: String },
    #[error("{0} already exists; refusing to overwrite it")]
    Exists(PathBuf),
    /// A name (identity component or file name) outside the alphabet; the
    /// message names which.
    #[error(transparent)]
    Identity(#[from] sonde_proto::IdentityError),
    #[error("invalid subject alternative name {0:?}")]
    BadSan(String),
    #[error("cannot build the PKCS#12 bundle: {0}")]
    Pkcs12(String),
    #[error("--days {days}: {reason}")]
    Lifetime { days: i64, reason: String },
}

type Result<T, E = Error> = std::result::Result<T, E>;

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> Error + '_ {
    move |source| Error::Io {
        path: path.to_owned(),
        source,
    }
}

/// A certificate and its private key, both PEM.
#[derive(Clone)]
pub struct Issued {
    pub cert_pem: String,
    pub key_pem: String,
    /// The serial number's big-endian bytes (what a CRL lists).
    pub serial: Vec<u8>,
}

impl std::fmt::Debug for Issued {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print the key.
        f.debug_struct("Issued")
            .field("serial", &hex(&self.serial))
            .finish_non_exhaustive()
    }
}

impl Issued {
    /// Writes `DIR/STEM.pem` and `DIR/STEM.key` (the key 0600).
    pub fn write(&self, dir: &Path, stem: &str) -> Result<(PathBuf, PathBuf)> {
        let cert = dir.join(format!("{stem}.pem"));
        let key = dir.join(format!("{stem}.key"));
        write_atomic(&cert, self.cert_pem.as_bytes(), 0o644)?;
        write_atomic(&key, self.key_pem.as_bytes(), 0o600)?;
        Ok((cert, key))
    }
}

/// What a leaf certificate should contain. The defaults make a valid client
/// certificate; tests change fields to make invalid ones on purpose.
#[derive(Debug, Clone)]
pub struct LeafSpec {
    pub common_name: String,
    /// URI SANs (`sonde://…` for clients).
    pub uris: Vec<String>,
    /// DNS names and IP addresses (server certificates).
    pub hosts: Vec<String>,
    pub not_before: OffsetDateTime,
    pub not_after: OffsetDateTime,
    pub server: bool,
}

impl LeafSpec {
    /// A client certificate for `identity`, valid from now for `days`.
    pub fn client(identity: &Identity, days: i64) -> Self {
        let now = OffsetDateTime::now_utc();
        Self {
            common_name: identity.to_uri(),
            uris: vec![identity.to_uri()],
            hosts: Vec::new(),
            not_before: now - Duration::minutes(5),
            not_after: now + Duration::days(days),
            server: false,
        }
    }

    /// A server certificate for the given DNS names / IP addresses.
    pub fn server(hosts: &[String], days: i64) -> Self {
        let now = OffsetDateTime::now_utc();
        Self {
            common_name: hosts.first().cloned().unwrap_or_else(|| "sonde".into()),
            uris: Vec::new(),
            hosts: hosts.to_vec(),
            not_before: now - Duration::minutes(5),
            not_after: now + Duration::days(days),
            server: true,
        }
    }
}

/// A certificate authority held in memory.
pub struct Ca {
    cert_pem: String,
    issuer: Issuer<'static, KeyPair>,
}

impl std::fmt::Debug for Ca {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ca").finish_non_exhaustive()
    }
}

fn random_serial() -> SerialNumber {
    let mut bytes: [u8; 16] = rand::random();
    bytes[0] &= 0x7f; // positive
    bytes[0] |= 0x01; // no leading zero byte, so the DER encoding is stable
    SerialNumber::from_slice(&bytes)
}

fn ca_params(common_name: &str) -> CertificateParams {
    let now = OffsetDateTime::now_utc();
    let mut params = CertificateParams::default();
    params.distinguished_name = rcgen::DistinguishedName::new();
    params
        .distinguished_name
        .push(DnType::CommonName, common_name);
    params
        .distinguished_name
        .push(DnType::OrganizationName, "sonde dev PKI");
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    params.not_before = now - Duration::minutes(5);
    params.not_after = now + Duration::days(CA_DAYS);
    params.serial_number = Some(random_serial());
    params.key_identifier_method = KeyIdMethod::Sha256;
    params
}

impl Ca {
    /// A fresh CA with a new P-256 key.
    pub fn generate(common_name: &str) -> Result<Self> {
        Self::self_signed(ca_params(common_name))
    }

    /// A CA valid only from `not_before` to `not_after` (for tests of an
    /// expired or not yet valid CA).
    pub fn generate_valid(
        common_name: &str,
        not_before: OffsetDateTime,
        not_after: OffsetDateTime,
    ) -> Result<Self> {
        let mut params = ca_params(common_name);
        params.not_before = not_before;
        params.not_after = not_after;
        Self::self_signed(params)
    }

    fn self_signed(params: CertificateParams) -> Result<Self> {
        let key = KeyPair::generate()?;
        let cert = params.self_signed(&key)?;
        Ok(Self {
            cert_pem: cert.pem(),
            issuer: Issuer::new(params, key),
        })
    }

    /// A CA from its certificate and key PEM.
    pub fn from_pem(cert_pem: &str, key_pem: &str) -> Result<Self> {
        let key = KeyPair::from_pem(key_pem)?;
        let issuer = Issuer::from_ca_cert_pem(cert_pem, key)?;
        Ok(Self {
            cert_pem: cert_pem.to_owned(),
            issuer,
        })
    }

    /// The CA certificate, PEM.
    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    /// The CA key, PEM. Handle with care.
    pub fn key_pem(&self) -> String {
        self.issuer.key().serialize_pem()
    }

    /// Issues a leaf certificate with a new key.
    pub fn issue(&self, spec: &LeafSpec) -> Result<Issued> {
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::default();
        params.distinguished_name = rcgen::DistinguishedName::new();
        params
            .distinguished_name
            .push(DnType::CommonName, spec.common_name.as_str());
        params.not_before = spec.not_before;
        params.not_after = spec.not_after;
        let serial = random_serial();
        params.serial_number = Some(serial.clone());
        params.use_authority_key_identifier_extension = true;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![if spec.server {
            ExtendedKeyUsagePurpose::ServerAuth
        } else {
            ExtendedKeyUsagePurpose::ClientAuth
        }];
        for uri in &spec.uris {
            let ia5 = uri
                .as_str()
                .try_into()
                .map_err(|_| Error::BadSan(uri.clone()))?;
            params.subject_alt_names.push(SanType::URI(ia5));
        }
        for host in &spec.hosts {
            let san = match host.parse() {
                Ok(ip) => SanType::IpAddress(ip),
                Err(_) => SanType::DnsName(
                    host.as_str()
                        .try_into()
                        .map_err(|_| Error::BadSan(host.clone()))?,
                ),
            };
            params.subject_alt_names.push(san);
        }
        let cert = params.signed_by(&key, &self.issuer)?;
        Ok(Issued {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
            serial: serial.to_bytes(),
        })
    }

    /// A client certificate for `identity`, valid for `days`.
    pub fn issue_client(&self, identity: &Identity, days: i64) -> Result<Issued> {
        self.issue(&LeafSpec::client(identity, days))
    }

    /// A server certificate for `localhost`, `127.0.0.1`, `::1` and `extra`.
    pub fn issue_server(&self, extra: &[String], days: i64) -> Result<Issued> {
        let mut hosts: Vec<String> = vec!["localhost".into(), "127.0.0.1".into(), "::1".into()];
        hosts.extend(extra.iter().cloned());
        self.issue(&LeafSpec::server(&hosts, days))
    }

    /// A CRL listing `revoked` serials, PEM.
    pub fn crl(&self, revoked: &[Revocation], crl_number: u64) -> Result<String> {
        let now = OffsetDateTime::now_utc();
        let params = CertificateRevocationListParams {
            this_update: now - Duration::minutes(5),
            next_update: now + Duration::days(CRL_DAYS),
            crl_number: SerialNumber::from(crl_number),
            issuing_distribution_point: None,
            revoked_certs: revoked
                .iter()
                .map(|r| RevokedCertParams {
                    serial_number: SerialNumber::from_slice(&r.serial),
                    revocation_time: r.at,
                    reason_code: None,
                    invalidity_date: None,
                })
                .collect(),
            key_identifier_method: KeyIdMethod::Sha256,
        };
        Ok(params.signed_by(&self.issuer)?.pem()?)
    }
}

/// One revoked certificate.
#[derive(Debug, Clone)]
pub struct Revocation {
    pub serial: Vec<u8>,
    pub at: OffsetDateTime,
    pub name: String,
}

/// Lower-case hex of bytes.
pub fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    bytes.iter().fold(String::new(), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

fn unhex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

/// Writes `bytes` to `path` through a temporary file and rename, with the
/// given mode set before any byte is written (keys are never world-readable,
/// not even for an instant).
pub fn write_atomic(path: &Path, bytes: &[u8], mode: u32) -> Result<()> {
    let tmp = path.with_extension("tmp");
    let _ = fs::remove_file(&tmp);
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(&tmp)
        .map_err(io_err(&tmp))?;
    f.write_all(bytes).map_err(io_err(&tmp))?;
    f.sync_all().map_err(io_err(&tmp))?;
    // The umask may have narrowed the mode; never widened it. Set it exactly.
    fs::set_permissions(&tmp, fs::Permissions::from_mode(mode)).map_err(io_err(&tmp))?;
    fs::rename(&tmp, path).map_err(io_err(path))?;
    Ok(())
}

/// The DER contents of the first PEM block of `pem`.
fn pem_der(pem: &str, what: &str) -> Result<Vec<u8>> {
    x509_parser::pem::Pem::iter_from_buffer(pem.as_bytes())
        .next()
        .and_then(std::result::Result::ok)
        .map(|p| p.contents)
        .ok_or_else(|| Error::Pkcs12(format!("the {what} is not PEM")))
}

/// A PKCS#12 bundle of a client certificate, its key and the CA
/// certificate, for importing into a browser: PBES2 with AES-256-CBC and
/// PBKDF2-HMAC-SHA256 for the key and certificates, an HMAC-SHA256 MAC —
/// what OpenSSL 3, NSS (Firefox, Chromium on Linux) and macOS read.
pub fn pkcs12(
    cert_pem: &str,
    key_pem: &str,
    ca_pem: &str,
    friendly_name: &str,
    password: &str,
) -> Result<Vec<u8>> {
    use p12_keystore::{Certificate, KeyStore, KeyStoreEntry, PrivateKey, PrivateKeyChain};
    let p12 = |e: p12_keystore::error::Error| Error::Pkcs12(e.to_string());
    let leaf = Certificate::from_der(&pem_der(cert_pem, "certificate")?).map_err(p12)?;
    let ca = Certificate::from_der(&pem_der(ca_pem, "CA certificate")?).map_err(p12)?;
    let key = PrivateKey::from_der(&pem_der(key_pem, "private key")?).map_err(p12)?;
    let mut store = KeyStore::new();
    let chain = PrivateKeyChain::new(friendly_name, key, [leaf, ca]);
    store.add_entry(friendly_name, KeyStoreEntry::PrivateKeyChain(chain));
    store.writer(password).write().map_err(p12)
}

/// A one-time password for a PKCS#12 bundle: 20 characters of an
/// unambiguous alphabet (about 100 bits) in dash-separated groups of five.
pub fn bundle_password() -> String {
    const ALPHABET: &[u8] = b"abcdefghijkmnpqrstuvwxyz23456789";
    let bytes: [u8; 20] = rand::random();
    let mut out = String::with_capacity(23);
    for (i, b) in bytes.iter().enumerate() {
        if i > 0 && i % 5 == 0 {
            out.push('-');
        }
        out.push(char::from(ALPHABET[usize::from(*b) % ALPHABET.len()]));
    }
    out
}

/// What [`Pki::issue`] wrote.
pub struct Written {
    pub cert: PathBuf,
    pub key: PathBuf,
    /// The PKCS#12 bundle (certificate, key, CA), 0600.
    pub p12: PathBuf,
    /// Its password: shown to the operator once, stored nowhere.
    pub password: String,
}

impl std::fmt::Debug for Written {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Written")
            .field("cert", &self.cert)
            .field("key", &self.key)
            .field("p12", &self.p12)
            .finish_non_exhaustive()
    }
}

/// A CA kept in a directory (see the module docs for the layout).
#[derive(Debug)]
pub struct Pki {
    dir: PathBuf,
    ca: Ca,
}

impl Pki {
    /// Creates a new PKI in `dir`: CA, empty CRL and a collector server
    /// certificate for `localhost`, `127.0.0.1`, `::1` plus `extra_sans`.
    /// Refuses to overwrite an existing CA.
    pub fn init(dir: &Path, extra_sans: &[String]) -> Result<Self> {
        fs::create_dir_all(dir).map_err(io_err(dir))?;
        let ca_path = dir.join("ca.pem");
        if ca_path.exists() {
            return Err(Error::Exists(ca_path));
        }
        let ca = Ca::generate("sonde dev CA")?;
        write_atomic(&dir.join("ca.key"), ca.key_pem().as_bytes(), 0o600)?;
        write_atomic(&ca_path, ca.cert_pem().as_bytes(), 0o644)?;
        let pki = Self {
            dir: dir.to_owned(),
            ca,
        };
        pki.write_crl(&[])?;
        pki.ca
            .issue_server(extra_sans, DEFAULT_LEAF_DAYS)?
            .write(dir, "collector")?;
        Ok(pki)
    }

    /// Opens an existing PKI directory.
    pub fn open(dir: &Path) -> Result<Self> {
        let cert_path = dir.join("ca.pem");
        let key_path = dir.join("ca.key");
        let cert = fs::read_to_string(&cert_path).map_err(io_err(&cert_path))?;
        let key = fs::read_to_string(&key_path).map_err(io_err(&key_path))?;
        let ca = Ca::from_pem(&cert, &key).map_err(|e| Error::Invalid {
            path: key_path.clone(),
            reason: e.to_string(),
        })?;
        Ok(Self {
            dir: dir.to_owned(),
            ca,
        })
    }

    /// The in-memory CA.
    pub fn ca(&self) -> &Ca {
        &self.ca
    }

    /// The directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Issues a client certificate for `identity` into `DIR/STEM.{pem,key}`
    /// and the PKCS#12 bundle `DIR/STEM.p12` (`STEM` defaults to the
    /// identity's name). Refuses to overwrite.
    pub fn issue(&self, identity: &Identity, stem: Option<&str>, days: i64) -> Result<Written> {
        let stem = stem.unwrap_or(&identity.name);
        sonde_proto::identity::validate_component("file name", stem)?;
        self.check_lifetime(days)?;
        let cert_path = self.dir.join(format!("{stem}.pem"));
        if cert_path.exists() || matches!(stem, "ca" | "crl" | "collector") {
            return Err(Error::Exists(cert_path));
        }
        let issued = self.ca.issue_client(identity, days)?;
        let password = bundle_password();
        let bundle = pkcs12(
            &issued.cert_pem,
            &issued.key_pem,
            self.ca.cert_pem(),
            &identity.to_string(),
            &password,
        )?;
        let p12 = self.dir.join(format!("{stem}.p12"));
        write_atomic(&p12, &bundle, 0o600)?;
        let (cert, key) = issued.write(&self.dir, stem)?;
        Ok(Written {
            cert,
            key,
            p12,
            password,
        })
    }

    /// A leaf lifetime must be at least a day and end before the CA does
    /// (a certificate valid past its CA is never valid that long).
    fn check_lifetime(&self, days: i64) -> Result<()> {
        let bad = |reason: String| Err(Error::Lifetime { days, reason });
        if days < 1 {
            return bad("a certificate must be valid for at least 1 day".into());
        }
        let ca_path = self.dir.join("ca.pem");
        let ca_end = not_after(self.ca.cert_pem()).map_err(|reason| Error::Invalid {
            path: ca_path.clone(),
            reason,
        })?;
        let left = (ca_end - OffsetDateTime::now_utc()).whole_days();
        if days > left {
            return bad(format!(
                "past the CA's end ({ca_end}, {left} days from now); give at most --days {left}"
            ));
        }
        Ok(())
    }

    /// Revokes the certificate `DIR/STEM.pem` and rewrites the CRL.
    /// Revoking an already revoked certificate is a no-op; `STEM` is a
    /// file name in `DIR`, never a path.
    pub fn revoke(&self, stem: &str) -> Result<Vec<u8>> {
        sonde_proto::identity::validate_component("file name", stem)?;
        let cert_path = self.dir.join(format!("{stem}.pem"));
        let pem = fs::read_to_string(&cert_path).map_err(io_err(&cert_path))?;
        let serial = serial_of(&pem).map_err(|reason| Error::Invalid {
            path: cert_path.clone(),
            reason,
        })?;
        let mut revoked = self.revoked()?;
        if !revoked.iter().any(|r| r.serial == serial) {
            revoked.push(Revocation {
                serial: serial.clone(),
                at: OffsetDateTime::now_utc(),
                name: stem.to_owned(),
            });
            let mut lines = String::new();
            for r in &revoked {
                let _ = writeln!(
                    lines,
                    "{}\t{}\t{}",
                    hex(&r.serial),
                    r.at.unix_timestamp(),
                    r.name
                );
            }
            write_atomic(&self.dir.join("revoked.txt"), lines.as_bytes(), 0o644)?;
        }
        self.write_crl(&revoked)?;
        Ok(serial)
    }

    /// The revocations recorded in `revoked.txt`.
    pub fn revoked(&self) -> Result<Vec<Revocation>> {
        let path = self.dir.join("revoked.txt");
        let text = match fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(io_err(&path)(e)),
        };
        text.lines()
            .enumerate()
            .filter(|(_, l)| !l.trim().is_empty())
            .map(|(i, line)| {
                let bad = || Error::Invalid {
                    path: path.clone(),
                    reason: format!("line {}: expected SERIAL<TAB>UNIX-SECONDS<TAB>NAME", i + 1),
                };
                let mut f = line.split('\t');
                let serial = f.next().and_then(unhex).ok_or_else(bad)?;
                let at = f
                    .next()
                    .and_then(|s| s.parse::<i64>().ok())
                    .and_then(|s| OffsetDateTime::from_unix_timestamp(s).ok())
                    .ok_or_else(bad)?;
                let name = f.next().ok_or_else(bad)?.to_owned();
                Ok(Revocation { serial, at, name })
            })
            .collect()
    }

    fn write_crl(&self, revoked: &[Revocation]) -> Result<()> {
        // CRL numbers must increase; wall-clock nanoseconds do across calls.
        let number = u64::try_from(OffsetDateTime::now_utc().unix_timestamp_nanos()).unwrap_or(1);
        let pem = self.ca.crl(revoked, number)?;
        write_atomic(&self.dir.join("crl.pem"), pem.as_bytes(), 0o644)
    }
}

/// The serial number bytes of a PEM certificate.
/// When a PEM certificate stops being valid.
pub fn not_after(cert_pem: &str) -> Result<OffsetDateTime, String> {
    let (_, pem) = x509_parser::pem::parse_x509_pem(cert_pem.as_bytes())
        .map_err(|e| format!("not a PEM certificate: {e}"))?;
    let cert = pem
        .parse_x509()
        .map_err(|e| format!("not an X.509 certificate: {e}"))?;
    OffsetDateTime::from_unix_timestamp(cert.validity().not_after.timestamp())
        .map_err(|e| format!("validity end out of range: {e}"))
}

pub fn serial_of(cert_pem: &str) -> Result<Vec<u8>, String> {
    let (_, pem) = x509_parser::pem::parse_x509_pem(cert_pem.as_bytes())
        .map_err(|e| format!("not a PEM certificate: {e}"))?;
    let cert = pem
        .parse_x509()
        .map_err(|e| format!("not an X.509 certificate: {e}"))?;
    Ok(cert.tbs_certificate.raw_serial().to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;
    use sonde_proto::Role;

    #[test]
    fn lifetimes_and_names_are_checked() {
        let dir = tempfile::tempdir().unwrap();
        let pki = Pki::init(dir.path(), &[]).unwrap();
        let id = Identity::new("acme", Role::Agent, "web1").unwrap();
        for days in [0, -5] {
            let e = pki.issue(&id, None, days).unwrap_err().to_string();
            assert!(e.contains("at least 1 day"), "{e}");
        }
        let e = pki.issue(&id, None, 1_000_000).unwrap_err().to_string();
        assert!(
            e.contains("past the CA's end") && e.contains("at most --days 3649"),
            "{e}"
        );
        assert!(!dir.path().join("web1.pem").exists(), "nothing written");
        pki.issue(&id, None, 3649).unwrap();
        for stem in ["../../etc/passwd", "a/b", ""] {
            let e = pki.revoke(stem).unwrap_err();
            assert!(matches!(e, Error::Identity(_)), "{stem}: {e}");
        }
    }

    #[test]
    fn init_issue_revoke() {
        let dir = tempfile::tempdir().unwrap();
        let pki = Pki::init(dir.path(), &["collector.example".into()]).unwrap();
        for key in ["ca.key", "collector.key"] {
            let mode = fs::metadata(dir.path().join(key))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600, "{key}");
        }
        assert!(matches!(Pki::init(dir.path(), &[]), Err(Error::Exists(_))));
        let id = Identity::new("acme", Role::Agent, "web1").unwrap();
        let w = pki.issue(&id, None, 30).unwrap();
        for secret in [&w.key, &w.p12] {
            let mode = fs::metadata(secret).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600, "{}", secret.display());
        }
        assert!(!format!("{w:?}").contains(&w.password));
        let pem = fs::read_to_string(&w.cert).unwrap();
        // The bundle opens with its password (and only with it) and holds
        // this certificate, the CA and a key.
        let bundle = fs::read(&w.p12).unwrap();
        let policy = p12_keystore::Pkcs12ImportPolicy::Strict;
        assert!(p12_keystore::KeyStore::from_pkcs12(&bundle, "wrong", policy).is_err());
        let store = p12_keystore::KeyStore::from_pkcs12(&bundle, &w.password, policy).unwrap();
        let (alias, chain) = store.private_key_chain().unwrap();
        assert_eq!(alias, "sonde://acme/agent/web1");
        let ders: Vec<&[u8]> = chain
            .certs()
            .iter()
            .map(p12_keystore::Certificate::as_der)
            .collect();
        assert_eq!(
            ders,
            [
                pem_der(&pem, "c").unwrap().as_slice(),
                &pem_der(pki.ca().cert_pem(), "ca").unwrap()
            ]
        );
        let key_der = pem_der(&fs::read_to_string(&w.key).unwrap(), "k").unwrap();
        assert_eq!(chain.key().as_der(), key_der.as_slice());
        let (_, p) = x509_parser::pem::parse_x509_pem(pem.as_bytes()).unwrap();
        let x = p.parse_x509().unwrap();
        let san = x.subject_alternative_name().unwrap().unwrap();
        assert!(format!("{:?}", san.value).contains("sonde://acme/agent/web1"));
        assert!(pki.issue(&id, None, 30).is_err(), "no overwrite");

        // Reopen from disk and revoke: the serial lands in revoked.txt and CRL.
        let pki = Pki::open(dir.path()).unwrap();
        let serial = pki.revoke("web1").unwrap();
        pki.revoke("web1").unwrap();
        let revoked = pki.revoked().unwrap();
        assert_eq!(revoked.len(), 1);
        assert_eq!(revoked[0].serial, serial);
        let crl = fs::read(dir.path().join("crl.pem")).unwrap();
        let (_, p) = x509_parser::pem::parse_x509_pem(&crl).unwrap();
        let (_, crl) = x509_parser::parse_x509_crl(&p.contents).unwrap();
        let serials: Vec<Vec<u8>> = crl
            .iter_revoked_certificates()
            .map(|r| r.raw_serial().to_vec())
            .collect();
        assert_eq!(serials, vec![serial]);
    }

    #[test]
    fn debug_never_prints_keys() {
        let ca = Ca::generate("t").unwrap();
        let issued = ca
            .issue_client(&Identity::new("t", Role::Viewer, "v").unwrap(), 1)
            .unwrap();
        assert!(!format!("{issued:?}").contains("PRIVATE"));
        assert!(!format!("{ca:?}").contains("PRIVATE"));
    }
}
