//! Real sockets for the traceroute engine, one per trace.
//!
//! Answers from routers (time exceeded, unreachable) are read from the
//! socket's error queue (`IP_RECVERR` / `IPV6_RECVERR`), which works for
//! unprivileged UDP and ping sockets as well as raw ones: the kernel matches
//! the quoted packet to our socket and hands back the offender's address,
//! the ICMP type and code, the quoted data and (with `SO_TIMESTAMPNS`) the
//! receive time.
//!
//! Flow identifiers are constant per trace (Paris traceroute):
//! - UDP: one unconnected socket bound to one source port, every probe to
//!   the same destination port. The probe id travels in the payload, which
//!   the error queue returns (Linux routers quote it; a router quoting only
//!   the 8 bytes RFC 792 requires leaves the answer unmatched, shown as `*`).
//! - ICMP: one echo identifier for the trace; the probe id is the sequence
//!   number and the first two payload bytes are its one's complement, so
//!   the ICMP checksum is the same for every probe. Ping (datagram) sockets
//!   when `ping_group_range` allows, raw otherwise, as for the echo engine.
//!
//! An ICMP error also sets the socket's pending error, which fails the next
//! send once (and clears it); `send` retries once for that reason.

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::os::fd::AsRawFd;
use std::sync::Mutex;

use nix::sys::socket::{
    ControlMessageOwned, MsgFlags, SockaddrStorage, recvmsg, setsockopt, sockopt,
};
use nix::sys::time::TimeSpec;
use socket2::{Domain, Protocol, SockAddr, Socket, Type};
use sonde_runtime::clock::unix_nanos;
use sonde_runtime::probes::TraceMethod;
use tokio::io::Interest;
use tokio::io::unix::AsyncFd;

use super::icmp_net::{Mode, echo_request, icmp_socket, nanos, register};
use super::trace::{Answer, TraceSocket, TraceTarget, Tracer};

/// Marks our UDP probe payloads.
const UDP_MAGIC: &[u8; 6] = b"sonde\0";

/// Opens per-trace sockets; remembers which ICMP socket mode works.
#[derive(Debug, Default)]
pub struct SystemTracer {
    icmp_mode: Mutex<Option<Mode>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Udp,
    Icmp(Mode, u16),
}

/// The socket of one trace.
#[derive(Debug)]
pub struct NetSocket {
    fd: AsyncFd<Socket>,
    kind: Kind,
    to: SockAddr,
    v6: bool,
}

impl SystemTracer {
    fn icmp(&self, v6: bool, ident: u16) -> io::Result<(Socket, Mode)> {
        let known = *self.icmp_mode.lock().expect("not poisoned");
        let modes: &[Mode] = match known {
            Some(m) => &[m][..],
            None => &[Mode::Dgram, Mode::Raw][..],
        };
        let mut last = io::Error::other("no ICMP socket mode");
        for &mode in modes {
            match icmp_socket(v6, mode, ident) {
                Ok(s) => {
                    if known.is_none() && !v6 {
                        *self.icmp_mode.lock().expect("not poisoned") = Some(mode);
                    }
                    return Ok((s, mode));
                }
                Err(e) => last = e,
            }
        }
        Err(last)
    }
}

impl Tracer for SystemTracer {
    type Socket = NetSocket;

