//! Loading TOML config files with errors that name the file, line and key.
//!
//! `check-config` must tell an operator exactly what is wrong: serde's
//! messages say *what*, the toml spans say *where*, and this module turns a
//! span back into the dotted key path (`tls.cert`, `agent[2].grace`) by
//! walking the spanned document.

use std::fmt;
use std::fmt::Write as _;
use std::ops::Range;
use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;

use crate::files::{self, Kind};
use crate::tls::{TlsError, TlsFiles};
use toml::de::{DeTable, DeValue};

/// A config problem, located as precisely as the input allows.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct ConfigError {
    pub path: PathBuf,
    /// 1-based line and column, when the problem has a place in the file.
    pub line: Option<(usize, usize)>,
    /// Dotted key path, when the problem belongs to a key.
    pub key: Option<String>,
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.path.display())?;
        if let Some((line, col)) = self.line {
            write!(f, ":{line}:{col}")?;
        }
        if let Some(key) = &self.key {
            write!(f, ": key `{key}`")?;
        }
        write!(f, ": {}", self.message)
    }
}

/// The text of a config file, kept to locate keys for later validation.
#[derive(Debug, Clone)]
pub struct Source {
    path: PathBuf,
    text: String,
}

impl Source {
    /// Reads `path`.
    pub fn read(path: &Path) -> Result<Self, ConfigError> {
        let text =
            files::read_text(path, Kind::Shared, files::CONFIG_LIMIT).map_err(|e| ConfigError {
                path: path.to_owned(),
                line: None,
                key: None,
                message: without_path(&e.to_string(), path),
            })?;
        Ok(Self::from_text(path, text))
    }

