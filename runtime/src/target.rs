//! What a probe is aimed at: an address, a hostname (resolved on a
//! schedule; a failed resolution is itself a result), or a CIDR range
//! expanded to its host addresses.

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

use ipnet::IpNet;

/// Largest CIDR range one target may expand to.
pub const MAX_RANGE: u128 = 65_536;

/// A configured target, before resolution.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Target {
    Addr(IpAddr),
    Host(String),
    Range(IpNet),
}

/// Why a target string is not usable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TargetError {
    #[error("target {0:?}: empty")]
    Empty(String),
    #[error(
        "target {target:?}: range has {size} addresses; at most {MAX_RANGE} are allowed (split it)"
    )]
    RangeTooLarge { target: String, size: u128 },
    #[error("target {0:?}: not an address, a CIDR range or a host name")]
    Invalid(String),
}

impl FromStr for Target {
    type Err = TargetError;
    fn from_str(raw: &str) -> Result<Self, Self::Err> {
        let s = raw.trim();
        if s.is_empty() {
            return Err(TargetError::Empty(raw.to_owned()));
        }
        if let Ok(addr) = s.parse::<IpAddr>() {
            return Ok(Target::Addr(addr));
        }
        if s.contains('/') {
            let net: IpNet = s
                .parse()
                .map_err(|_| TargetError::Invalid(raw.to_owned()))?;
            let size = hosts_in(&net);
            if size > MAX_RANGE {
                return Err(TargetError::RangeTooLarge {
                    target: raw.to_owned(),
                    size,
                });
            }
            return Ok(Target::Range(net.trunc()));
        }
        let host_ok = s.len() <= 253
            && s.split('.').all(|label| {
                !label.is_empty()
                    && label.len() <= 63
                    && !label.starts_with('-')
                    && !label.ends_with('-')
                    && label
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'-')
            });
        if host_ok {
            Ok(Target::Host(s.to_ascii_lowercase()))
        } else {
            Err(TargetError::Invalid(raw.to_owned()))
        }
    }
}

/// Number of addresses `hosts()` yields for a network.
fn hosts_in(net: &IpNet) -> u128 {
    let bits = u32::from(net.max_prefix_len() - net.prefix_len());
    let all = 1u128.checked_shl(bits).unwrap_or(u128::MAX);
    match net {
        // IPv4 ranges larger than /31 exclude network and broadcast.
        IpNet::V4(_) if bits >= 2 => all - 2,
        // IPv6 ranges include every address (as `Ipv6Net::hosts` does).
        _ => all,
    }
}

impl Target {
    /// The addresses of an address or range target (hostnames need DNS).
    pub fn addresses(&self) -> Vec<IpAddr> {
        match self {
            Target::Addr(a) => vec![*a],
            Target::Range(net) => net.hosts().collect(),
            Target::Host(_) => Vec::new(),
        }
    }
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Target::Addr(a) => a.fmt(f),
            Target::Host(h) => h.fmt(f),
            Target::Range(n) => n.fmt(f),
        }
    }
}

impl<'de> serde::Deserialize<'de> for Target {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d)?
            .parse()
            .map_err(serde::de::Error::custom)
    }
}

/// Splits `HOST:REST` at its last colon, where an IPv6 host is written in
/// brackets (`[ADDR]:REST`); the host comes back without them. `None` when
/// there is no colon, the bracket is not closed, the host is empty, or an
/// IPv6 host lacks its brackets.
pub fn split_host(s: &str) -> Option<(&str, &str)> {
    let (host, rest) = s.rsplit_once(':')?;
    let host = match host.strip_prefix('[') {
        Some(h) => h.strip_suffix(']')?,
        None if host.contains(':') => return None,
        None => host,
    };
    (!host.is_empty()).then_some((host, rest))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_addresses_hosts_and_ranges() {
        assert_eq!("127.0.0.1".parse(), Ok(Target::Addr([127, 0, 0, 1].into())));
        assert_eq!("::1".parse::<Target>().unwrap().to_string(), "::1");
        assert_eq!(
            "Example.NET".parse(),
            Ok(Target::Host("example.net".into()))
        );
        let r: Target = "10.1.2.77/24".parse().unwrap();
        assert_eq!(r.to_string(), "10.1.2.0/24");
        let hosts = r.addresses();
        assert_eq!(hosts.len(), 254);
        assert_eq!(hosts[0].to_string(), "10.1.2.1");
        assert_eq!(
            "127.0.0.0/31".parse::<Target>().unwrap().addresses().len(),
            2
        );
        assert_eq!(
            "127.0.0.9/32".parse::<Target>().unwrap().addresses().len(),
            1
        );
        assert_eq!(
            "fd00::/120".parse::<Target>().unwrap().addresses().len(),
            256
        );
        assert_eq!(
            "10.0.0.0/16".parse::<Target>().unwrap().addresses().len(),
            65_534
        );
    }

    #[test]
    fn rejects_bad_targets_with_the_reason() {
        let e = "10.0.0.0/15".parse::<Target>().unwrap_err().to_string();
        assert!(e.contains("131070 addresses") && e.contains("65536"), "{e}");
        assert!(
            "fd00::/64"
                .parse::<Target>()
                .unwrap_err()
                .to_string()
                .contains("at most")
        );
        assert_eq!("".parse::<Target>(), Err(TargetError::Empty(String::new())));
        for bad in [
            "not a host",
            "-x.example",
            "a..b",
            "10.0.0.0/33",
            "1.2.3.4:80",
        ] {
            assert!(
                matches!(bad.parse::<Target>(), Err(TargetError::Invalid(_))),
                "{bad}"
            );
        }
    }
}
