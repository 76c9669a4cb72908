//! Public-IP tracking: which address the rest of the internet sees this
//! host as, per family, from configurable sources asked in order — HTTP(S)
//! endpoints answering with the address as text or JSON, and DNS
//! (`myip`-style A/AAAA/TXT answers from a named resolver).
//!
//! **Agreement rule.** Sources of a family are asked in order until
//! `agree` of them (default 2) gave the same address; that address is
//! accepted. When the sources run out first, the address the most sources
//! gave is accepted only if every source that answered gave it (one
//! answering source is enough when the others failed); otherwise the
//! result is `disagree` with what each said, and the collector keeps the
//! address it had. No usable answer at all is `failed`, with each source's
//! error. Every lookup is a result: failures are never silence.
//!
//! The lookups themselves are in [`http`] and [`dns`]; the rule is
//! [`decide`], tested on its own.

pub mod dns;
pub mod http;

use std::net::IpAddr;
use std::time::Duration;

use serde::Deserialize;
use sonde_proto::v1::{PublicIpAnswer, PublicIpResult, PublicIpStatus};

/// An address family.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Family {
    Ipv4,
    Ipv6,
}

impl Family {
    pub fn as_str(self) -> &'static str {
        match self {
            Family::Ipv4 => "ipv4",
            Family::Ipv6 => "ipv6",
        }
    }

    pub fn of(addr: IpAddr) -> Self {
        if addr.is_ipv4() {
            Family::Ipv4
        } else {
            Family::Ipv6
        }
    }
}

fn ipv4() -> Family {
    Family::Ipv4
}

/// How an HTTP source writes the address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    /// The body is the address (surrounding white space ignored).
    Text,
    /// The body is a JSON object; `field` (dotted path) is the address.
    Json,
}

fn text() -> Format {
    Format::Text
}

/// The DNS record a DNS source asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub enum RecordKind {
    A,
    #[allow(clippy::upper_case_acronyms)]
    AAAA,
    #[allow(clippy::upper_case_acronyms)]
    TXT,
}

/// One source, as configured (`[[public-ip.source]]`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case", deny_unknown_fields)]
pub enum Source {
    Http {
        url: String,
        #[serde(default = "ipv4")]
        family: Family,
        #[serde(default = "text")]
        format: Format,
        /// JSON only: the field holding the address, `a.b` for nested.
        #[serde(default)]
        field: Option<String>,
    },
    Dns {
        /// The resolver or authoritative server asked, `ADDR:PORT`.
        server: std::net::SocketAddr,
        /// The name asked for, e.g. `myip.opendns.com`.
        name: String,
        record: RecordKind,
        /// TXT only: which family the answer is (A is IPv4, AAAA IPv6).
        #[serde(default)]
        family: Option<Family>,
    },
}

impl Source {
    /// The family this source reports.
    pub fn family(&self) -> Family {
        match self {
            Source::Http { family, .. } => *family,
            Source::Dns { record, family, .. } => match record {
                RecordKind::A => Family::Ipv4,
                RecordKind::AAAA => Family::Ipv6,
                RecordKind::TXT => family.unwrap_or(Family::Ipv4),
            },
        }
    }

    /// How results name this source.
    pub fn label(&self) -> String {
        match self {
            Source::Http { url, .. } => url.clone(),
            Source::Dns {
                server,
                name,
                record,
                ..
            } => format!("dns {server} {name} {record:?}"),
        }
    }

    /// A configuration mistake, named.
    pub fn check(&self) -> Result<(), String> {
        match self {
            Source::Http {
                url, format, field, ..
            } => {
                let u = reqwest::Url::parse(url).map_err(|e| format!("url {url:?}: {e}"))?;
                if !matches!(u.scheme(), "http" | "https") {
                    return Err(format!("url {url:?}: only http and https are supported"));
                }
                if !u.username().is_empty() || u.password().is_some() {
                    return Err(format!("url {url:?}: credentials in a URL would be logged"));
                }
                match (format, field) {
                    (Format::Json, None) => Err(format!("url {url:?}: format json needs field")),
                    (Format::Text, Some(_)) => Err(format!("url {url:?}: field needs format json")),
                    _ => Ok(()),
                }
            }
            Source::Dns {
                name,
                record,
                family,
                ..
            } => {
                hickory_proto::rr::Name::from_ascii(name)
                    .map_err(|e| format!("name {name:?}: {e}"))?;
                if family.is_some() && *record != RecordKind::TXT {
                    return Err(format!(
                        "name {name:?}: family is only for TXT (A is IPv4, AAAA IPv6)"
                    ));
                }
                Ok(())
            }
        }
    }
}

/// `[public-ip]`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct PublicIpConfig {
    /// Off: no lookups at all.
    #[serde(default = "yes")]
    pub enabled: bool,
    #[serde(with = "humantime_serde", default = "default_interval")]
    pub interval: Duration,
    /// Per source.
    #[serde(with = "humantime_serde", default = "default_timeout")]
    pub timeout: Duration,
    /// Sources that must agree (see the module documentation).
    #[serde(default = "default_agree")]
    pub agree: usize,
    /// Asked in order, per family.
    #[serde(default = "default_sources", rename = "source")]
    pub sources: Vec<Source>,
}

