//! Reading the files a config names (certificates, keys, CRLs, secrets,
//! the config itself) so that a wrong path cannot hurt and a refusal says
//! how to fix it.
//!
//! One rule for every such file: it is opened without blocking (a FIFO
//! with no writer, a terminal or a device is refused by its type instead of
//! hanging or streaming forever), it must be a regular file, and it is read
//! up to a cap (`ca = "/dev/zero"` once grew `check-config` to 8.9 GB). A
//! private key also must not be readable by group or others and must be
//! owned by root, by `sonde` or by the user the program runs as, checked on
//! the file the operator placed (the units read keys from `/etc/sonde`
//! directly, so no copy hides the real mode). When the kernel refuses to open a file the
//! error says who asked and how the file would have to be, because the
//! usual cause is a file placed by root that the service user `sonde`
//! cannot read.

use std::fs::Metadata;
use std::io::Read as _;
use std::os::unix::fs::{FileTypeExt as _, MetadataExt as _, OpenOptionsExt as _};
use std::path::{Path, PathBuf};

/// Largest config file read (a collector config with thousands of
/// managed targets stays far below).
pub const CONFIG_LIMIT: u64 = 4 << 20;
/// Largest PEM file read (CA bundles, chains, CRLs of a large CA).
pub const PEM_LIMIT: u64 = 16 << 20;
/// Largest secret file read (tokens, passwords: their first line counts).
pub const SECRET_LIMIT: u64 = 64 << 10;

/// What kind of file is being read, for the rule it must follow and the
/// hint when it cannot be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Anything the service must be able to read (config, certificate,
    /// CA, CRL): group `sonde` reading it is the usual way.
    Shared,
    /// A private key or secret: mode 0600/0400, owned by root, the service
    /// user `sonde` or the user the program runs as.
    Private,
}

/// Why a file named in a config could not be used. Every variant names the
/// file.
#[derive(Debug, thiserror::Error)]
pub enum FileError {
    #[error("{path}: cannot read{who}: {source}{hint}")]
    Read {
        path: PathBuf,
        /// " as user NAME" when the kernel refused access.
        who: String,
        #[source]
        source: std::io::Error,
        /// How the file is, and how it would have to be.
        hint: String,
    },
    #[error("{path}: is a {kind}, not a regular file; name the file itself")]
    NotRegular { path: PathBuf, kind: &'static str },
    #[error("{path}: larger than {limit} bytes; is it the right file?")]
    TooLarge { path: PathBuf, limit: u64 },
    #[error(
        "{path}: private key is readable by group or others (mode {mode:o}); run chmod 600 {path}"
    )]
    Permissions { path: PathBuf, mode: u32 },
    #[error(
        "{path}: private key is owned by {owner}, not by root, sonde or {user} (the user this \
         runs as); run chown {user} {path}"
    )]
    Owner {
        path: PathBuf,
        owner: String,
        user: String,
    },
}

impl FileError {
    /// The file the error is about.
    pub fn path(&self) -> &Path {
        match self {
            FileError::Read { path, .. }
            | FileError::NotRegular { path, .. }
            | FileError::TooLarge { path, .. }
            | FileError::Permissions { path, .. }
            | FileError::Owner { path, .. } => path,
        }
    }
}

/// The files among `named` (config key, path) that do not exist, all in one
/// message, with the key of the first: a fresh install missing its
/// certificate, key and CRL learns all three at once, not one per start.
pub fn missing<'a>(
    named: impl IntoIterator<Item = (String, &'a Path)>,
) -> Option<(String, String)> {
    let absent: Vec<(String, &Path)> = named
        .into_iter()
        // A directory we may not enter is not "missing": reading explains.
        .filter(|(_, p)| matches!(p.try_exists(), Ok(false)))
        .collect();
    let (first, _) = absent.first()?;
    let list = absent
        .iter()
        .map(|(k, p)| format!("{k} = {}", p.display()))
        .collect::<Vec<_>>()
        .join(", ");
    let what = if absent.len() == 1 { "file" } else { "files" };
    Some((first.clone(), format!("missing {what}: {list}")))
}

