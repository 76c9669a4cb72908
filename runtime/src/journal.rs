//! Log events to journald, readable without `-o verbose`.
//!
//! The usual tracing-to-journald layer puts only the event's message in
//! `MESSAGE`, so `journalctl -u sonde-collector` showed `TLS handshake
//! rejected` and the reason only in `F_REASON`. Here `MESSAGE` is the whole
//! line an operator needs: the message, then the reason (`reason` or
//! `error` field), then the other fields, e.g. `TLS handshake rejected:
//! certificate revoked (remote=192.0.2.7:51234)`. Every field also stays
//! structured as `F_NAME`, and an event's `message_id` field becomes the
//! journal's own `MESSAGE_ID`, so `journalctl MESSAGE_ID=…` finds every
//! instance of a key event (the ids are in [`crate::logging::ids`]).
//!
//! Native protocol over the journal's datagram socket; a field longer than
//! [`MAX_FIELD`] is cut (no memfd fallback: our lines are short).

use std::fmt::{self, Write as _};
use std::os::unix::net::UnixDatagram;
use std::path::Path;

use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::layer::Context;

/// Where journald listens for native-protocol datagrams.
pub const SOCKET: &str = "/run/systemd/journal/socket";

/// The longest value sent for one field (bytes).
pub const MAX_FIELD: usize = 16 << 10;

/// A tracing layer that writes to journald.
#[derive(Debug)]
pub struct JournalLayer {
    socket: UnixDatagram,
    identifier: String,
}

impl JournalLayer {
    /// Connects to journald at `socket` (normally [`SOCKET`]).
    pub fn connect(socket: &Path, identifier: &str) -> std::io::Result<Self> {
        let s = UnixDatagram::unbound()?;
        s.connect(socket)?;
        Ok(Self {
            socket: s,
            identifier: identifier.to_owned(),
        })
    }
}

/// An event's fields as they were recorded.
#[derive(Default)]
struct Fields {
    message: String,
    message_id: Option<String>,
    reason: Option<String>,
    error: Option<String>,
    others: Vec<(&'static str, String)>,
}

impl Visit for Fields {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.put(field.name(), value.to_owned());
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.put(field.name(), format!("{value:?}"));
    }
}

impl Fields {
    fn put(&mut self, name: &'static str, value: String) {
        match name {
            "message" => self.message = value,
            "message_id" => self.message_id = Some(value),
            "reason" => self.reason = Some(value),
            "error" => self.error = Some(value),
            _ => self.others.push((name, value)),
        }
    }

    /// The human-readable line: message, reason, then the other fields.
    /// Values can carry what a peer chose (a refused certificate's subject,
    /// a host name), so their control characters are escaped as
    /// [`crate::text::safe`] does: one event stays one plain line.
    fn line(&self) -> String {
        let mut line = crate::text::safe(&self.message).into_owned();
        for why in [&self.reason, &self.error].into_iter().flatten() {
            let _ = write!(line, ": {}", crate::text::safe(why));
        }
        if !self.others.is_empty() {
            line.push_str(" (");
            for (i, (k, v)) in self.others.iter().enumerate() {
                if i > 0 {
                    line.push_str(", ");
                }
                let _ = write!(line, "{k}={}", crate::text::safe(v));
            }
            line.push(')');
        }
        line
    }
}

/// Appends one field in the native protocol's length-prefixed form, which
/// carries any bytes (newlines included).
fn put(buf: &mut Vec<u8>, name: &str, value: &str) {
    let mut end = value.len().min(MAX_FIELD);
    while !value.is_char_boundary(end) {
        end -= 1;
    }
    buf.extend_from_slice(name.as_bytes());
    buf.push(b'\n');
    buf.extend_from_slice(&(end as u64).to_le_bytes());
    buf.extend_from_slice(&value.as_bytes()[..end]);
    buf.push(b'\n');
}

/// `F_` and the field name in journald's alphabet (upper-case letters,
/// digits, underscores).
fn field_name(name: &str) -> String {
    let mut out = String::from("F_");
    out.extend(name.chars().map(|c| {
        if c.is_ascii_alphanumeric() {
            c.to_ascii_uppercase()
        } else {
            '_'
        }
    }));
    out
}

fn priority(level: Level) -> &'static str {
    match level {
        Level::ERROR => "3",
        Level::WARN => "4",
        Level::INFO => "6",
        _ => "7",
    }
}