    /// A source from text already in memory (`path` is only for messages).
    pub fn from_text(path: &Path, text: String) -> Self {
        Self {
            path: path.to_owned(),
            text,
        }
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Resolves the path under `key`: relative paths are relative to the
    /// directory holding the config file, and a leading
    /// `$CREDENTIALS_DIRECTORY/` is the directory where systemd put the
    /// service's credentials (`LoadCredential=`). Without that variable
    /// (the units since 0.1.0-2 pass no credentials, and configs written
    /// for the earlier ones still say `$CREDENTIALS_DIRECTORY/agent.key`)
    /// it is the file of that name next to the config, where those units
    /// loaded it from.
    pub fn resolve(&self, key: &str, p: &Path) -> Result<PathBuf, ConfigError> {
        let text = p.to_string_lossy();
        let credential = text
            .strip_prefix("$CREDENTIALS_DIRECTORY/")
            .or_else(|| text.strip_prefix("${CREDENTIALS_DIRECTORY}/"));
        if let Some(name) = credential {
            if let Some(dir) = std::env::var_os("CREDENTIALS_DIRECTORY") {
                return Ok(Path::new(&dir).join(name));
            }
            let beside = self.dir().join(name);
            tracing::warn!(
                key,
                path = %beside.display(),
                "$CREDENTIALS_DIRECTORY is not set (no LoadCredential=): reading the file next \
                 to the config; name it directly"
            );
            return Ok(beside);
        }
        Ok(if p.is_absolute() {
            p.to_owned()
        } else {
            self.dir().join(p)
        })
    }

    /// The directory holding the config file.
    fn dir(&self) -> &Path {
        self.path.parent().unwrap_or_else(|| Path::new("."))
    }

    /// Resolves the paths of a `[tls]` table (keys `tls.ca`, `tls.cert`,
    /// `tls.key`) as [`Source::resolve`] does.
    pub fn resolve_tls(&self, files: &TlsFiles) -> Result<TlsFiles, ConfigError> {
        Ok(TlsFiles {
            ca: self.resolve("tls.ca", &files.ca)?,
            cert: self.resolve("tls.cert", &files.cert)?,
            key: self.resolve("tls.key", &files.key)?,
        })
    }

    /// A failure to load TLS material, blamed on the `[tls]` key that names
    /// the file involved (`tls.crl` for one of `crls`).
    pub fn tls_error(&self, files: &TlsFiles, crls: &[PathBuf], e: &TlsError) -> ConfigError {
        let key = match e.path() {
            Some(p) if p == files.key => "tls.key",
            Some(p) if p == files.ca => "tls.ca",
            Some(p) if crls.iter().any(|c| c == p) => "tls.crl",
            _ => "tls.cert",
        };
        self.error(key, e.to_string())
    }

    /// Deserialises the whole file.
    pub fn parse<T: DeserializeOwned>(&self) -> Result<T, ConfigError> {
        toml::from_str(&self.text).map_err(|e| {
            let span = e.span();
            let mut err = self.error_at_span(span.clone(), e.message().trim().to_owned());
            if err.key.is_none() {
                err.key = span.clone().and_then(|s| key_at(&self.text, &s));
            }
            // A duplicate leaves no document to walk: name it from the text.
            if err.key.is_none()
                && err.message == "duplicate key"
                && let Some(name) = span.and_then(|s| duplicate_at(&self.text, &s))
            {
                err.message = format!("duplicate key `{name}`: each key may be given once");
                err.key = Some(name);
            }
            err
        })
    }

    /// An error about `key` (dotted path), located at that key if present
    /// in the file (a default that was never written has no line).
    pub fn error(&self, key: &str, message: impl Into<String>) -> ConfigError {
        // A key that is not written (a missing one) is placed at the
        // nearest table that is: `a.b[2].c` at `a.b[2]`, then `a`.
        let mut span = span_of(&self.text, key);
        let mut parent = key;
        while span.is_none()
            && let Some(cut) = parent.rfind('.')
        {
            parent = &parent[..cut];
            span = span_of(&self.text, parent);
        }
        let mut err = self.error_at_span(span, message.into());
        err.key = Some(key.to_owned());
        err
    }

    fn error_at_span(&self, span: Option<Range<usize>>, message: String) -> ConfigError {
        ConfigError {
            path: self.path.clone(),
            line: span.map(|s| line_col(&self.text, s.start)),
            key: None,
            message,
        }
    }
}

/// `text` without a leading `PATH: ` (the error already names the file).
fn without_path(text: &str, path: &Path) -> String {
    let prefix = format!("{}: ", path.display());
    text.strip_prefix(&prefix).unwrap_or(text).to_owned()
}

/// A size in bytes, written in config files as an integer or a string with
/// a binary unit: `"512KiB"`, `"256MiB"`, `"1GiB"` (also `B`, `KB`=`KiB`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct ByteSize(pub u64);

impl std::str::FromStr for ByteSize {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let t = s.trim();
        let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
        let (num, unit) = t.split_at(split);
        let n: u64 = num
            .parse()
            .map_err(|_| format!("{s:?} is not a size like \"256MiB\""))?;
        let mult: u64 = match unit.trim().to_ascii_lowercase().as_str() {
            "" | "b" => 1,
            "k" | "kb" | "kib" => 1 << 10,
            "m" | "mb" | "mib" => 1 << 20,
            "g" | "gb" | "gib" => 1 << 30,
            other => {
                return Err(format!(
                    "unknown size unit {other:?} in {s:?} (use B, KiB, MiB, GiB)"
                ));
            }
        };
        n.checked_mul(mult)
            .map(ByteSize)
            .ok_or_else(|| format!("{s:?} is too large"))
    }
}

impl<'de> serde::Deserialize<'de> for ByteSize {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(serde::Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Int(u64),
            Text(String),
        }
        match Raw::deserialize(d)? {
            Raw::Int(n) => Ok(ByteSize(n)),
            Raw::Text(t) => t.parse().map_err(serde::de::Error::custom),
        }
    }
}

/// 1-based line and column of a byte offset.
fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let col = before
        .rfind('\n')
        .map_or(before.len(), |nl| before.len() - nl - 1)
        + 1;
    (line, col)
}

/// The dotted path of the deepest key whose key or value contains `span`.
/// The dotted name of a duplicate key or table at `span`: the key's text,
/// under the `[table]` header above it (a repeated header names itself).
fn duplicate_at(text: &str, span: &Range<usize>) -> Option<String> {
    let name = text.get(span.clone())?.trim().trim_matches('"').to_owned();
    let line_start = text[..span.start].rfind('\n').map_or(0, |i| i + 1);
    if text[line_start..].trim_start().starts_with('[') {
        return Some(name);
    }
    let header = text[..line_start].lines().rev().find_map(|l| {
        let l = l.trim();
        l.starts_with('[')
            .then(|| l.trim_matches(|c| c == '[' || c == ']').trim().to_owned())
    });
    Some(header.map_or(name.clone(), |h| format!("{h}.{name}")))
}

