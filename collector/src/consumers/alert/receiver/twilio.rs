//! SMS through a Twilio-compatible API: `POST
//! {base-url}/2010-04-01/Accounts/{AccountSid}/Messages.json` with HTTP
//! basic auth (account SID, auth token) and the form fields `To`, `From`
//! and `Body`; Twilio answers `201 Created`. One integration per
//! recipient, so a retry never texts the others again.

use std::time::Duration;

use super::{Integration, SendFuture, check_response, check_url, http_client, transport};
use crate::config::Secret;
use crate::consumers::alert::config::Twilio as Config;
use crate::consumers::alert::config::secret;
use crate::consumers::alert::message::Message;

pub struct Twilio {
    client: reqwest::Client,
    url: reqwest::Url,
    account: String,
    token: Secret,
    from: String,
    to: String,
    max_length: usize,
}

impl Twilio {
    pub fn new(c: &Config, to: &str, timeout: Duration) -> Result<Self, (String, String)> {
        let key = |k: &str| format!("twilio.{k}");
        if c.to.is_empty() {
            return Err((key("to"), "at least one recipient".to_owned()));
        }
        if c.account_sid.is_empty() || !c.account_sid.chars().all(|ch| ch.is_ascii_alphanumeric()) {
            return Err((
                key("account-sid"),
                "must be letters and digits (AC…)".to_owned(),
            ));
        }
        if c.max_length < 20 {
            return Err((key("max-length"), "must be at least 20".to_owned()));
        }
        let token = secret(
            "auth-token",
            c.auth_token.as_ref(),
            c.auth_token_file.as_ref(),
            c.auth_token_env.as_ref(),
        )
        .map_err(|(k, m)| (key(&k), m))?;
        let base = check_url(&c.base_url).map_err(|m| (key("base-url"), m))?;
        let url = base
            .join(&format!(
                "2010-04-01/Accounts/{}/Messages.json",
                c.account_sid
            ))
            .map_err(|e| (key("base-url"), e.to_string()))?;
        Ok(Self {
            client: http_client(timeout)?,
            url,
            account: c.account_sid.clone(),
            token,
            from: c.from.clone(),
            to: to.to_owned(),
            max_length: c.max_length,
        })
    }

    /// The form fields of the request.
    pub fn form(&self, m: &Message) -> Vec<(&'static str, String)> {
        vec![
            ("To", self.to.clone()),
            ("From", self.from.clone()),
            ("Body", m.short(self.max_length)),
        ]
    }
}

impl Integration for Twilio {
    fn send<'a>(&'a self, _uid: &'a str, message: &'a Message) -> SendFuture<'a> {
        Box::pin(async move {
            let response = self
                .client
                .post(self.url.clone())
                .basic_auth(&self.account, Some(self.token.expose()))
                .form(&self.form(message))
                .send()
                .await
                .map_err(transport)?;
            check_response(response).await
        })
    }

    fn describe(&self) -> String {
        format!(
            "SMS to {} via {}",
            self.to,
            self.url.host_str().unwrap_or_default()
        )
    }
}
