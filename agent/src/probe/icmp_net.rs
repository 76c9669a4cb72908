//! Real ICMP sockets for the echo engine: one socket per address family,
//! shared by every target.
//!
//! Mode: an unprivileged `SOCK_DGRAM` ICMP socket when
//! `net.ipv4.ping_group_range` admits our group (the kernel then picks the
//! identifier and delivers only our replies), otherwise a raw socket (needs
//! `CAP_NET_RAW`). The choice is logged.
//!
//! What we do that surge-ping's client does not (see the issue's
//! measurements): a classic BPF filter on raw sockets keeps only echo
//! replies carrying our identifier and the ICMP errors echo requests can
//! cause — a raw socket otherwise also receives every echo *request* on the
//! host, and a full buffer turns into loss; a 4 MiB receive buffer
//! (`SO_RCVBUFFORCE` when allowed) absorbs scheduling stalls; receive times
//! come from the kernel (`SO_TIMESTAMPNS`), so time a reply spent waiting
//! for us is not RTT; no per-packet `getsockname`, no shared lock. Replies
//! are decoded with surge-ping's packet decoders.

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::os::fd::AsRawFd;

use nix::sys::socket::{
    ControlMessageOwned, MsgFlags, SockaddrStorage, recvmsg, setsockopt, sockopt,
};
use nix::sys::time::TimeSpec;
use socket2::{Domain, Protocol, SockAddr, SockFilter, Socket, Type};
use tokio::io::Interest;
use tokio::io::unix::AsyncFd;

use sonde_runtime::clock::unix_nanos;

use super::icmp::{Network, Reply, ReplyKind};

/// Receive buffer asked for on each socket.
pub const RECV_BUFFER: usize = 4 << 20;

/// Which kind of socket the engine uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Unprivileged ICMP datagram sockets.
    Dgram,
    /// Raw sockets (`CAP_NET_RAW`).
    Raw,
}

struct Sock {
    fd: AsyncFd<Socket>,
    v6: bool,
}

/// The engine's sockets.
pub struct IcmpSockets {
    v4: Option<Sock>,
    v6: Option<Sock>,
    mode: Mode,
    ident: u16,
}

impl std::fmt::Debug for IcmpSockets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IcmpSockets")
            .field("mode", &self.mode)
            .field("v4", &self.v4.is_some())
            .field("v6", &self.v6.is_some())
            .finish_non_exhaustive()
    }
}

/// Accept echo replies with identifier `ident` and ICMP errors (types 3, 11)
/// on a raw IPv4 socket (packets start with the IP header).
fn filter_v4(ident: u16) -> [SockFilter; 9] {
    [
        SockFilter::new(0xb1, 0, 0, 0), // ldxb 4*([0]&0xf): X = IP header length
        SockFilter::new(0x50, 0, 0, 0), // ldb [x+0]: ICMP type
        SockFilter::new(0x15, 0, 2, 0), // echo reply? else -> 5
        SockFilter::new(0x48, 0, 0, 4), // ldh [x+4]: identifier
        SockFilter::new(0x15, 2, 3, u32::from(ident)), // ours -> accept, else reject
        SockFilter::new(0x15, 1, 0, 3), // destination unreachable -> accept
        SockFilter::new(0x15, 0, 1, 11), // time exceeded -> accept, else reject
        SockFilter::new(0x06, 0, 0, 0xffff), // accept
        SockFilter::new(0x06, 0, 0, 0), // reject
    ]
}

/// The same for a raw `ICMPv6` socket (packets start with the `ICMPv6` header).
fn filter_v6(ident: u16) -> [SockFilter; 8] {
    [
        SockFilter::new(0x30, 0, 0, 0),                // ldb [0]: ICMPv6 type
        SockFilter::new(0x15, 0, 2, 129),              // echo reply? else -> 4
        SockFilter::new(0x28, 0, 0, 4),                // ldh [4]: identifier
        SockFilter::new(0x15, 2, 3, u32::from(ident)), // ours -> accept, else reject
        SockFilter::new(0x15, 1, 0, 1),                // destination unreachable -> accept
        SockFilter::new(0x15, 0, 1, 3),                // time exceeded -> accept, else reject
        SockFilter::new(0x06, 0, 0, 0xffff),           // accept
        SockFilter::new(0x06, 0, 0, 0),                // reject
    ]
}