/// The datagram for one event.
fn payload(identifier: &str, event: &Event<'_>) -> Vec<u8> {
    let mut fields = Fields::default();
    event.record(&mut fields);
    let meta = event.metadata();
    let mut buf = Vec::with_capacity(256);
    put(&mut buf, "MESSAGE", &fields.line());
    put(&mut buf, "PRIORITY", priority(*meta.level()));
    put(&mut buf, "SYSLOG_IDENTIFIER", identifier);
    put(&mut buf, "TARGET", meta.target());
    if let Some(file) = meta.file() {
        put(&mut buf, "CODE_FILE", file);
    }
    if let Some(line) = meta.line() {
        put(&mut buf, "CODE_LINE", &line.to_string());
    }
    if let Some(id) = &fields.message_id {
        put(&mut buf, "MESSAGE_ID", id);
    }
    for (k, v) in [("reason", &fields.reason), ("error", &fields.error)] {
        if let Some(v) = v {
            put(&mut buf, &field_name(k), v);
        }
    }
    for (k, v) in &fields.others {
        put(&mut buf, &field_name(k), v);
    }
    buf
}

impl<S: Subscriber> tracing_subscriber::Layer<S> for JournalLayer {
    fn on_event(&self, event: &Event<'_>, _ctx: Context<'_, S>) {
        // Nowhere to report a failure to log: journald being gone is
        // systemd's problem to show.
        let _ = self.socket.send(&payload(&self.identifier, event));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tracing_subscriber::layer::SubscriberExt as _;

    /// Parses the length-prefixed fields back.
    fn fields(buf: &[u8]) -> Vec<(String, String)> {
        let mut out = Vec::new();
        let mut rest = buf;
        while let Some(nl) = rest.iter().position(|&b| b == b'\n') {
            let name = String::from_utf8(rest[..nl].to_vec()).unwrap();
            let len = u64::from_le_bytes(rest[nl + 1..nl + 9].try_into().unwrap());
            let len = usize::try_from(len).unwrap();
            let value = String::from_utf8(rest[nl + 9..nl + 9 + len].to_vec()).unwrap();
            out.push((name, value));
            rest = &rest[nl + 9 + len + 1..];
        }
        out
    }

    #[test]
    fn the_message_carries_reason_and_fields_and_the_id_is_the_journals() {
        let dir = tempfile::tempdir().unwrap();
        let sock = dir.path().join("journal.sock");
        let server = UnixDatagram::bind(&sock).unwrap();
        let layer = JournalLayer::connect(&sock, "sonde-test").unwrap();
        let subscriber = tracing_subscriber::registry().with(layer);
        tracing::subscriber::with_default(subscriber, || {
            tracing::warn!(
                message_id = "dbdc08e9b469494ca019bfe05b15854c",
                remote = %"192.0.2.7:51234",
                reason = "client certificate revoked by the CRL",
                "TLS handshake rejected"
            );
        });
        let mut buf = vec![0; 65536];
        let n = server.recv(&mut buf).unwrap();
        let got = fields(&buf[..n]);
        let get = |k: &str| {
            got.iter()
                .find(|(n, _)| n == k)
                .map_or_else(|| panic!("no {k} in {got:?}"), |(_, v)| v.as_str())
        };
        assert_eq!(
            get("MESSAGE"),
            "TLS handshake rejected: client certificate revoked by the CRL \
             (remote=192.0.2.7:51234)"
        );
        assert_eq!(get("MESSAGE_ID"), "dbdc08e9b469494ca019bfe05b15854c");
        assert_eq!(get("F_REASON"), "client certificate revoked by the CRL");
        assert_eq!(get("F_REMOTE"), "192.0.2.7:51234");
        assert_eq!(get("PRIORITY"), "4");
        assert_eq!(get("SYSLOG_IDENTIFIER"), "sonde-test");
        assert_eq!(get("CODE_FILE"), "runtime/src/journal.rs");
        assert!(!got.iter().any(|(n, _)| n == "F_MESSAGE_ID"), "{got:?}");
    }

    #[test]
    fn a_peers_text_cannot_break_the_line() {
        let fields = Fields {
            message: "TLS handshake rejected".into(),
            reason: Some("bad\nFAKE: line".into()),
            others: vec![("certificate", "subject CN=x\u{1b}[31m".into())],
            ..Fields::default()
        };
        let line = fields.line();
        assert!(!line.contains('\n') && !line.contains('\u{1b}'), "{line}");
        assert!(line.starts_with("TLS handshake rejected: bad"), "{line}");
    }

    #[test]
    fn long_values_are_cut_on_a_character_boundary() {
        let mut buf = Vec::new();
        let long = "é".repeat(MAX_FIELD);
        put(&mut buf, "MESSAGE", &long);
        let (name, value) = fields(&buf).remove(0);
        assert_eq!(name, "MESSAGE");
        assert!(value.len() <= MAX_FIELD && value.len() >= MAX_FIELD - 1);
        assert_eq!(field_name("remote.addr-x"), "F_REMOTE_ADDR_X");
    }
}
