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
    #[error(
        "target {0:?}: IPv6 link-local addresses (fe80::/10) need an interface scope, which \
         probes do not carry; probe a global or unique-local address"
    )]
    LinkLocal(String),
}

/// Whether `a` is IPv6 link-local (`fe80::/10`).
fn link_local(a: &IpAddr) -> bool {
    matches!(a, IpAddr::V6(v6) if v6.segments()[0] & 0xffc0 == 0xfe80)
}

impl FromStr for Target {
    type Err = TargetError;
    fn from_str(raw: &str) -> Result<Self, Self::Err> {
        let s = raw.trim();
        if s.is_empty() {
            return Err(TargetError::Empty(raw.to_owned()));
        }
        if let Ok(addr) = s.parse::<IpAddr>() {
            if link_local(&addr) {
                return Err(TargetError::LinkLocal(raw.to_owned()));
            }
            return Ok(Target::Addr(addr));
        }
        // `fe80::1%eth0`: a scoped address.
        if let Some((addr, _scope)) = s.split_once('%')
            && addr.parse::<IpAddr>().is_ok_and(|a| link_local(&a))
        {
            return Err(TargetError::LinkLocal(raw.to_owned()));
        }
        // Resolvers read a name ending in a number the way `inet_aton`
        // does (`2130706433`, `0177.0.0.1`, `0x7f.1`, `127.000.000.001`):
        // it is that address, or nothing (WHATWG URL's rule).
        if ends_in_number(s) {
            return inet_aton(s)
                .map(|a| Target::Addr(IpAddr::V4(a)))
                .ok_or_else(|| TargetError::Invalid(raw.to_owned()));
        }
        if s.contains('/') {
            let net: IpNet = s
                .parse()
                .map_err(|_| TargetError::Invalid(raw.to_owned()))?;
            if let IpNet::V6(v6) = net {
                let ll: ipnet::Ipv6Net = "fe80::/10".parse().unwrap_or_default();
                if ll.contains(&v6.network()) || v6.contains(&ll.network()) {
                    return Err(TargetError::LinkLocal(raw.to_owned()));
                }
            }
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

/// Whether the last label of a dotted name (a trailing dot aside) is a
/// number: decimal digits, or `0x` and hex digits.
fn ends_in_number(s: &str) -> bool {
    let s = s.strip_suffix('.').unwrap_or(s);
    let last = s.rsplit('.').next().unwrap_or(s);
    if last.is_empty() {
        return false;
    }
    if last.bytes().all(|b| b.is_ascii_digit()) {
        return true;
    }
    last.strip_prefix("0x")
        .or_else(|| last.strip_prefix("0X"))
        .is_some_and(|h| h.bytes().all(|b| b.is_ascii_hexdigit()))
}

/// The IPv4 address `inet_aton` makes of `s`: one to four parts, each
/// decimal, octal (leading `0`) or hex (`0x`); the last part fills the
/// remaining bytes. `None` when it is not such a number or overflows.
fn inet_aton(s: &str) -> Option<std::net::Ipv4Addr> {
    let s = s.strip_suffix('.').unwrap_or(s);
    let parts: Vec<&str> = s.split('.').collect();
    if parts.is_empty() || parts.len() > 4 {
        return None;
    }
    let mut nums = Vec::with_capacity(parts.len());
    for p in &parts {
        let (digits, radix) = if let Some(h) = p.strip_prefix("0x").or_else(|| p.strip_prefix("0X"))
        {
            (h, 16)
        } else if p.len() > 1 && p.starts_with('0') {
            (&p[1..], 8)
        } else {
            (*p, 10)
        };
        let n = if digits.is_empty() {
            // "0x" alone is 0, as inet_aton reads it.
            0
        } else if digits.bytes().all(|b| b.is_ascii_alphanumeric()) {
            u64::from_str_radix(digits, radix).ok()?
        } else {
            return None;
        };
        nums.push(n);
    }
    let (last, first) = nums.split_last()?;
    if first.iter().any(|n| *n > 255) {
        return None;
    }
    let rest_bits = 8 * (4 - first.len());
    if *last >= 1u64 << rest_bits {
        return None;
    }
    let mut v: u64 = 0;
    for (i, n) in first.iter().enumerate() {
        v |= n << (8 * (3 - i));
    }
    v |= last;
    u32::try_from(v).ok().map(std::net::Ipv4Addr::from)
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
    fn numeric_host_names_are_the_addresses_resolvers_make_of_them() {
        let addr = |s: &str| s.parse::<Target>().map(|t| t.to_string());
        for (spelling, want) in [
            ("2130707713", "127.0.5.1"),
            ("0177.0.5.3", "127.0.5.3"),
            ("127.000.000.001", "127.0.0.1"),
            ("0x7f000001", "127.0.0.1"),
            ("0x7f.1", "127.0.0.1"),
            ("127.1", "127.0.0.1"),
            ("127.0.1", "127.0.0.1"),
            ("0X7F.0.0X5.1", "127.0.5.1"),
            ("127.0.5.1.", "127.0.5.1"),
        ] {
            assert_eq!(addr(spelling), Ok(want.to_owned()), "{spelling}");
        }
        // Ending in a number but no address: refused, never a host name.
        for bad in [
            "4294967296",
            "1.2.3.4.5",
            "256.1.1.1",
            "08.1.1.1",
            "host.123",
            "0x1g.1",
        ] {
            assert!(
                matches!(bad.parse::<Target>(), Err(TargetError::Invalid(_))),
                "{bad}: {:?}",
                bad.parse::<Target>()
            );
        }
        // A label that only starts with digits is a name.
        assert_eq!(addr("1host.example"), Ok("1host.example".to_owned()));
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
        for ll in [
            "fe80::1",
            "FE80::1%eth0",
            "fe80::/64",
            "febf::1",
            "fe80::/9",
        ] {
            assert_eq!(
                ll.parse::<Target>(),
                Err(TargetError::LinkLocal(ll.to_owned())),
                "{ll}"
            );
        }
        assert!("fec0::1".parse::<Target>().is_ok());
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