/// An ICMP socket of `mode` (non-blocking, big receive buffer, kernel
/// timestamps; on raw sockets the filter for `ident`), not yet registered.
pub(super) fn icmp_socket(v6: bool, mode: Mode, ident: u16) -> io::Result<Socket> {
    let (domain, proto) = if v6 {
        (Domain::IPV6, Protocol::ICMPV6)
    } else {
        (Domain::IPV4, Protocol::ICMPV4)
    };
    let ty = match mode {
        Mode::Dgram => Type::DGRAM,
        Mode::Raw => Type::RAW,
    };
    let socket = Socket::new(domain, ty, Some(proto))?;
    socket.set_nonblocking(true)?;
    let size = RECV_BUFFER;
    if setsockopt(&socket, sockopt::RcvBufForce, &size).is_err() {
        socket.set_recv_buffer_size(size)?;
    }
    setsockopt(&socket, sockopt::ReceiveTimestampns, &true).map_err(io::Error::from)?;
    match (mode, v6) {
        (Mode::Raw, false) => socket.attach_filter(&filter_v4(ident))?,
        (Mode::Raw, true) => {
            socket.attach_filter(&filter_v6(ident))?;
            setsockopt(&socket, sockopt::Ipv6RecvHopLimit, &true).map_err(io::Error::from)?;
        }
        (Mode::Dgram, false) => {
            setsockopt(&socket, sockopt::Ipv4RecvTtl, &true).map_err(io::Error::from)?;
        }
        (Mode::Dgram, true) => {
            setsockopt(&socket, sockopt::Ipv6RecvHopLimit, &true).map_err(io::Error::from)?;
        }
    }
    Ok(socket)
}

fn open(v6: bool, mode: Mode, ident: u16) -> io::Result<Sock> {
    let socket = icmp_socket(v6, mode, ident)?;
    Ok(Sock {
        fd: register(socket, Interest::READABLE)?,
        v6,
    })
}

/// Registers a socket with tokio's reactor.
#[allow(unsafe_code)]
pub(super) fn register(socket: Socket, interest: Interest) -> io::Result<AsyncFd<Socket>> {
    // SAFETY (reviewed): `socket` owns its descriptor — socket2 closes it on
    // drop and never earlier — and it is moved into the `AsyncFd`, so the
    // descriptor stays open and `as_raw_fd` returns the same value for the
    // `AsyncFd`'s whole lifetime, which is what `register` requires.
    Ok(unsafe { AsyncFd::register_with_interest(socket, interest) }?)
}

impl IcmpSockets {
    /// Opens IPv4 and IPv6 sockets, preferring unprivileged datagram
    /// sockets. A family that cannot be opened (no IPv6 on the host) is left
    /// out with a warning; failing both is an error.
    pub fn open() -> io::Result<Self> {
        let ident: u16 = rand::random();
        for mode in [Mode::Dgram, Mode::Raw] {
            let v4 = open(false, mode, ident);
            if v4
                .as_ref()
                .is_err_and(|e| e.kind() == io::ErrorKind::PermissionDenied)
            {
                continue; // not allowed in this mode: try the next
            }
            let v6 = open(true, mode, ident);
            let (v4, v6) = (v4.ok(), v6.ok());
            if v4.is_none() && v6.is_none() {
                continue;
            }
            if v6.is_none() {
                tracing::warn!("no IPv6 ICMP socket; IPv6 targets will fail to send");
            }
            tracing::info!(
                mode = match mode {
                    Mode::Dgram => "unprivileged datagram (ping_group_range)",
                    Mode::Raw => "raw (CAP_NET_RAW) with BPF filter",
                },
                "ICMP sockets opened"
            );
            return Ok(Self {
                v4,
                v6,
                mode,
                ident,
            });
        }
        Err(io::Error::new(
            io::ErrorKind::PermissionDenied,
            "cannot open ICMP sockets: neither net.ipv4.ping_group_range admits this group nor is CAP_NET_RAW available",
        ))
    }

