//! The collector's handling of what agents send: any sequence of messages
//! on an `AgentService/Session` stream of an authenticated agent, through
//! the real gRPC service, session state machine, ingest store and the
//! consumers that decode what was stored. The session answers with a gRPC
//! status (never a panic, never an HTTP error), and every batch it can
//! decode also converts to export points, one line of line protocol each.
//!
//! Input: a `flags` byte (`& 1`: start with a valid `Hello`; bits 1..3:
//! its spool id), then messages, each a 2-byte little-endian length and
//! that many bytes (the last one takes what is left).
#![no_main]

use libfuzzer_sys::fuzz_target;
use prost::Message as _;
use sonde_collector::log::{LogKind, LoggedBatch};
use sonde_proto::Role;
use sonde_proto::v1::AgentMessage;
use sonde_proto::v1::agent_message::Kind;

fuzz_target!(|data: &[u8]| {
    let Some((&flags, mut rest)) = data.split_first() else {
        return;
    };
    let mut messages = Vec::new();
    if flags & 1 != 0 {
        messages.push(sonde_fuzz::hello(u64::from(flags >> 1 & 7) + 10));
    }
    while !rest.is_empty() && messages.len() < 64 {
        let (len, tail) = match rest {
            [a, b, tail @ ..] => (usize::from(u16::from_le_bytes([*a, *b])), tail),
            _ => (rest.len(), &rest[..0]),
        };
        let (m, next) = tail.split_at(len.min(tail.len()));
        messages.push(m.to_vec());
        rest = next;
    }
    for m in &messages {
        if let Ok(AgentMessage {
            kind: Some(Kind::Batch(batch)),
        }) = AgentMessage::decode(m.as_slice())
        {
            let entry = LoggedBatch {
                id: 1,
                kind: LogKind::Batch,
                tenant: "acme".into(),
                agent: "fuzz".into(),
                spool_id: 10,
                batch_seq: batch.batch_seq,
                received_ms: 0,
                results: 0,
                payload: batch.encode_to_vec(),
            };
            let points = sonde_collector::consumers::export::points::points(&entry)
                .expect("a decoded batch converts to points");
            // Whatever an agent puts in its strings, each point is one
            // line of line protocol: no injected lines.
            for p in &points {
                let mut line = String::new();
                if p.write_line(&mut line).line {
                    assert_eq!(line.matches('\n').count(), 1, "point spans lines: {line:?}");
                    assert!(line.ends_with('\n'), "{line:?}");
                }
            }
        }
    }
    let h = sonde_fuzz::harness();
    let request =
        sonde_fuzz::session_request(sonde_fuzz::peer("acme", Role::Agent, "fuzz"), &messages);
    let (status, _) = sonde_fuzz::call(h, request);
    assert_eq!(
        status,
        http::StatusCode::OK,
        "gRPC answers with HTTP 200 and a gRPC status"
    );
});
