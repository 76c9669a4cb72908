//! Errors of the agent session, and their one mapping to `tonic::Status`.

use std::time::Duration;

use sonde_proto::Role;
use tonic::Status;

use crate::store::StoreError;

/// Why a session was refused or ended.
#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    #[error("certificate role {0} may not open an agent session (only role agent may)")]
    NotAgent(Role),
    #[error("connection carries no verified peer identity")]
    NoPeer,
    #[error("the first message of a session must be Hello, got {0}")]
    ExpectedHello(&'static str),
    #[error("Hello sent twice in one session")]
    DuplicateHello,
    #[error("no Hello within {0:?}")]
    HelloTimeout(Duration),
    #[error("stream closed before Hello")]
    ClosedBeforeHello,
    #[error("batch_seq 0 is invalid: a spool numbers its batches from 1")]
    ZeroBatchSeq,
    #[error("replaced by a newer session of the same agent")]
    Replaced,
    #[error("collector is shutting down")]
    ShuttingDown,
    /// A message the collector cannot read: larger than the gRPC message
    /// limit, or not a valid protobuf.
    #[error("message refused: {}", .0.message())]
    Unreadable(Status),
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl From<SessionError> for Status {
    fn from(e: SessionError) -> Self {
        let msg = e.to_string();
        match e {
            SessionError::NotAgent(_) => Status::permission_denied(msg),
            SessionError::NoPeer => Status::unauthenticated(msg),
            SessionError::ExpectedHello(_)
            | SessionError::DuplicateHello
            | SessionError::ClosedBeforeHello
            | SessionError::ZeroBatchSeq => Status::invalid_argument(msg),
            SessionError::HelloTimeout(_) => Status::deadline_exceeded(msg),
            SessionError::Replaced => Status::aborted(msg),
            SessionError::ShuttingDown => Status::unavailable(msg),
            SessionError::Unreadable(status) => Status::new(status.code(), msg),
            // Never leak internals (paths) to the peer; the log has them.
            SessionError::Store(e) if e.is_disk_full() => Status::resource_exhausted(
                "collector storage is full: batch not acknowledged, keep it and retry",
            ),
            SessionError::Store(_) => Status::internal("collector storage error"),
        }
    }
}