fn key_at(text: &str, span: &Range<usize>) -> Option<String> {
    let doc = DeTable::parse(text).ok()?;
    let mut path = Vec::new();
    walk_table(doc.get_ref(), span.start, &mut path);
    (!path.is_empty()).then(|| join(&path))
}

fn walk_table(table: &DeTable<'_>, at: usize, path: &mut Vec<String>) {
    for (k, v) in table {
        if k.span().contains(&at) {
            path.push(k.get_ref().to_string());
            return;
        }
        if v.span().contains(&at) {
            path.push(k.get_ref().to_string());
            walk_value(v.get_ref(), at, path);
            return;
        }
    }
    // Tables written as `[section]` headers have values outside the header
    // span; look inside them too.
    for (k, v) in table {
        if let DeValue::Table(t) = v.get_ref() {
            let mut sub = vec![k.get_ref().to_string()];
            walk_table(t, at, &mut sub);
            if sub.len() > 1 {
                path.extend(sub);
                return;
            }
        }
        if let DeValue::Array(a) = v.get_ref() {
            for (i, item) in a.iter().enumerate() {
                if let DeValue::Table(t) = item.get_ref() {
                    let mut sub = vec![format!("{}[{i}]", k.get_ref())];
                    walk_table(t, at, &mut sub);
                    if sub.len() > 1 {
                        path.extend(sub);
                        return;
                    }
                }
            }
        }
    }
}

fn walk_value(value: &DeValue<'_>, at: usize, path: &mut Vec<String>) {
    match value {
        DeValue::Table(t) => walk_table(t, at, path),
        DeValue::Array(a) => {
            for (i, item) in a.iter().enumerate() {
                if item.span().contains(&at) {
                    if let Some(last) = path.last_mut() {
                        let _ = write!(last, "[{i}]");
                    }
                    walk_value(item.get_ref(), at, path);
                    return;
                }
            }
        }
        _ => {}
    }
}

fn join(path: &[String]) -> String {
    path.join(".")
}

