//! The host's listening ports, from its own socket tables — not by
//! scanning: `/proc/self/net/{tcp,tcp6,udp,udp6}` (the agent's network
//! namespace) give protocol, address, port, owner uid and socket inode;
//! the `/proc/PID/fd` links (`socket:[INODE]`) give the owning process.
//! TCP sockets count in `LISTEN`, UDP sockets when bound and unconnected
//! (what `ss -tuln` lists).
//!
//! Another user's process is only visible with `CAP_SYS_PTRACE`, which the
//! packaged agent does not have: its sockets are still reported, with the
//! owner's user name and an empty program. Each socket is rated with the
//! [`risk`](super::risk) table.

use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::Path;

use sonde_proto::v1::{ListeningPort, ListeningPorts};

use super::risk::{Protocol, Table};

/// TCP state `LISTEN` and UDP's "unconnected" (`TCP_CLOSE`) in the tables.
const TCP_LISTEN: u8 = 0x0A;
const UDP_UNCONNECTED: u8 = 0x07;

/// One listening socket from a table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Socket {
    pub protocol: Protocol,
    pub address: IpAddr,
    pub port: u16,
    pub uid: u32,
    pub inode: u64,
}

/// A `/proc/net` address, `HEX:PORT`: the address is the in-memory
/// (network order) bytes printed as native 32-bit words.
fn parse_endpoint(field: &str) -> Option<(IpAddr, u16)> {
    let (addr, port) = field.split_once(':')?;
    let port = u16::from_str_radix(port, 16).ok()?;
    let word = |i: usize| -> Option<[u8; 4]> {
        let w = u32::from_str_radix(addr.get(i * 8..i * 8 + 8)?, 16).ok()?;
        Some(w.to_ne_bytes())
    };
    let ip = match addr.len() {
        8 => IpAddr::V4(Ipv4Addr::from(word(0)?)),
        32 => {
            let mut b = [0u8; 16];
            for i in 0..4 {
                b[i * 4..i * 4 + 4].copy_from_slice(&word(i)?);
            }
            IpAddr::V6(Ipv6Addr::from(b))
        }
        _ => return None,
    };
    Some((ip, port))
}

/// The listening sockets of one table's text.
pub fn parse_table(text: &str, protocol: Protocol) -> Vec<Socket> {
    let wanted = match protocol {
        Protocol::Tcp => TCP_LISTEN,
        Protocol::Udp => UDP_UNCONNECTED,
    };
    text.lines()
        .skip(1)
        .filter_map(|line| {
            let f: Vec<&str> = line.split_ascii_whitespace().collect();
            let state = u8::from_str_radix(f.get(3)?, 16).ok()?;
            if state != wanted {
                return None;
            }
            let (address, port) = parse_endpoint(f.get(1)?)?;
            let (_, remote_port) = parse_endpoint(f.get(2)?)?;
            if protocol == Protocol::Udp && remote_port != 0 {
                return None;
            }
            Some(Socket {
                protocol,
                address,
                port,
                uid: f.get(7)?.parse().ok()?,
                inode: f.get(9)?.parse().ok()?,
            })
        })
        .collect()
}

/// Socket inode → (PID, program) for every process whose descriptors the
/// agent may read.
pub fn socket_owners(proc: &Path) -> HashMap<u64, (u32, String)> {
    let mut owners = HashMap::new();
    let Ok(dir) = std::fs::read_dir(proc) else {
        return owners;
    };
    for entry in dir.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        let Ok(fds) = std::fs::read_dir(entry.path().join("fd")) else {
            continue; // gone, or another user's
        };
        let mut comm = None;
        for fd in fds.flatten() {
            let Ok(link) = std::fs::read_link(fd.path()) else {
                continue;
            };
            let Some(inode) = link
                .to_str()
                .and_then(|l| l.strip_prefix("socket:["))
                .and_then(|l| l.strip_suffix(']'))
                .and_then(|l| l.parse::<u64>().ok())
            else {
                continue;
            };
            let name = comm.get_or_insert_with(|| {
                std::fs::read_to_string(entry.path().join("comm"))
                    .map(|c| c.trim_end().to_owned())
                    .unwrap_or_default()
            });
            owners.entry(inode).or_insert_with(|| (pid, name.clone()));
        }
    }
    owners
}

/// Owners found by the last scan of `/proc/*/fd`, kept between snapshots:
/// an owner never changes for a socket inode, so the (costly: one
/// `readlink` per descriptor of every process) scan runs again only when a
/// socket appears that the last scan has not seen.
#[derive(Debug, Default)]
pub struct Owners {
    found: HashMap<u64, (u32, String)>,
    scanned: std::collections::HashSet<u64>,
    /// Scans done, for tests.
    pub scans: u32,
}

impl Owners {
    fn refresh(&mut self, proc: &Path, sockets: &[Socket]) {
        if sockets.iter().all(|s| self.scanned.contains(&s.inode)) {
            return;
        }
        self.found = socket_owners(proc);
        self.scanned = sockets.iter().map(|s| s.inode).collect();
        self.scans += 1;
    }
}

/// A user name for a uid ("" when it has none).
fn user_name(uid: u32, cache: &mut HashMap<u32, String>) -> String {
    cache
        .entry(uid)
        .or_insert_with(|| {
            nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(uid))
                .ok()
                .flatten()
                .map(|u| u.name)
                .unwrap_or_default()
        })
        .clone()
}

