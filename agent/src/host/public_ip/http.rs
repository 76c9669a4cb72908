//! HTTP(S) public-IP sources: a GET whose body is the address, as text or
//! in a JSON field. One client per family, bound to that family's
//! unspecified address so an IPv4 source is asked over IPv4 (a dual-stack
//! name like `api64.ipify.org` would otherwise answer for either). Bodies
//! are read up to [`MAX_BODY`] bytes: a hostile or broken source cannot
//! make the agent buffer without bound.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::time::Duration;

use super::{Family, Format, quote};

/// The largest answer read from a source.
pub const MAX_BODY: usize = 4096;

/// A client for one family's sources.
pub fn client(family: Family) -> Result<reqwest::Client, String> {
    let local = match family {
        Family::Ipv4 => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
        Family::Ipv6 => IpAddr::V6(Ipv6Addr::UNSPECIFIED),
    };
    let tls = sonde_runtime::tls::public_client_config().map_err(|e| e.to_string())?;
    reqwest::Client::builder()
        .use_preconfigured_tls(tls)
        .local_address(local)
        .redirect(reqwest::redirect::Policy::limited(3))
        .user_agent(concat!("sonde-agent/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(|e| format!("HTTP client: {e}"))
}

/// A reqwest error in one line ("error sending request" alone says
/// nothing).
fn chain(e: &reqwest::Error) -> String {
    let head = if e.is_timeout() {
        "timed out".to_owned()
    } else {
        e.to_string()
    };
    sonde_runtime::error::with_sources(head, e)
}

/// GETs `url` within `timeout`; the body, or why there is none.
pub async fn fetch(
    client: &reqwest::Client,
    url: &str,
    timeout: Duration,
) -> Result<Vec<u8>, String> {
    let work = async {
        let mut response = client.get(url).send().await.map_err(|e| chain(&e))?;
        let status = response.status();
        let mut body = Vec::new();
        while let Some(chunk) = response.chunk().await.map_err(|e| chain(&e))? {
            body.extend_from_slice(&chunk);
            if body.len() > MAX_BODY {
                return Err(format!("answer larger than {MAX_BODY} bytes"));
            }
        }
        if !status.is_success() {
            return Err(format!("HTTP {status}: {}", quote(&body)));
        }
        Ok(body)
    };
    tokio::time::timeout(timeout, work)
        .await
        .unwrap_or_else(|_| Err(format!("timed out after {timeout:?}")))
}

/// The address in a body.
pub fn parse(body: &[u8], format: Format, field: Option<&str>) -> Result<IpAddr, String> {
    let not_address = || format!("not an IP address: {}", quote(body));
    match format {
        Format::Text => std::str::from_utf8(body)
            .ok()
            .and_then(|t| t.trim().parse().ok())
            .ok_or_else(not_address),
        Format::Json => {
            let field = field.unwrap_or("ip");
            let value: serde_json::Value = serde_json::from_slice(body)
                .map_err(|e| format!("not JSON ({e}): {}", quote(body)))?;
            let found = field
                .split('.')
                .try_fold(&value, |v, key| v.get(key))
                .ok_or_else(|| format!("no field {field:?} in {}", quote(body)))?;
            found
                .as_str()
                .and_then(|t| t.trim().parse().ok())
                .ok_or_else(|| format!("field {field:?} is not an IP address: {found}"))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_text_and_json() {
        let v4: IpAddr = "203.0.113.7".parse().unwrap();
        assert_eq!(parse(b" 203.0.113.7\n", Format::Text, None), Ok(v4));
        assert_eq!(
            parse(b"2001:db8::7", Format::Text, None),
            Ok("2001:db8::7".parse().unwrap())
        );
        let e = parse(b"<html>oops</html>", Format::Text, None).unwrap_err();
        assert_eq!(e, "not an IP address: \"<html>oops</html>\"");
        assert_eq!(
            parse(
                br#"{"data": {"ip": "203.0.113.7"}}"#,
                Format::Json,
                Some("data.ip")
            ),
            Ok(v4)
        );
        let e = parse(br#"{"ip": 5}"#, Format::Json, Some("ip")).unwrap_err();
        assert!(e.contains("field \"ip\" is not an IP address: 5"), "{e}");
        let e = parse(br#"{"address": "x"}"#, Format::Json, Some("ip")).unwrap_err();
        assert!(e.starts_with("no field \"ip\""), "{e}");
        let e = parse(b"nope", Format::Json, Some("ip")).unwrap_err();
        assert!(e.starts_with("not JSON"), "{e}");
    }
}
