//! The HTTP API's path and query-parameter parsing, through the real router
//! and handlers of a collector holding a minute of acme's data. Any path,
//! query and JSON body, from a certificate of each role and tenant:
//! - the answer is never a 500 (bad input is the client's error, 4xx);
//! - globex's viewer never sees acme's addresses or name unless the
//!   request itself contained them (an echo of the input in an error).
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
        let answer = String::from_utf8_lossy(&answer);
        for secret in ["10.0.0.", "10.0.1.", "2001:db8:", "acme"] {
            assert!(
                text.contains(secret) || !answer.contains(secret),
                "{method} {path} as globex's viewer shows {secret:?}: {answer}"
            );
        }
    }
});