/// Reads `path` as a file of `kind`, at most `limit` bytes.
pub fn read(path: &Path, kind: Kind, limit: u64) -> Result<Vec<u8>, FileError> {
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(path)
        .map_err(|e| unreadable(path, kind, e))?;
    let meta = file.metadata().map_err(|e| unreadable(path, kind, e))?;
    check_type(path, &meta)?;
    if kind == Kind::Private {
        check_private(path, &meta)?;
    }
    if meta.len() > limit {
        return Err(FileError::TooLarge {
            path: path.to_owned(),
            limit,
        });
    }
    let mut bytes = Vec::with_capacity(usize::try_from(meta.len()).unwrap_or(0));
    // The size can change between fstat and read: the cap holds anyway.
    (&file)
        .take(limit + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| unreadable(path, kind, e))?;
    if bytes.len() as u64 > limit {
        return Err(FileError::TooLarge {
            path: path.to_owned(),
            limit,
        });
    }
    Ok(bytes)
}

/// [`read`] as UTF-8 text.
pub fn read_text(path: &Path, kind: Kind, limit: u64) -> Result<String, FileError> {
    let bytes = read(path, kind, limit)?;
    String::from_utf8(bytes).map_err(|_| FileError::Read {
        path: path.to_owned(),
        who: String::new(),
        source: std::io::Error::new(std::io::ErrorKind::InvalidData, "not UTF-8 text"),
        hint: String::new(),
    })
}

fn check_type(path: &Path, meta: &Metadata) -> Result<(), FileError> {
    let t = meta.file_type();
    let kind = if t.is_file() {
        return Ok(());
    } else if t.is_dir() {
        "directory"
    } else if t.is_fifo() {
        "FIFO"
    } else if t.is_char_device() {
        "character device"
    } else if t.is_block_device() {
        "block device"
    } else if t.is_socket() {
        "socket"
    } else {
        "special file"
    };
    Err(FileError::NotRegular {
        path: path.to_owned(),
        kind,
    })
}

/// The private-key rule on an opened file's metadata.
fn check_private(path: &Path, meta: &Metadata) -> Result<(), FileError> {
    let mode = meta.mode() & 0o7777;
    if mode & 0o077 != 0 {
        return Err(FileError::Permissions {
            path: path.to_owned(),
            mode,
        });
    }
    let me = nix::unistd::geteuid().as_raw();
    let service = nix::unistd::User::from_name(crate::cli::SERVICE_USER)
        .ok()
        .flatten()
        .map(|u| u.uid.as_raw());
    if meta.uid() != 0 && meta.uid() != me && Some(meta.uid()) != service {
        return Err(FileError::Owner {
            path: path.to_owned(),
            owner: user_name(meta.uid()),
            user: user_name(me),
        });
    }
    Ok(())
}

/// `name` or `uid N` when the system has no name for it.
fn user_name(uid: u32) -> String {
    match nix::unistd::User::from_uid(uid.into()) {
        Ok(Some(u)) => u.name,
        _ => format!("uid {uid}"),
    }
}

fn group_name(gid: u32) -> String {
    match nix::unistd::Group::from_gid(gid.into()) {
        Ok(Some(g)) => g.name,
        _ => format!("gid {gid}"),
    }
}

