//! The sonde wire contract: the generated `sonde.v1` gRPC types and the
//! identity format carried in certificates (`sonde://TENANT/ROLE/NAME`).
//!
//! Everything two sonde programs must agree on byte for byte lives here, so
//! the agent, the collector and the dev PKI cannot drift apart.

pub mod identity;
pub mod records;

/// Generated code for gRPC package `sonde.v1`.
#[allow(clippy::pedantic, missing_docs)]
pub mod v1 {
    tonic::include_proto!("sonde.v1");
}

/// Encoded `FileDescriptorSet` of `sonde.v1`, for the gRPC reflection service.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/sonde_v1_descriptor.bin"));

pub use identity::{Identity, IdentityError, Role};

/// Largest gRPC message either side decodes (agent and collector alike):
/// a batch, an update or a query answer must fit.
pub const MAX_MESSAGE_BYTES: usize = 4 * 1024 * 1024;
