//! Ingest: the first stage. Agents connect over mTLS (`listener.rs`,
//! `peer.rs`), each keeps one session (`session.rs`) whose batches are
//! appended to the ingest log and acknowledged once durable, paced when
//! the collector falls behind (`pace.rs`); heartbeats keep each agent's
//! liveness (`liveness.rs`).

pub mod listener;
pub mod liveness;
pub mod pace;
pub mod peer;
pub mod session;