    fn open(&self, target: &TraceTarget) -> io::Result<NetSocket> {
        let v6 = target.addr.is_ipv6();
        let (socket, kind, port) = match target.method {
            TraceMethod::Udp => {
                let domain = if v6 { Domain::IPV6 } else { Domain::IPV4 };
                let s = Socket::new(domain, Type::DGRAM, Some(Protocol::UDP))?;
                s.set_nonblocking(true)?;
                let any: IpAddr = if v6 {
                    Ipv6Addr::UNSPECIFIED.into()
                } else {
                    Ipv4Addr::UNSPECIFIED.into()
                };
                // One source port for the whole trace.
                s.bind(&SocketAddr::new(any, 0).into())?;
                setsockopt(&s, sockopt::ReceiveTimestampns, &true).map_err(io::Error::from)?;
                (s, Kind::Udp, target.port)
            }
            TraceMethod::Icmp => {
                let ident: u16 = rand::random();
                let (s, mode) = self.icmp(v6, ident)?;
                (s, Kind::Icmp(mode, ident), 0)
            }
        };
        if v6 {
            setsockopt(&socket, sockopt::Ipv6RecvErr, &true).map_err(io::Error::from)?;
        } else {
            setsockopt(&socket, sockopt::Ipv4RecvErr, &true).map_err(io::Error::from)?;
        }
        Ok(NetSocket {
            fd: register(socket, Interest::READABLE | Interest::ERROR)?,
            kind,
            to: SocketAddr::new(target.addr, port).into(),
            v6,
        })
    }

    fn now_unix_nanos(&self) -> i64 {
        unix_nanos()
    }
}

impl NetSocket {
    fn packet(&self, id: u16) -> Vec<u8> {
        match self.kind {
            Kind::Udp => {
                let mut p = UDP_MAGIC.to_vec();
                p.extend_from_slice(&id.to_be_bytes());
                p
            }
            Kind::Icmp(_, ident) => {
                // seq + !seq is constant: so is the checksum.
                let mut payload = (!id).to_be_bytes().to_vec();
                payload.extend_from_slice(b"sonde-trace");
                echo_request(self.v6, ident, id, &payload)
            }
        }
    }

    /// Reads one message from the error queue: a router's or the
    /// destination's ICMP error about one of our probes.
    fn recv_error(&self) -> io::Result<Option<Answer>> {
        let fd = self.fd.get_ref().as_raw_fd();
        let mut buf = [0u8; 512];
        let mut iov = [io::IoSliceMut::new(&mut buf)];
        let mut cmsg = nix::cmsg_space!(
            nix::libc::sock_extended_err,
            nix::libc::sockaddr_in6,
            TimeSpec
        );
        let msg = recvmsg::<SockaddrStorage>(
            fd,
            &mut iov,
            Some(&mut cmsg),
            MsgFlags::MSG_ERRQUEUE | MsgFlags::MSG_DONTWAIT,
        )
        .map_err(io::Error::from)?;
        let (mut rx, mut err) = (None, None);
        for c in msg.cmsgs().map_err(io::Error::from)? {
            match c {
                ControlMessageOwned::ScmTimestampns(ts) => rx = Some(nanos(ts)),
                ControlMessageOwned::Ipv4RecvErr(e, Some(from)) => {
                    err = Some((
                        e,
                        IpAddr::V4(Ipv4Addr::from(u32::from_be(from.sin_addr.s_addr))),
                    ));
                }
                ControlMessageOwned::Ipv6RecvErr(e, Some(from)) => {
                    err = Some((e, IpAddr::V6(Ipv6Addr::from(from.sin6_addr.s6_addr))));
                }
                _ => {}
            }
        }
        let n = msg.bytes;
        let Some((e, from)) = err else {
            return Ok(None);
        };
        // Only errors an ICMP message brought (not local ones).
        let (icmp, icmp6) = (nix::libc::SO_EE_ORIGIN_ICMP, nix::libc::SO_EE_ORIGIN_ICMP6);
        if e.ee_origin != icmp && e.ee_origin != icmp6 {
            return Ok(None);
        }
        let data = &buf[..n];
        let id = match self.kind {
            Kind::Udp => data
                .strip_prefix(UDP_MAGIC)
                .and_then(|rest| rest.get(..2))
                .map(|b| u16::from_be_bytes([b[0], b[1]])),
            // The quoted echo request: type, code, checksum, ident, seq.
            Kind::Icmp(..) => data.get(6..8).map(|b| u16::from_be_bytes([b[0], b[1]])),
        };
        let Some(id) = id else {
            return Ok(None);
        };
        let time_exceeded = if self.v6 {
            e.ee_type == 3
        } else {
            e.ee_type == 11
        };
        Ok(Some(Answer {
            id,
            from,
            rx_unix_nanos: rx.unwrap_or_else(unix_nanos),
            last: !time_exceeded,
        }))
    }