/// Reads the tables under `proc` (normally `/proc`) and rates each port.
/// One entry per (protocol, address, port): workers sharing a socket and
/// `SO_REUSEPORT` groups are one port.
pub fn snapshot(proc: &Path, table: &Table, owners: &mut Owners, now_ns: i64) -> ListeningPorts {
    let mut errors = Vec::new();
    let mut sockets = Vec::new();
    for (file, protocol) in [
        ("tcp", Protocol::Tcp),
        ("tcp6", Protocol::Tcp),
        ("udp", Protocol::Udp),
        ("udp6", Protocol::Udp),
    ] {
        let path = proc.join("self/net").join(file);
        match std::fs::read_to_string(&path) {
            Ok(text) => sockets.extend(parse_table(&text, protocol)),
            // No IPv6 in this kernel: nothing listens there.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && file.ends_with('6') => {}
            Err(e) => errors.push(format!("{}: {e}", path.display())),
        }
    }
    owners.refresh(proc, &sockets);
    let owners = &owners.found;
    let mut users = HashMap::new();
    let mut ports: BTreeMap<(&str, u16, IpAddr), ListeningPort> = BTreeMap::new();
    for s in &sockets {
        let key = (s.protocol.as_str(), s.port, s.address);
        let owner = owners.get(&s.inode);
        if let Some(p) = ports.get_mut(&key) {
            if p.pid == 0
                && let Some((pid, program)) = owner
            {
                (p.pid, p.program) = (*pid, program.clone());
            }
            continue;
        }
        let loopback = s.address.is_loopback();
        let (service, risk) = table.rate(s.protocol, s.port, loopback);
        let (pid, program) = owner.cloned().unwrap_or_default();
        ports.insert(
            key,
            ListeningPort {
                protocol: s.protocol.as_str().to_owned(),
                address: s.address.to_string(),
                port: u32::from(s.port),
                program,
                pid,
                uid: s.uid,
                user: user_name(s.uid, &mut users),
                loopback,
                service: service.to_owned(),
                risk: risk.as_str().to_owned(),
            },
        );
    }
    ListeningPorts {
        at_unix_nanos: now_ns,
        ports: ports.into_values().collect(),
        error: errors.join("; "),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TCP: &str = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 0100007F:0277 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1001 1 0000000000000000 100 0 0 10 0
   1: 00000000:0017 00000000:0000 0A 00000000:00000000 00:00000000 00000000   105        0 1002 1 0000000000000000 100 0 0 10 0
   2: 0100007F:9C40 0100007F:0277 01 00000000:00000000 00:00000000 00000000     0        0 1003 1 0000000000000000 20 4 30 10 -1
";
    const TCP6: &str = "  sl  local_address                         remote_address                        st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 00000000000000000000000000000000:0016 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 2001 1 0000000000000000 100 0 0 10 0
   1: 00000000000000000000000001000000:1F90 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 2002 1 0000000000000000 100 0 0 10 0
";
    const UDP: &str = "   sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode ref pointer drops
  100: 00000000:0035 00000000:0000 07 00000000:00000000 00:00000000 00000000     0        0 3001 2 0000000000000000 0
  101: 0100007F:D431 0100007F:0035 01 00000000:00000000 00:00000000 00000000     0        0 3002 2 0000000000000000 0
";

    #[test]
    fn parses_listening_sockets_only() {
        let tcp = parse_table(TCP, Protocol::Tcp);
        assert_eq!(
            tcp,
            [
                Socket {
                    protocol: Protocol::Tcp,
                    address: "127.0.0.1".parse().unwrap(),
                    port: 631,
                    uid: 0,
                    inode: 1001
                },
                Socket {
                    protocol: Protocol::Tcp,
                    address: "0.0.0.0".parse().unwrap(),
                    port: 23,
                    uid: 105,
                    inode: 1002
                },
            ],
            "the established connection is not a listener"
        );
        let tcp6 = parse_table(TCP6, Protocol::Tcp);
        let got: Vec<(String, u16)> = tcp6
            .iter()
            .map(|s| (s.address.to_string(), s.port))
            .collect();
        assert_eq!(got, [("::".into(), 22), ("::1".into(), 8080)]);
        let udp = parse_table(UDP, Protocol::Udp);
        assert_eq!(udp.len(), 1, "a connected UDP socket is a client");
        assert_eq!((udp[0].port, udp[0].inode), (53, 3001));
    }

    #[test]
    fn snapshot_of_a_real_listener_names_this_process() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let mut owners = Owners::default();
        let snap = snapshot(Path::new("/proc"), &Table::default(), &mut owners, 7);
        assert_eq!(snap.error, "");
        let mine = snap
            .ports
            .iter()
            .find(|p| p.protocol == "tcp" && p.port == u32::from(port))
            .expect("own listener reported");
        assert_eq!(mine.pid, std::process::id());
        let comm = std::fs::read_to_string("/proc/self/comm").unwrap();
        assert_eq!(mine.program, comm.trim_end());
        assert!(mine.loopback);
        assert_eq!(
            (mine.address.as_str(), mine.risk.as_str()),
            ("127.0.0.1", "low")
        );
        assert_eq!(mine.uid, nix::unistd::getuid().as_raw());
        let _ = snapshot(Path::new("/proc"), &Table::default(), &mut owners, 8);
        assert_eq!(owners.scans, 1, "nothing new: no second scan of /proc/*/fd");
        drop(listener);
        let snap = snapshot(Path::new("/proc"), &Table::default(), &mut owners, 9);
        assert!(
            !snap
                .ports
                .iter()
                .any(|p| p.protocol == "tcp" && p.port == u32::from(port))
        );
    }
}