/// The span of dotted key `key` (`a.b`, `list[1].c`) in `text`, if written.
fn span_of(text: &str, key: &str) -> Option<Range<usize>> {
    let doc = DeTable::parse(text).ok()?;
    let mut table = doc.get_ref();
    let mut parts = key.split('.').peekable();
    while let Some(part) = parts.next() {
        let (name, index) = match part.split_once('[') {
            Some((n, rest)) => (n, rest.trim_end_matches(']').parse::<usize>().ok()),
            None => (part, None),
        };
        let (k, v) = table.iter().find(|(k, _)| k.get_ref().as_ref() == name)?;
        let v = match (index, v.get_ref()) {
            (Some(i), DeValue::Array(a)) => a.get(i)?,
            _ => v,
        };
        if parts.peek().is_none() {
            // An element of an array of tables: where that element is.
            return Some(match index {
                Some(_) if !v.span().is_empty() => v.span(),
                _ => k.span(),
            });
        }
        table = v.get_ref().as_table()?;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;
    use std::time::Duration;

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields, rename_all = "kebab-case")]
    #[allow(dead_code)]
    struct Conf {
        name: String,
        tls: Tls,
        #[serde(default)]
        agent: Vec<Agent>,
    }
    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields, rename_all = "kebab-case")]
    struct Tls {
        #[allow(dead_code)]
        cert: PathBuf,
        #[serde(with = "humantime_serde", default)]
        #[allow(dead_code)]
        reload: Option<Duration>,
    }
    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields, rename_all = "kebab-case")]
    struct Agent {
        #[allow(dead_code)]
        name: String,
        #[serde(with = "humantime_serde")]
        #[allow(dead_code)]
        grace: Duration,
    }

    fn err(text: &str) -> ConfigError {
        Source::from_text(Path::new("/etc/x.toml"), text.to_owned())
            .parse::<Conf>()
            .unwrap_err()
    }

    #[test]
    fn unknown_key_is_named_with_its_line() {
        let e = err("name = \"a\"\n[tls]\ncert = \"c\"\ncertt = \"d\"\n");
        assert_eq!(e.line.map(|l| l.0), Some(4), "{e}");
        assert_eq!(e.key.as_deref(), Some("tls.certt"), "{e}");
        assert!(
            e.to_string()
                .starts_with("/etc/x.toml:4:1: key `tls.certt`: unknown field"),
            "{e}"
        );
    }

    #[test]
    fn duplicate_keys_and_tables_are_named() {
        let e = err("name = \"a\"\nname = \"b\"\n[tls]\ncert = \"c\"\n");
        assert_eq!(e.line.map(|l| l.0), Some(2), "{e}");
        assert_eq!(e.key.as_deref(), Some("name"), "{e}");
        assert!(e.to_string().contains("duplicate key `name`"), "{e}");
        let e = err("name = \"a\"\n[tls]\ncert = \"c\"\ncert = \"d\"\n");
        assert_eq!(e.key.as_deref(), Some("tls.cert"), "{e}");
        assert_eq!(e.line.map(|l| l.0), Some(4), "{e}");
        let e = err("name = \"a\"\n[tls]\ncert = \"c\"\n[tls]\n");
        assert_eq!(e.key.as_deref(), Some("tls"), "{e}");
        assert_eq!(e.line.map(|l| l.0), Some(4), "{e}");
    }

    #[test]
    fn a_missing_key_is_placed_at_its_table() {
        let src = Source::from_text(
            Path::new("/etc/x.toml"),
            "name = \"a\"\n[tls]\ncert = \"c\"\n[[agent]]\nname = \"x\"\n[[agent]]\nname = \"y\"\n"
                .to_owned(),
        );
        let e = src.error("agent[1].grace", "missing");
        assert_eq!(e.key.as_deref(), Some("agent[1].grace"), "{e}");
        assert!(matches!(e.line, Some((6 | 7, _))), "{e}");
        let e = src.error("tls.key", "missing");
        assert_eq!(e.line.map(|l| l.0), Some(2), "{e}");
    }

    #[test]
    fn bad_duration_is_named() {
        let e = err("name = \"a\"\n[tls]\ncert = \"c\"\nreload = \"10 parsecs\"\n");
        assert_eq!(e.line.map(|l| l.0), Some(4), "{e}");
        assert_eq!(e.key.as_deref(), Some("tls.reload"), "{e}");
        let e = err(
            "name = \"a\"\n[tls]\ncert = \"c\"\n[[agent]]\nname = \"x\"\ngrace = \"1m\"\n[[agent]]\nname = \"y\"\ngrace = \"soon\"\n",
        );
        assert_eq!(e.line.map(|l| l.0), Some(9), "{e}");
        assert_eq!(e.key.as_deref(), Some("agent[1].grace"), "{e}");
    }

    #[test]
    fn missing_key_and_syntax_errors_have_lines() {
        let e = err("name = \"a\"\n[tls]\nreload = \"1s\"\n");
        assert!(e.message.contains("missing field `cert`"), "{e}");
        assert!(e.line.is_some(), "{e}");
        let e = err("name = \"a\"\n[tls\n");
        assert_eq!(e.line.map(|l| l.0), Some(2), "{e}");
    }

    #[test]
    fn validation_errors_point_at_keys() {
        let src = Source::from_text(
            Path::new("/etc/x.toml"),
            "name = \"a\"\n\n[tls]\ncert = \"c\"\n".to_owned(),
        );
        let e = src.error("tls.cert", "file not found");
        assert_eq!(
            e.to_string(),
            "/etc/x.toml:4:1: key `tls.cert`: file not found"
        );
        let e = src.error("tls.key", "required");
        // Not written: placed at its table.
        assert_eq!(e.to_string(), "/etc/x.toml:3:2: key `tls.key`: required");
        assert_eq!(
            src.resolve("tls.cert", Path::new("c.pem")),
            Ok(PathBuf::from("/etc/c.pem"))
        );
    }

    #[test]
    fn byte_sizes() {
        assert_eq!("256MiB".parse::<ByteSize>(), Ok(ByteSize(256 << 20)));
        assert_eq!("1 GiB".parse::<ByteSize>(), Ok(ByteSize(1 << 30)));
        assert_eq!("4096".parse::<ByteSize>(), Ok(ByteSize(4096)));
        assert!(
            "12 parsecs"
                .parse::<ByteSize>()
                .unwrap_err()
                .contains("unknown size unit")
        );
        assert!("MiB".parse::<ByteSize>().is_err());
        assert!(
            "99999999999999GiB"
                .parse::<ByteSize>()
                .unwrap_err()
                .contains("too large")
        );
    }

    #[test]
    fn unreadable_file_is_named() {
        let e = Source::read(Path::new("/nonexistent/sonde.toml")).unwrap_err();
        assert!(
            e.to_string()
                .starts_with("/nonexistent/sonde.toml: cannot read"),
            "{e}"
        );
    }
}
