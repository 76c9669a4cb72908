//! DNS public-IP sources: one query (A, AAAA or TXT) over UDP to a named
//! server, as `dig +short myip.opendns.com @resolver1.opendns.com` does.
//! The answer must come from that server and carry the query's id; a
//! truncated answer, an error code or an answer without a usable address
//! is an error naming what came back.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use hickory_proto::op::{Message, MessageType, Query, ResponseCode};
use hickory_proto::rr::{Name, RData, RecordType};
use tokio::net::UdpSocket;

use super::RecordKind;

/// Largest DNS answer over UDP read.
const MAX_ANSWER: usize = 4096;

fn record_type(kind: RecordKind) -> RecordType {
    match kind {
        RecordKind::A => RecordType::A,
        RecordKind::AAAA => RecordType::AAAA,
        RecordKind::TXT => RecordType::TXT,
    }
}

/// The query message.
pub fn query(id: u16, name: &str, kind: RecordKind) -> Result<Vec<u8>, String> {
    let name = Name::from_ascii(name).map_err(|e| format!("name {name:?}: {e}"))?;
    let mut m = Message::new();
    m.set_id(id)
        .set_message_type(MessageType::Query)
        .set_recursion_desired(true)
        .add_query(Query::query(name, record_type(kind)));
    m.to_vec().map_err(|e| format!("encoding the query: {e}"))
}

/// The address in an answer to query `id`.
pub fn answer(id: u16, bytes: &[u8], kind: RecordKind) -> Result<IpAddr, String> {
    let m = Message::from_vec(bytes).map_err(|e| format!("malformed answer: {e}"))?;
    if m.id() != id || m.message_type() != MessageType::Response {
        return Err("an answer to another query".into());
    }
    if m.truncated() {
        return Err("answer truncated".into());
    }
    if m.response_code() != ResponseCode::NoError {
        return Err(format!("server answered {}", m.response_code()));
    }
    let mut seen = Vec::new();
    for record in m.answers() {
        let found = match (kind, record.data()) {
            (RecordKind::A, RData::A(a)) => Some(IpAddr::V4(a.0)),
            (RecordKind::AAAA, RData::AAAA(a)) => Some(IpAddr::V6(a.0)),
            (RecordKind::TXT, RData::TXT(t)) => {
                let text: Vec<u8> = t
                    .txt_data()
                    .iter()
                    .flat_map(|s| s.iter().copied())
                    .collect();
                let parsed = std::str::from_utf8(&text)
                    .ok()
                    .and_then(|s| s.trim().trim_matches('"').parse().ok());
                if parsed.is_none() {
                    seen.push(super::quote(&text));
                }
                parsed
            }
            (_, other) => {
                seen.push(other.record_type().to_string());
                None
            }
        };
        if let Some(addr) = found {
            return Ok(addr);
        }
    }
    if seen.is_empty() {
        Err("no answer".into())
    } else {
        Err(format!("no address in the answer: {}", seen.join(", ")))
    }
}

/// Asks `server` within `timeout`.
pub async fn ask(
    server: SocketAddr,
    name: &str,
    kind: RecordKind,
    timeout: Duration,
) -> Result<IpAddr, String> {
    let id: u16 = rand::random();
    let message = query(id, name, kind)?;
    let work = async {
        let local: SocketAddr = if server.is_ipv4() {
            (Ipv4Addr::UNSPECIFIED, 0).into()
        } else {
            (Ipv6Addr::UNSPECIFIED, 0).into()
        };
        let socket = UdpSocket::bind(local)
            .await
            .map_err(|e| format!("socket: {e}"))?;
        socket
            .connect(server)
            .await
            .map_err(|e| format!("{server}: {e}"))?;
        socket
            .send(&message)
            .await
            .map_err(|e| format!("{server}: {e}"))?;
        let mut buf = vec![0u8; MAX_ANSWER];
        loop {
            // A connected UDP socket only receives from `server`.
            let n = socket
                .recv(&mut buf)
                .await
                .map_err(|e| format!("{server}: {e}"))?;
            match answer(id, &buf[..n], kind) {
                Err(e) if e == "an answer to another query" => {}
                other => return other,
            }
        }
    };
    tokio::time::timeout(timeout, work)
        .await
        .unwrap_or_else(|_| Err(format!("no answer from {server} within {timeout:?}")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use hickory_proto::rr::Record;
    use hickory_proto::rr::rdata::{A, TXT};

    fn reply(id: u16, data: Vec<RData>, code: ResponseCode) -> Vec<u8> {
        let mut m = Message::new();
        m.set_id(id)
            .set_message_type(MessageType::Response)
            .set_response_code(code);
        for d in data {
            m.add_answer(Record::from_rdata(
                Name::from_ascii("myip.test.").unwrap(),
                0,
                d,
            ));
        }
        m.to_vec().unwrap()
    }

    #[test]
    fn reads_addresses_and_names_what_is_wrong() {
        let a = RData::A(A("203.0.113.7".parse().unwrap()));
        assert_eq!(
            answer(
                7,
                &reply(7, vec![a.clone()], ResponseCode::NoError),
                RecordKind::A
            ),
            Ok("203.0.113.7".parse().unwrap())
        );
        let txt = RData::TXT(TXT::new(vec!["2001:db8::5".into()]));
        assert_eq!(
            answer(
                7,
                &reply(7, vec![txt], ResponseCode::NoError),
                RecordKind::TXT
            ),
            Ok("2001:db8::5".parse().unwrap())
        );
        let junk = RData::TXT(TXT::new(vec!["hello".into()]));
        let e = answer(
            7,
            &reply(7, vec![junk], ResponseCode::NoError),
            RecordKind::TXT,
        )
        .unwrap_err();
        assert_eq!(e, "no address in the answer: \"hello\"");
        assert_eq!(
            answer(7, &reply(7, vec![], ResponseCode::NXDomain), RecordKind::A).unwrap_err(),
            "server answered Non-Existent Domain"
        );
        assert_eq!(
            answer(7, &reply(8, vec![a], ResponseCode::NoError), RecordKind::A).unwrap_err(),
            "an answer to another query"
        );
        assert!(
            answer(7, b"\x00\x07garbage", RecordKind::A)
                .unwrap_err()
                .starts_with("malformed")
        );
        let q = query(9, "myip.opendns.com", RecordKind::AAAA).unwrap();
        let parsed = Message::from_vec(&q).unwrap();
        assert_eq!(parsed.queries()[0].query_type(), RecordType::AAAA);
    }
}
