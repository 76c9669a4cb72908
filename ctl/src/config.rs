//! sondectl's config file: where the collector is and which certificate to
//! present. Loaded with the same rules as the daemons' configs (unknown keys
//! rejected, errors name file, line and key, TLS files loaded for real).

use std::path::Path;
use std::time::Duration;

use serde::Deserialize;
use sonde_runtime::config::{ConfigError, Source};
use sonde_runtime::tls::TlsFiles;

/// The whole file.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Config {
    /// Collector API address, `HOST:PORT` (`[v6]:PORT` for IPv6 literals);
    /// HOST must match the collector's certificate.
    pub collector: String,
    /// How long one request may take.
    #[serde(with = "humantime_serde", default = "default_timeout")]
    pub timeout: Duration,
    /// Your TLS material: `ca` (issuer of the collector's certificate),
    /// `cert` (URI SAN `sonde://TENANT/viewer/NAME` or `.../admin/...`),
    /// `key` (0600).
    pub tls: TlsFiles,
}

fn default_timeout() -> Duration {
    Duration::from_secs(10)
}

/// A validated config with its TLS client configuration.
#[derive(Debug)]
pub struct Loaded {
    pub config: Config,
    /// `https://HOST:PORT`.
    pub base_url: String,
    pub tls: rustls::ClientConfig,
}

impl Loaded {
    /// Reads and validates `path`; relative paths are resolved against the
    /// file's directory.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let source = Source::read(path)?;
        let mut config: Config = source.parse()?;
        config.tls = source.resolve_tls(&config.tls)?;
        let Some(base_url) = base_url(&config.collector) else {
            return Err(source.error(
                "collector",
                format!(
                    "{:?} is not HOST:PORT (use [ADDR]:PORT for IPv6)",
                    config.collector
                ),
            ));
        };
        if config.timeout.is_zero() {
            return Err(source.error("timeout", "must be greater than zero"));
        }
        let tls = sonde_runtime::tls::client_config(&config.tls)
            .map_err(|e| source.tls_error(&config.tls, &[], &e))?;
        Ok(Self {
            config,
            base_url,
            tls,
        })
    }
}

/// `https://HOST:PORT` for a `HOST:PORT` address whose host is a valid
/// server name, or `None`.
fn base_url(collector: &str) -> Option<String> {
    let (host, port) = collector.rsplit_once(':')?;
    port.parse::<u16>().ok().filter(|p| *p != 0)?;
    let name = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    if name.is_empty() || (name.contains(':') && name == host) {
        return None;
    }
    rustls_pki_types::ServerName::try_from(name).ok()?;
    Some(format!("https://{collector}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base_url_accepts_host_port_and_bracketed_v6() {
        assert_eq!(
            base_url("collector.example.net:4443").as_deref(),
            Some("https://collector.example.net:4443")
        );
        assert_eq!(
            base_url("[::1]:4443").as_deref(),
            Some("https://[::1]:4443")
        );
        assert_eq!(
            base_url("127.0.0.1:1").as_deref(),
            Some("https://127.0.0.1:1")
        );
    }

    #[test]
    fn base_url_rejects_what_is_not_host_port() {
        for bad in [
            "collector",
            "collector:",
            "collector:0",
            "collector:99999",
            ":4443",
            "::1:4443",
            "https://x:1/",
        ] {
            assert_eq!(base_url(bad), None, "{bad}");
        }
    }

    #[test]
    fn sample_config_parses() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("sondectl.toml");
        let config: Config = Source::read(&path).unwrap().parse().unwrap();
        assert_eq!(
            base_url(&config.collector).as_deref(),
            Some("https://collector.example.net:7443")
        );
        assert_eq!(config.timeout, Duration::from_secs(10));
        assert_eq!(config.tls.key, Path::new("/etc/sonde/sondectl.key"));
    }

    #[test]
    fn unknown_key_is_named_with_its_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sondectl.toml");
        std::fs::write(
            &path,
            "collector = \"localhost:4443\"\nbogus = 1\n[tls]\nca = \"ca.pem\"\ncert = \"c.pem\"\nkey = \"k.pem\"\n",
        )
        .unwrap();
        let err = Loaded::load(&path).unwrap_err().to_string();
        assert!(err.contains("sondectl.toml:2:1"), "{err}");
        assert!(err.contains("bogus"), "{err}");
    }

    #[test]
    fn missing_tls_file_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sondectl.toml");
        std::fs::write(
            &path,
            "collector = \"localhost:4443\"\n[tls]\nca = \"ca.pem\"\ncert = \"c.pem\"\nkey = \"k.pem\"\n",
        )
        .unwrap();
        let err = Loaded::load(&path).unwrap_err().to_string();
        assert!(err.contains("key `tls.ca`"), "{err}");
        assert!(err.contains("ca.pem"), "{err}");
    }
}