    /// Reads one ordinary datagram: an echo reply from the destination
    /// (ICMP method); anything else is skipped.
    fn recv_data(&self) -> io::Result<Option<Answer>> {
        let fd = self.fd.get_ref().as_raw_fd();
        let mut buf = [0u8; 1600];
        let mut iov = [io::IoSliceMut::new(&mut buf)];
        let mut cmsg = nix::cmsg_space!(TimeSpec, i32);
        let msg = recvmsg::<SockaddrStorage>(fd, &mut iov, Some(&mut cmsg), MsgFlags::MSG_DONTWAIT)
            .map_err(io::Error::from)?;
        let mut rx = None;
        for c in msg.cmsgs().map_err(io::Error::from)? {
            if let ControlMessageOwned::ScmTimestampns(ts) = c {
                rx = Some(nanos(ts));
            }
        }
        let from = msg.address.and_then(|a: SockaddrStorage| {
            a.as_sockaddr_in()
                .map(|s| IpAddr::V4(s.ip()))
                .or_else(|| a.as_sockaddr_in6().map(|s| IpAddr::V6(s.ip())))
        });
        let n = msg.bytes;
        let Kind::Icmp(mode, ident) = self.kind else {
            return Ok(None);
        };
        let mut data = &buf[..n];
        if mode == Mode::Raw && !self.v6 {
            let ihl = usize::from(data.first().map_or(0, |b| b & 0x0f)) * 4;
            data = data.get(ihl..).unwrap_or_default();
        }
        let reply_type = if self.v6 { 129 } else { 0 };
        if data.len() < 8 || data[0] != reply_type {
            return Ok(None);
        }
        if mode == Mode::Raw && u16::from_be_bytes([data[4], data[5]]) != ident {
            return Ok(None);
        }
        let (Some(from), id) = (from, u16::from_be_bytes([data[6], data[7]])) else {
            return Ok(None);
        };
        Ok(Some(Answer {
            id,
            from,
            rx_unix_nanos: rx.unwrap_or_else(unix_nanos),
            last: true,
        }))
    }
}

fn would_block(e: &io::Error) -> bool {
    e.kind() == io::ErrorKind::WouldBlock
}

impl TraceSocket for NetSocket {
    fn send(&mut self, ttl: u8, id: u16) -> io::Result<i64> {
        let s = self.fd.get_ref();
        if self.v6 {
            s.set_unicast_hops_v6(ttl.into())?;
        } else {
            s.set_ttl_v4(ttl.into())?;
        }
        let packet = self.packet(id);
        let mut sent = unix_nanos();
        if s.send_to(&packet, &self.to).is_err() {
            // Most likely an earlier probe's ICMP error pending on the
            // socket (reported once, then cleared): try again.
            sent = unix_nanos();
            s.send_to(&packet, &self.to)?;
        }
        Ok(sent)
    }

    async fn recv(&mut self) -> io::Result<Answer> {
        loop {
            let mut guard = self.fd.ready(Interest::READABLE | Interest::ERROR).await?;
            let mut progress = false;
            match self.recv_error() {
                Ok(Some(a)) => return Ok(a),
                Ok(None) => progress = true,
                Err(e) if would_block(&e) => {}
                Err(e) => return Err(e),
            }
            match self.recv_data() {
                Ok(Some(a)) => return Ok(a),
                Ok(None) => progress = true,
                // A pending socket error is reported by recv once: the
                // error itself is read from the queue above.
                Err(e) if !would_block(&e) => progress = true,
                Err(_) => {}
            }
            if !progress {
                guard.clear_ready();
            }
        }
    }
}
