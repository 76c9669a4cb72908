//! SMS through any HTTP gateway: the method, URL, headers and body are
//! templates filled per recipient. Placeholders: `{to}` and `{message}`
//! as they are, `{to_json}` / `{message_json}` as JSON strings (quotes
//! included, for JSON bodies), `{to_url}` / `{message_url}`
//! percent-encoded (for URLs and form bodies). The message is cut to
//! `max-length` characters first.

use std::collections::BTreeMap;
use std::time::Duration;

use super::{Integration, SendFuture, check_response, check_url, http_client, transport};
use crate::config::Secret;
use crate::consumers::alert::config::SmsWebhook as Config;
use crate::consumers::alert::config::secret;
use crate::consumers::alert::message::Message;

pub struct Webhook {
    client: reqwest::Client,
    method: reqwest::Method,
    url: Secret,
    headers: BTreeMap<String, String>,
    /// Read from `header-files`: secret.
    secret_headers: BTreeMap<String, Secret>,
    body: String,
    to: String,
    max_length: usize,
}

/// The placeholders a template may hold.
pub const PLACEHOLDERS: [&str; 6] = [
    "{message_json}",
    "{message_url}",
    "{message}",
    "{to_json}",
    "{to_url}",
    "{to}",
];

/// Fills a template in one pass from left to right: each placeholder is
/// replaced by its value, and a value is never read again, so a message
/// that contains `{to}` or `{message_json}` is sent as written. Braces
/// that open no placeholder are copied as they are.
pub fn fill(template: &str, to: &str, message: &str) -> String {
    let json = |s: &str| serde_json::Value::String(s.to_owned()).to_string();
    let mut out = String::with_capacity(template.len() + message.len());
    let mut rest = template;
    while let Some(at) = rest.find('{') {
        out.push_str(&rest[..at]);
        rest = &rest[at..];
        let Some(name) = PLACEHOLDERS.iter().find(|p| rest.starts_with(**p)) else {
            out.push('{');
            rest = &rest[1..];
            continue;
        };
        match *name {
            "{message_json}" => out.push_str(&json(message)),
            "{message_url}" => out.push_str(&crate::consumers::alert::segment(message)),
            "{message}" => out.push_str(message),
            "{to_json}" => out.push_str(&json(to)),
            "{to_url}" => out.push_str(&crate::consumers::alert::segment(to)),
            _ => out.push_str(to),
        }
        rest = &rest[name.len()..];
    }
    out.push_str(rest);
    out
}

impl Webhook {
    pub fn new(c: &Config, to: &str, timeout: Duration) -> Result<Self, (String, String)> {
        let key = |k: &str| format!("sms-webhook.{k}");
        if c.to.is_empty() {
            return Err((key("to"), "at least one recipient".to_owned()));
        }
        if c.max_length < 20 {
            return Err((key("max-length"), "must be at least 20".to_owned()));
        }
        let method: reqwest::Method = c.method.to_ascii_uppercase().parse().map_err(|_| {
            (
                key("method"),
                format!("{:?} is not an HTTP method", c.method),
            )
        })?;
        let url = secret(
            "url",
            c.url.as_ref(),
            c.url_file.as_ref(),
            c.url_env.as_ref(),
        )
        .map_err(|(k, m)| (key(&k), m))?;
        check_url(&fill(url.expose(), to, "x")).map_err(|m| (key("url"), m))?;
        for name in c.headers.keys().chain(c.header_files.keys()) {
            reqwest::header::HeaderName::from_bytes(name.as_bytes())
                .map_err(|_| (key("headers"), format!("{name:?} is not a header name")))?;
        }
        let mut secret_headers = BTreeMap::new();
        for (name, file) in &c.header_files {
            let v = Secret::from_file(file).map_err(|m| (key("header-files"), m))?;
            secret_headers.insert(name.clone(), v);
        }
        Ok(Self {
            client: http_client(timeout)?,
            method,
            url,
            headers: c.headers.clone(),
            secret_headers,
            body: c.body.clone(),
            to: to.to_owned(),
            max_length: c.max_length,
        })
    }
}

impl Integration for Webhook {
    fn send<'a>(&'a self, _uid: &'a str, message: &'a Message) -> SendFuture<'a> {
        Box::pin(async move {
            let text = message.short(self.max_length);
            let mut request = self.client.request(
                self.method.clone(),
                fill(self.url.expose(), &self.to, &text),
            );
            for (name, value) in &self.headers {
                request = request.header(name.as_str(), fill(value, &self.to, &text));
            }
            for (name, value) in &self.secret_headers {
                request = request.header(name.as_str(), value.expose());
            }
            if !self.body.is_empty() {
                request = request.body(fill(&self.body, &self.to, &text));
            }
            let response = request.send().await.map_err(transport)?;
            check_response(response).await
        })
    }

    fn describe(&self) -> String {
        let host = reqwest::Url::parse(&fill(self.url.expose(), &self.to, ""))
            .ok()
            .and_then(|u| u.host_str().map(str::to_owned))
            .unwrap_or_default();
        format!("SMS to {} via {host}", self.to)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn templates_are_filled_and_escaped() {
        let body = fill(
            r#"{"to": {to_json}, "text": {message_json}}"#,
            "+3360000",
            "a \"quoted\" line\nnext",
        );
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(v["text"], "a \"quoted\" line\nnext");
        assert_eq!(v["to"], "+3360000");
        assert_eq!(
            fill(
                "https://gw/send?to={to_url}&m={message_url}",
                "+33 6",
                "a&b=c"
            ),
            "https://gw/send?to=%2B33%206&m=a%26b%3Dc"
        );
    }

    #[test]
    fn a_value_is_never_read_as_a_template() {
        // A message naming every placeholder (a target called `{to}`, say),
        // and a recipient that looks like one.
        let message = format!("down: {} {{ }} {{unknown}}", PLACEHOLDERS.join(" "));
        let to = "{message}";
        let template = format!("{}|{{not-one}}|{{", PLACEHOLDERS.join("|"));
        let filled = fill(&template, to, &message);
        let json = |s: &str| serde_json::Value::String(s.to_owned()).to_string();
        let expected = [
            json(&message),
            crate::consumers::alert::segment(&message),
            message.clone(),
            json(to),
            crate::consumers::alert::segment(to),
            to.to_owned(),
        ]
        .join("|")
            + "|{not-one}|{";
        assert_eq!(filled, expected);
        // Still valid JSON with the message intact.
        let body = fill(r#"{"to": {to_json}, "text": {message_json}}"#, to, &message);
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(
            (v["to"].as_str(), v["text"].as_str()),
            (Some(to), Some(message.as_str()))
        );
    }
}