fn yes() -> bool {
    true
}
fn default_interval() -> Duration {
    Duration::from_secs(300)
}
fn default_timeout() -> Duration {
    Duration::from_secs(5)
}
fn default_agree() -> usize {
    2
}

/// The default sources: two HTTPS services and OpenDNS's `myip` name per
/// family (what `dig +short myip.opendns.com @resolver1.opendns.com` asks).
pub fn default_sources() -> Vec<Source> {
    let http = |url: &str, family| Source::Http {
        url: url.to_owned(),
        family,
        format: Format::Text,
        field: None,
    };
    let dns = |server: &str, record| Source::Dns {
        server: server.parse().expect("valid default"),
        name: "myip.opendns.com".to_owned(),
        record,
        family: None,
    };
    vec![
        http("https://api.ipify.org", Family::Ipv4),
        http("https://ipv4.icanhazip.com", Family::Ipv4),
        dns("208.67.222.222:53", RecordKind::A),
        http("https://api6.ipify.org", Family::Ipv6),
        http("https://ipv6.icanhazip.com", Family::Ipv6),
        dns("[2620:119:35::35]:53", RecordKind::AAAA),
    ]
}

impl Default for PublicIpConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            interval: default_interval(),
            timeout: default_timeout(),
            agree: default_agree(),
            sources: default_sources(),
        }
    }
}

impl PublicIpConfig {
    /// A configuration mistake, named.
    pub fn check(&self) -> Result<(), String> {
        if self.agree == 0 {
            return Err("agree must be at least 1".into());
        }
        if self.interval < Duration::from_secs(1) {
            return Err("interval must be at least 1s".into());
        }
        self.sources.iter().try_for_each(Source::check)
    }

    /// The families that have sources, in a fixed order.
    pub fn families(&self) -> Vec<Family> {
        [Family::Ipv4, Family::Ipv6]
            .into_iter()
            .filter(|f| self.sources.iter().any(|s| s.family() == *f))
            .collect()
    }
}

/// The agreement rule over the answers so far: `Some(address)` once one
/// address has `agree` votes (ask no more), else `None`.
fn agreed(answers: &[PublicIpAnswer], agree: usize) -> Option<&str> {
    answers.iter().map(|a| a.address.as_str()).find(|addr| {
        !addr.is_empty() && answers.iter().filter(|a| a.address == *addr).count() >= agree
    })
}

/// The verdict over every answer (see the module documentation).
pub fn decide(answers: &[PublicIpAnswer], agree: usize) -> (PublicIpStatus, String) {
    if let Some(addr) = agreed(answers, agree) {
        return (PublicIpStatus::Ok, addr.to_owned());
    }
    let given: Vec<&str> = answers
        .iter()
        .map(|a| a.address.as_str())
        .filter(|a| !a.is_empty())
        .collect();
    match given.first() {
        None => (PublicIpStatus::Failed, String::new()),
        Some(first) if given.iter().all(|a| a == first) => {
            (PublicIpStatus::Ok, (*first).to_owned())
        }
        Some(_) => (PublicIpStatus::Disagree, String::new()),
    }
}

/// Asks the sources of a family.
#[derive(Debug, Clone)]
pub struct Lookup {
    http: reqwest::Client,
    http_v6: reqwest::Client,
}

impl Lookup {
    pub fn new() -> Result<Self, String> {
        Ok(Self {
            http: http::client(Family::Ipv4)?,
            http_v6: http::client(Family::Ipv6)?,
        })
    }

    async fn ask(&self, source: &Source, timeout: Duration) -> Result<IpAddr, String> {
        let family = source.family();
        let addr = match source {
            Source::Http {
                url, format, field, ..
            } => {
                let client = match family {
                    Family::Ipv4 => &self.http,
                    Family::Ipv6 => &self.http_v6,
                };
                let body = http::fetch(client, url, timeout).await?;
                http::parse(&body, *format, field.as_deref())?
            }
            Source::Dns {
                server,
                name,
                record,
                ..
            } => dns::ask(*server, name, *record, timeout).await?,
        };
        if Family::of(addr) != family {
            return Err(format!(
                "answered {addr}, not an {} address",
                family.as_str()
            ));
        }
        Ok(addr)
    }

    /// One lookup of `family` under `config`, stamped `now_ns`.
    pub async fn run(
        &self,
        config: &PublicIpConfig,
        family: Family,
        now_ns: i64,
    ) -> PublicIpResult {
        let mut answers = Vec::new();
        for source in config.sources.iter().filter(|s| s.family() == family) {
            let started = tokio::time::Instant::now();
            let outcome = self.ask(source, config.timeout).await;
            let duration = started.elapsed();
            let (address, error) = match outcome {
                Ok(a) => (a.to_string(), String::new()),
                Err(e) => {
                    tracing::debug!(source = %source.label(), error = %e, "public-IP source failed");
                    (String::new(), e)
                }
            };
            answers.push(PublicIpAnswer {
                source: source.label(),
                address,
                error,
                duration_nanos: u64::try_from(duration.as_nanos()).unwrap_or(u64::MAX),
            });
            if agreed(&answers, config.agree).is_some() {
                break;
            }
        }
        let (status, address) = decide(&answers, config.agree);
        PublicIpResult {
            checked_unix_nanos: now_ns,
            family: family.as_str().to_owned(),
            address,
            status: status.into(),
            answers,
        }
    }
}

