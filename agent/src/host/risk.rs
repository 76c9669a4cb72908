//! The risk table for listening ports: service name and rating per
//! protocol and port, once for a socket reachable from the network and
//! once for one bound to loopback only. This is the one place the ratings
//! live; `[[ports.risk]]` entries in the agent config replace or add rows.
//!
//! The rule behind the rows: **high** for services that hand out a shell,
//! files or data without strong authentication when reachable (telnet,
//! FTP, TFTP, r-services, RDP, VNC, SMB/NetBIOS/MSRPC, caches and
//! databases that ship without authentication, container and cluster
//! control APIs); **medium** for authenticated remote access, mail,
//! directory services and databases with authentication; **low** for web,
//! DNS and time. A port missing from the table is `medium` when exposed
//! (unknown exposure deserves a look) and `low` on loopback; every row is
//! `low` on loopback unless configured otherwise.

use std::collections::HashMap;

use serde::Deserialize;

/// A rating.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Risk {
    Low,
    Medium,
    High,
}

impl Risk {
    pub fn as_str(self) -> &'static str {
        match self {
            Risk::Low => "low",
            Risk::Medium => "medium",
            Risk::High => "high",
        }
    }
}

/// A transport protocol of the table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    Tcp,
    Udp,
}

impl Protocol {
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
        }
    }
}

/// One row of the table, as written in the config (`[[ports.risk]]`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Rule {
    pub protocol: Protocol,
    pub port: u16,
    pub service: String,
    /// Rating when reachable from the network (any non-loopback address).
    pub exposed: Risk,
    /// Rating when bound to a loopback address only.
    #[serde(default = "low")]
    pub loopback: Risk,
}

fn low() -> Risk {
    Risk::Low
}

use Protocol::{Tcp, Udp};
use Risk::{High, Low, Medium};

/// The built-in rows: (protocol, port, service, rating when exposed).
pub const BUILT_IN: &[(Protocol, u16, &str, Risk)] = &[
    // Clear-text logins and file transfer.
    (Tcp, 21, "ftp", High),
    (Tcp, 23, "telnet", High),
    (Udp, 69, "tftp", High),
    (Tcp, 512, "rexec", High),
    (Tcp, 513, "rlogin", High),
    (Tcp, 514, "rsh", High),
    // Remote desktops.
    (Tcp, 3389, "rdp", High),
    (Udp, 3389, "rdp", High),
    (Tcp, 5900, "vnc", High),
    // Windows file sharing and RPC.
    (Tcp, 135, "msrpc", High),
    (Udp, 137, "netbios-ns", High),
    (Udp, 138, "netbios-dgm", High),
    (Tcp, 139, "netbios-ssn", High),
    (Tcp, 445, "smb", High),
    // Caches and databases that ship without authentication.
    (Tcp, 6379, "redis", High),
    (Tcp, 11211, "memcached", High),
    (Udp, 11211, "memcached", High),
    (Tcp, 27017, "mongodb", High),
    (Tcp, 9200, "elasticsearch", High),
    (Tcp, 5984, "couchdb", High),
    (Tcp, 2379, "etcd", High),
    // Control APIs.
    (Tcp, 2375, "docker", High),
    (Tcp, 10250, "kubelet", High),
    // Authenticated remote access.
    (Tcp, 22, "ssh", Medium),
    // Mail.
    (Tcp, 25, "smtp", Medium),
    (Tcp, 465, "smtps", Medium),
    (Tcp, 587, "submission", Medium),
    (Tcp, 110, "pop3", Medium),
    (Tcp, 995, "pop3s", Medium),
    (Tcp, 143, "imap", Medium),
    (Tcp, 993, "imaps", Medium),
    // Databases with authentication, directories, management.
    (Tcp, 3306, "mysql", Medium),
    (Tcp, 5432, "postgresql", Medium),
    (Tcp, 1433, "mssql", Medium),
    (Tcp, 1521, "oracle", Medium),
    (Tcp, 389, "ldap", Medium),
    (Tcp, 636, "ldaps", Medium),
    (Udp, 161, "snmp", Medium),
    // Web, DNS, time.
    (Tcp, 80, "http", Low),
    (Tcp, 443, "https", Low),
    (Udp, 443, "https", Low),
    (Tcp, 8080, "http-alt", Low),
    (Tcp, 8443, "https-alt", Low),
    (Tcp, 53, "dns", Low),
    (Udp, 53, "dns", Low),
    (Udp, 123, "ntp", Low),
];

/// The effective table: the built-in rows with the config's applied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Table {
    rows: HashMap<(Protocol, u16), (String, Risk, Risk)>,
}

impl Table {
    /// The built-in rows, then `overrides` (a row for the same protocol
    /// and port replaces the built-in one).
    pub fn new(overrides: &[Rule]) -> Self {
        let mut rows: HashMap<_, _> = BUILT_IN
            .iter()
            .map(|&(p, port, service, exposed)| ((p, port), (service.to_owned(), exposed, Low)))
            .collect();
        for r in overrides {
            rows.insert(
                (r.protocol, r.port),
                (r.service.clone(), r.exposed, r.loopback),
            );
        }
        Self { rows }
    }

    /// Service name ("" when unknown) and rating of a listening socket.
    pub fn rate(&self, protocol: Protocol, port: u16, loopback: bool) -> (&str, Risk) {
        match self.rows.get(&(protocol, port)) {
            Some((service, exposed, on_loopback)) => {
                (service, if loopback { *on_loopback } else { *exposed })
            }
            None => ("", if loopback { Low } else { Medium }),
        }
    }
}

impl Default for Table {
    fn default() -> Self {
        Self::new(&[])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn built_in_ratings_and_overrides() {
        let t = Table::default();
        assert_eq!(t.rate(Tcp, 23, false), ("telnet", High));
        assert_eq!(t.rate(Tcp, 6379, false), ("redis", High));
        assert_eq!(t.rate(Tcp, 6379, true), ("redis", Low));
        assert_eq!(t.rate(Tcp, 22, false), ("ssh", Medium));
        assert_eq!(t.rate(Tcp, 443, false), ("https", Low));
        assert_eq!(t.rate(Udp, 53, false), ("dns", Low));
        assert_eq!(t.rate(Udp, 23, false), ("", Medium), "telnet is TCP only");
        assert_eq!(t.rate(Tcp, 40000, true), ("", Low));
        let t = Table::new(&[
            Rule {
                protocol: Tcp,
                port: 22,
                service: "ssh-bastion".into(),
                exposed: High,
                loopback: Medium,
            },
            Rule {
                protocol: Tcp,
                port: 9999,
                service: "admin".into(),
                exposed: High,
                loopback: Low,
            },
        ]);
        assert_eq!(t.rate(Tcp, 22, false), ("ssh-bastion", High));
        assert_eq!(t.rate(Tcp, 22, true), ("ssh-bastion", Medium));
        assert_eq!(t.rate(Tcp, 9999, false), ("admin", High));
    }

    #[test]
    fn every_built_in_row_is_unique() {
        let mut seen = std::collections::HashSet::new();
        for (p, port, ..) in BUILT_IN {
            assert!(seen.insert((p, port)), "{p:?} {port} twice");
        }
    }
}
