//! The HTTP API's path and query-parameter parsing, through the real router
//! and handlers of a collector holding a minute of acme's data. Any path,
//! query and JSON body, from a certificate of each role and tenant:
//! - the answer is never a 500 (bad input is the client's error, 4xx);
//! - globex's viewer never sees acme's addresses, prefixes or name unless
//!   the request itself contained them (an echo of the input in an error,
//!   which the API quotes).
//!
//! Input: a selector byte (`& 7`: who; `>> 3 & 3`: GET, POST, PUT,
//! DELETE), then UTF-8 `PATH?QUERY`, optionally a newline and a body.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sonde_proto::Role;

const WHO: [(&str, Role, &str); 6] = [
    ("acme", Role::Viewer, "v"),
    ("acme", Role::Admin, "ad"),
    ("noc", Role::Viewer, "op"),
    ("noc", Role::Admin, "opa"),
    ("globex", Role::Viewer, "gv"),
    ("acme", Role::Agent, "a1"),
];

fuzz_target!(|data: &[u8]| {
    let Some((&selector, rest)) = data.split_first() else {
        return;
    };
    let Ok(text) = std::str::from_utf8(rest) else {
        return;
    };
    let (target, body) = text.split_once('\n').unwrap_or((text, ""));
    let path = if target.starts_with('/') {
        target.to_owned()
    } else {
        format!("/api/v1/{target}")
    };
    let Ok(uri) = path.parse::<http::Uri>() else {
        return;
    };
    let (tenant, role, name) = WHO[usize::from(selector & 7) % WHO.len()];
    let method = ["GET", "POST", "PUT", "DELETE"][usize::from(selector >> 3 & 3)];
    let Ok(mut request) = http::Request::builder()
        .method(method)
        .uri(uri)
        .header("content-type", "application/json")
        .body(axum::body::Body::from(body.to_owned()))
    else {
        return;
    };
    request
        .extensions_mut()
        .insert(sonde_fuzz::peer(tenant, role, name));
    let (status, answer) = sonde_fuzz::call(sonde_fuzz::harness(), request);
    assert!(
        status != http::StatusCode::INTERNAL_SERVER_ERROR,
        "{method} {path} as {tenant}/{role}: 500 {}",
        String::from_utf8_lossy(&answer)
    );
    if tenant == "globex" {
        let told = told(text);
        for shown in shown(&answer) {
            for secret in ["10.0.0.", "10.0.1.", "2001:db8:", "acme"] {
                assert!(
                    !shown.contains(secret) || told.iter().any(|t| t.contains(secret)),
                    "{method} {path} as globex's viewer shows {secret:?}: {shown:?}"
                );
            }
        }
    }
});

/// What the request told the server, in every form the server may echo
/// it back: as sent, percent-decoded (with and without `+` as a space),
/// and each address or prefix in it as the server writes it (a request
/// for `2001:0DB8::1` may be answered about `2001:db8::/64`). Lowercase.
fn told(text: &str) -> Vec<String> {
    let mut forms = vec![
        text.to_owned(),
        percent_decoded(text),
        percent_decoded(&text.replace('+', " ")),
    ];
    let mut canonical = Vec::new();
    for form in &forms {
        for token in form.split(|c: char| !(c.is_ascii_hexdigit() || ":./".contains(c))) {
            // A path's segments are parsed alone and two by two, as the
            // routes take them (`/prefixes/{addr}/{len}` answers about
            // `ADDR/LEN` as the server writes it).
            let segments: Vec<&str> = token.split('/').collect();
            let pairs = segments.windows(2).map(|w| w.join("/"));
            for candidate in segments.iter().map(|s| (*s).to_owned()).chain(pairs) {
                if let Ok(a) = candidate.parse::<std::net::IpAddr>() {
                    canonical.push(a.to_string());
                }
                if let Ok(n) = candidate.parse::<ipnet::IpNet>() {
                    canonical.extend([n.to_string(), n.trunc().to_string()]);
                }
            }
        }
    }
    forms.extend(canonical);
    forms.iter().map(|f| f.to_lowercase()).collect()
}

fn percent_decoded(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes
            .get(i + 1..i + 3)
            .filter(|h| h.iter().all(u8::is_ascii_hexdigit))
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match (bytes[i], hex) {
            (b'%', Some(b)) => {
                out.push(b);
                i += 3;
            }
            (b, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The text an answer shows, lowercase: a JSON answer's keys and string
/// values as decoded (so JSON's own escapes cannot spell a secret that is
/// not there), any other answer as a whole.
fn shown(answer: &[u8]) -> Vec<String> {
    fn walk(v: &serde_json::Value, out: &mut Vec<String>) {
        match v {
            serde_json::Value::String(s) => out.push(s.to_lowercase()),
            serde_json::Value::Array(items) => items.iter().for_each(|i| walk(i, out)),
            serde_json::Value::Object(map) => {
                for (k, v) in map {
                    out.push(k.to_lowercase());
                    walk(v, out);
                }
            }
            _ => {}
        }
    }
    match serde_json::from_slice::<serde_json::Value>(answer) {
        Ok(v) => {
            let mut out = Vec::new();
            walk(&v, &mut out);
            out
        }
        Err(_) => vec![String::from_utf8_lossy(answer).to_lowercase()],
    }
}
