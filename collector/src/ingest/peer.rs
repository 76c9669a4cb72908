//! Who is on the other end of a connection.
//!
//! The TLS listener puts a [`Peer`] into every request's extensions after
//! the handshake; handlers read identity only from there.

use std::net::SocketAddr;

use sonde_proto::Identity;

/// The verified caller of one connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Peer {
    /// Tenant, role and name from the client certificate's URI SAN.
    pub identity: Identity,
    /// TCP address the connection came from.
    pub remote: SocketAddr,
    /// The client certificate's serial number (hex), for the log: which
    /// certificate an agent used, e.g. after a rotation.
    pub serial: String,
}