    /// The mode in use.
    pub fn mode(&self) -> Mode {
        self.mode
    }

    fn sock(&self, v6: bool) -> Option<&Sock> {
        if v6 {
            self.v6.as_ref()
        } else {
            self.v4.as_ref()
        }
    }
}

/// An echo request: type, code, checksum, identifier, sequence, payload.
/// `ICMPv6` checksums are filled in by the kernel; datagram sockets replace
/// the identifier and fix the checksum themselves.
pub fn echo_request(v6: bool, ident: u16, seq: u16, payload: &[u8]) -> Vec<u8> {
    let mut p = Vec::with_capacity(8 + payload.len());
    p.extend_from_slice(&[if v6 { 128 } else { 8 }, 0, 0, 0]);
    p.extend_from_slice(&ident.to_be_bytes());
    p.extend_from_slice(&seq.to_be_bytes());
    p.extend_from_slice(payload);
    if !v6 {
        let sum = checksum(&p);
        p[2..4].copy_from_slice(&sum.to_be_bytes());
    }
    p
}

/// The Internet checksum (RFC 1071).
pub fn checksum(data: &[u8]) -> u16 {
    let mut sum: u32 = data
        .chunks(2)
        .map(|c| u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)])))
        .sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !u16::try_from(sum).unwrap_or(0)
}

pub(super) fn nanos(ts: TimeSpec) -> i64 {
    ts.tv_sec()
        .saturating_mul(1_000_000_000)
        .saturating_add(ts.tv_nsec())
}

impl IcmpSockets {
    /// Reads one datagram; `Ok(None)` when it is not a reply of ours.
    fn recv_one(&self, sock: &Sock) -> io::Result<Option<Reply>> {
        let mut buf = [0u8; 1600];
        let mut iov = [io::IoSliceMut::new(&mut buf)];
        let mut cmsg = nix::cmsg_space!(TimeSpec, i32);
        let fd = sock.fd.get_ref().as_raw_fd();
        let msg = recvmsg::<SockaddrStorage>(fd, &mut iov, Some(&mut cmsg), MsgFlags::MSG_DONTWAIT)
            .map_err(io::Error::from)?;
        let (mut rx, mut hops) = (None, None);
        for c in msg.cmsgs().map_err(io::Error::from)? {
            match c {
                ControlMessageOwned::ScmTimestampns(ts) => rx = Some(nanos(ts)),
                ControlMessageOwned::Ipv4Ttl(t) => hops = u8::try_from(t).ok(),
                ControlMessageOwned::Ipv6HopLimit(h) => hops = u8::try_from(h).ok(),
                _ => {}
            }
        }
        let from = msg.address.and_then(|a: SockaddrStorage| {
            a.as_sockaddr_in()
                .map(|s| IpAddr::V4(s.ip()))
                .or_else(|| a.as_sockaddr_in6().map(|s| IpAddr::V6(s.ip())))
        });
        let n = msg.bytes;
        let data = &buf[..n];
        let rx_unix_nanos = rx.unwrap_or_else(unix_nanos);
        let raw = self.mode == Mode::Raw;
        let decoded = if sock.v6 {
            let src = match from {
                Some(IpAddr::V6(a)) => a,
                _ => Ipv6Addr::UNSPECIFIED,
            };
            surge_ping::Icmpv6Packet::decode(data, src).ok().map(|p| {
                let echo = p.get_icmpv6_type().0 == 129;
                (
                    IpAddr::V6(p.get_real_dest()),
                    p.get_identifier().0,
                    p.get_sequence().0,
                    echo,
                    p.get_icmpv6_type().0,
                    p.get_icmpv6_code().0,
                    hops.unwrap_or(0),
                )
            })
        } else {
            let src = match from {
                Some(IpAddr::V4(a)) => a,
                _ => Ipv4Addr::UNSPECIFIED,
            };
            let ty = if raw { Type::RAW } else { Type::DGRAM };
            surge_ping::Icmpv4Packet::decode(data, ty, src, Ipv4Addr::UNSPECIFIED)
                .ok()
                .map(|p| {
                    let echo = p.get_icmp_type().0 == 0;
                    (
                        IpAddr::V4(p.get_real_dest()),
                        p.get_identifier().0,
                        p.get_sequence().0,
                        echo,
                        p.get_icmp_type().0,
                        p.get_icmp_code().0,
                        p.get_ttl().or(hops).unwrap_or(0),
                    )
                })
        };
        let Some((addr, ident, seq, echo, ty, code, ttl)) = decoded else {
            return Ok(None);
        };
        // Raw sockets see everyone's ICMP errors; datagram sockets rewrite the
        // identifier and only deliver ours.
        if raw && ident != self.ident {
            return Ok(None);
        }
        let kind = if echo {
            ReplyKind::Echo { ttl }
        } else {
            ReplyKind::Error {
                what: describe_error(sock.v6, ty, code),
            }
        };
        Ok(Some(Reply {
            addr,
            seq,
            kind,
            rx_unix_nanos,
        }))
    }

