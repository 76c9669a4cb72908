//! Probe engines. Each engine turns its configured targets into results
//! (`sonde.v1.Record`s) handed to the batcher through an [`emit::Emitter`];
//! the probing logic is kept apart from sockets (a `Network` seam per
//! engine) so it is unit-tested without them.

pub mod emit;
pub mod icmp;
pub mod icmp_net;
pub mod once;
pub mod plan;
pub mod resolve;
pub mod runner;
pub mod schedule;
pub mod tasks;
pub mod tcp;
pub mod trace;
pub mod trace_net;
pub use sonde_runtime::target;