/// At most this much of a hostile answer goes into an error message.
const QUOTE_MAX: usize = 64;

/// A short, printable quote of what a source sent.
pub(crate) fn quote(bytes: &[u8]) -> String {
    let text = String::from_utf8_lossy(bytes);
    let mut q: String = text
        .chars()
        .take(QUOTE_MAX)
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    if text.chars().count() > QUOTE_MAX {
        q.push('…');
    }
    format!("{q:?}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(address: &str) -> PublicIpAnswer {
        PublicIpAnswer {
            source: "s".into(),
            address: address.into(),
            error: if address.is_empty() {
                "down".into()
            } else {
                String::new()
            },
            duration_nanos: 1,
        }
    }

    fn verdict(addrs: &[&str], agree: usize) -> (PublicIpStatus, String) {
        let answers: Vec<_> = addrs.iter().map(|a| answer(a)).collect();
        decide(&answers, agree)
    }

    #[test]
    fn agreement_rule() {
        use PublicIpStatus::{Disagree, Failed, Ok};
        let x = "203.0.113.7";
        let y = "198.51.100.9";
        assert_eq!(verdict(&[x, x], 2), (Ok, x.into()));
        assert_eq!(verdict(&[x, y, x], 2), (Ok, x.into()), "two of three agree");
        assert_eq!(
            verdict(&["", x], 2),
            (Ok, x.into()),
            "the one that answered"
        );
        assert_eq!(verdict(&[x, y], 2), (Disagree, String::new()));
        assert_eq!(verdict(&[x, "", y], 2), (Disagree, String::new()));
        assert_eq!(verdict(&["", ""], 2), (Failed, String::new()));
        assert_eq!(verdict(&[], 2), (Failed, String::new()));
        assert_eq!(verdict(&[x, y], 1), (Ok, x.into()), "agree = 1: the first");
        assert_eq!(verdict(&[x, y, y], 3), (Disagree, String::new()));
    }

    #[test]
    fn stops_asking_once_agreed() {
        let x = "203.0.113.7";
        assert_eq!(agreed(&[answer(x)], 2), None);
        assert_eq!(agreed(&[answer(x), answer("")], 2), None);
        assert_eq!(agreed(&[answer(x), answer(""), answer(x)], 2), Some(x));
    }

    #[test]
    fn config_parses_and_names_mistakes() {
        let c: PublicIpConfig = toml::from_str(
            r#"
            interval = "1m"
            [[source]]
            kind = "http"
            url = "http://127.0.0.1:8080/ip"
            format = "json"
            field = "data.ip"
            [[source]]
            kind = "dns"
            server = "127.0.0.1:5353"
            name = "myip.test"
            record = "TXT"
            family = "ipv6"
            "#,
        )
        .unwrap();
        c.check().unwrap();
        assert_eq!(c.sources[1].family(), Family::Ipv6);
        assert_eq!(c.families(), [Family::Ipv4, Family::Ipv6]);
        let bad = |t: &str| {
            toml::from_str::<PublicIpConfig>(t)
                .map_err(|e| e.to_string())
                .and_then(|c| c.check())
        };
        assert!(
            bad("[[source]]\nkind = \"http\"\nurl = \"ftp://x\"\n")
                .unwrap_err()
                .contains("only http")
        );
        assert!(
            bad("[[source]]\nkind = \"http\"\nurl = \"https://u:p@x\"\n")
                .unwrap_err()
                .contains("credentials")
        );
        assert!(
            bad("[[source]]\nkind = \"http\"\nurl = \"https://x\"\nformat = \"json\"\n")
                .unwrap_err()
                .contains("needs field")
        );
        assert!(bad("[[source]]\nkind = \"dns\"\nserver = \"1.2.3.4:53\"\nname = \"x\"\nrecord = \"A\"\nfamily = \"ipv6\"\n").unwrap_err().contains("only for TXT"));
        assert!(
            bad("[[source]]\nkind = \"smoke\"\n")
                .unwrap_err()
                .contains("smoke")
        );
        assert!(
            bad("[[source]]\nkind = \"http\"\nurl = \"https://x\"\nport = 1\n")
                .unwrap_err()
                .contains("port")
        );
        PublicIpConfig::default().check().unwrap();
    }

    #[test]
    fn quotes_are_short_and_printable() {
        assert_eq!(quote(b"<html>\n"), "\"<html> \"");
        let long = quote(&[b'a'; 200]);
        assert!(long.chars().count() < 70, "{long}");
    }
}