/// The error for a failed open/read; on a permission refusal, who asked,
/// how the file is and what it would take.
fn unreadable(path: &Path, kind: Kind, source: std::io::Error) -> FileError {
    let denied = source.kind() == std::io::ErrorKind::PermissionDenied;
    let (who, hint) = if denied {
        let uid = nix::unistd::geteuid().as_raw();
        let gid = nix::unistd::getegid().as_raw();
        let (user, group) = (user_name(uid), group_name(gid));
        let how = std::fs::metadata(path).map_or_else(
            |_| String::new(),
            |m| {
                format!(
                    "it is {}:{} mode {:o}; ",
                    user_name(m.uid()),
                    group_name(m.gid()),
                    m.mode() & 0o7777
                )
            },
        );
        let fix = match kind {
            Kind::Private => format!(
                "a key must be owned by {user} with mode 600: chown {user} {p} && chmod 600 {p}",
                p = path.display()
            ),
            Kind::Shared => format!(
                "let group {group} read it: chgrp {group} {p} && chmod 640 {p} (and every \
                 directory above it must let {group} in)",
                p = path.display()
            ),
        };
        (format!(" as user {user}"), format!(" ({how}{fix})"))
    } else {
        (String::new(), String::new())
    };
    FileError::Read {
        path: path.to_owned(),
        who,
        source,
        hint,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt as _;

    #[test]
    fn devices_fifos_and_directories_are_refused_by_type_without_blocking() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("fifo");
        let made = std::process::Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap();
        assert!(made.success());
        for (path, kind) in [
            (Path::new("/dev/zero"), "character device"),
            (fifo.as_path(), "FIFO"),
            (dir.path(), "directory"),
        ] {
            let e = read(path, Kind::Shared, CONFIG_LIMIT).unwrap_err();
            let text = e.to_string();
            assert!(
                text.starts_with(&path.display().to_string()) && text.contains(kind),
                "{text}"
            );
        }
    }

    #[test]
    fn every_missing_file_is_named_at_once() {
        let dir = tempfile::tempdir().unwrap();
        let here = dir.path().join("here.pem");
        std::fs::write(&here, "x").unwrap();
        let (a, b) = (dir.path().join("a.pem"), dir.path().join("b.key"));
        let named = [
            ("tls.ca".to_owned(), here.as_path()),
            ("tls.cert".to_owned(), a.as_path()),
            ("tls.key".to_owned(), b.as_path()),
        ];
        let (key, message) = missing(named.clone()).unwrap();
        assert_eq!(key, "tls.cert");
        assert_eq!(
            message,
            format!(
                "missing files: tls.cert = {}, tls.key = {}",
                a.display(),
                b.display()
            )
        );
        assert_eq!(missing(named.into_iter().take(1)), None);
    }

    #[test]
    fn files_past_the_cap_are_refused_with_the_cap_named() {
        let dir = tempfile::tempdir().unwrap();
        let big = dir.path().join("big.pem");
        std::fs::write(&big, vec![b'x'; 1025]).unwrap();
        let e = read(&big, Kind::Shared, 1024).unwrap_err().to_string();
        assert!(e.contains("larger than 1024 bytes"), "{e}");
        assert_eq!(read(&big, Kind::Shared, 1025).unwrap().len(), 1025);
    }

    #[test]
    fn keys_must_be_private_to_their_owner() {
        let dir = tempfile::tempdir().unwrap();
        let key = dir.path().join("k.key");
        std::fs::write(&key, "secret").unwrap();
        for (mode, ok) in [(0o600, true), (0o400, true), (0o640, false), (0o604, false)] {
            std::fs::set_permissions(&key, std::fs::Permissions::from_mode(mode)).unwrap();
            let got = read(&key, Kind::Private, SECRET_LIMIT);
            assert_eq!(got.is_ok(), ok, "mode {mode:o}: {got:?}");
            if let Err(e) = got {
                assert!(e.to_string().contains(&format!("mode {mode:o}")), "{e}");
            }
            // Certificates and configs have no such rule.
            assert!(read(&key, Kind::Shared, SECRET_LIMIT).is_ok());
        }
        // Owned by someone else (only root can make that file here).
        if nix::unistd::geteuid().is_root() {
            std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
            std::os::unix::fs::chown(&key, Some(4242), None).unwrap();
            let e = read(&key, Kind::Private, SECRET_LIMIT)
                .unwrap_err()
                .to_string();
            assert!(e.contains("owned by uid 4242, not by root"), "{e}");
        }
    }
}