    async fn recv_from(&self, sock: &Sock) -> io::Result<Reply> {
        loop {
            let mut guard = sock.fd.readable().await?;
            match guard.try_io(|_| self.recv_one(sock)) {
                Ok(Ok(Some(reply))) => return Ok(reply),
                Ok(Ok(None)) => {}
                Ok(Err(e)) => return Err(e),
                Err(_would_block) => {}
            }
        }
    }
}

fn describe_error(v6: bool, ty: u8, code: u8) -> String {
    let what = match (v6, ty, code) {
        (false, 3, 0) | (true, 1, 0) => "network unreachable",
        (false, 3, 1) | (true, 1, 3) => "host unreachable",
        (false, 3, 3) | (true, 1, 4) => "port unreachable",
        (false, 3, 9 | 10 | 13) | (true, 1, 1) => "administratively prohibited",
        (false, 3, _) | (true, 1, _) => "destination unreachable",
        (false, 11, _) | (true, 3, _) => "time exceeded",
        _ => "ICMP error",
    };
    format!("{what} (type {ty} code {code})")
}

impl Network for IcmpSockets {
    fn send(&self, addr: IpAddr, seq: u16, payload: &[u8]) -> io::Result<i64> {
        let v6 = addr.is_ipv6();
        let sock = self.sock(v6).ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::Unsupported,
                format!("no ICMP socket for {addr}"),
            )
        })?;
        let packet = echo_request(v6, self.ident, seq, payload);
        let to = SockAddr::from(SocketAddr::new(addr, 0));
        let sent = unix_nanos();
        sock.fd.get_ref().send_to(&packet, &to)?;
        Ok(sent)
    }

    async fn recv(&self) -> io::Result<Reply> {
        match (&self.v4, &self.v6) {
            (Some(a), Some(b)) => tokio::select! {
                r = self.recv_from(a) => r,
                r = self.recv_from(b) => r,
            },
            (Some(a), None) | (None, Some(a)) => self.recv_from(a).await,
            (None, None) => std::future::pending().await,
        }
    }

    fn now_unix_nanos(&self) -> i64 {
        unix_nanos()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn echo_request_has_a_valid_checksum() {
        let p = echo_request(false, 0x1234, 7, b"abc");
        assert_eq!(&p[..2], &[8, 0]);
        assert_eq!(&p[4..8], &[0x12, 0x34, 0, 7]);
        // A packet including its checksum sums to zero.
        assert_eq!(checksum(&p), 0);
        let p6 = echo_request(true, 1, 2, b"");
        assert_eq!(p6, vec![128, 0, 0, 0, 0, 1, 0, 2]);
    }
}
