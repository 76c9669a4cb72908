//! Mail over SMTP with `lettre`: STARTTLS (required, never silently
//! plain), implicit TLS, or plain for a local relay; optional AUTH; one
//! mail per notification to every recipient, with a plain-text and an
//! HTML part. The Message-ID carries the notification's random 128-bit
//! uid: the same for every retry, so a mail sent twice (collector killed
//! between the server's acceptance and the outbox update) is recognisable
//! as one, and never the same for two notifications, whichever collector
//! or state directory made them.
//!
//! SMTP replies are classified by lettre: permanent (5xx) refusals are
//! not retried, everything else (4xx, connection and TLS failures,
//! timeouts) is.

use std::time::Duration;

use lettre::message::{Mailbox, MultiPart};
use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::client::{Certificate, Tls, TlsParameters};
use lettre::{AsyncSmtpTransport, AsyncTransport, Tokio1Executor};

use super::{Integration, SendError, SendFuture};
use crate::consumers::alert::config::secret;
use crate::consumers::alert::config::{Email as Config, SmtpTls};
use crate::consumers::alert::message::Message;
use sonde_runtime::files::{self, Kind};

pub struct Email {
    transport: AsyncSmtpTransport<Tokio1Executor>,
    from: Mailbox,
    to: Vec<Mailbox>,
    server: String,
}

fn mailbox(key: &str, s: &str) -> Result<Mailbox, (String, String)> {
    s.parse().map_err(|e| {
        (
            format!("email.{key}"),
            format!("{s:?} is not a mail address: {e}"),
        )
    })
}

impl Email {
    pub fn new(c: &Config, timeout: Duration) -> Result<Self, (String, String)> {
        let from = mailbox("from", &c.from)?;
        if c.to.is_empty() {
            return Err(("email.to".to_owned(), "at least one recipient".to_owned()));
        }
        let to =
            c.to.iter()
                .map(|t| mailbox("to", t))
                .collect::<Result<Vec<_>, _>>()?;
        if c.host.trim().is_empty() {
            return Err(("email.host".to_owned(), "must not be empty".to_owned()));
        }
        let port = c.port.unwrap_or(match c.tls {
            SmtpTls::Starttls => 587,
            SmtpTls::Tls => 465,
            SmtpTls::None => 25,
        });
        let params = || -> Result<TlsParameters, (String, String)> {
            let mut b = TlsParameters::builder(c.host.clone());
            if let Some(ca) = &c.ca {
                let pem = files::read(ca, Kind::Shared, files::PEM_LIMIT)
                    .map_err(|e| ("email.ca".to_owned(), e.to_string()))?;
                let cert = Certificate::from_pem(&pem).map_err(|e| {
                    (
                        "email.ca".to_owned(),
                        format!("{}: not a PEM certificate: {e}", ca.display()),
                    )
                })?;
                b = b.add_root_certificate(cert);
            }
            b.build_rustls()
                .map_err(|e| ("email.tls".to_owned(), format!("TLS for {}: {e}", c.host)))
        };
        let tls = match c.tls {
            SmtpTls::Starttls => Tls::Required(params()?),
            SmtpTls::Tls => Tls::Wrapper(params()?),
            SmtpTls::None => Tls::None,
        };
        let mut builder = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(c.host.clone())
            .port(port)
            .tls(tls)
            .timeout(Some(timeout));
        let has_password =
            c.password.is_some() || c.password_file.is_some() || c.password_env.is_some();
        match (&c.username, has_password) {
            (Some(user), true) => {
                let password = secret(
                    "password",
                    c.password.as_ref(),
                    c.password_file.as_ref(),
                    c.password_env.as_ref(),
                )
                .map_err(|(k, m)| (format!("email.{k}"), m))?;
                builder = builder
                    .credentials(Credentials::new(user.clone(), password.expose().to_owned()));
            }
            (None, false) => {}
            (Some(_), false) => {
                return Err((
                    "email.password".to_owned(),
                    "username given: give password, password-file or password-env".to_owned(),
                ));
            }
            (None, true) => {
                return Err((
                    "email.username".to_owned(),
                    "password given without username".to_owned(),
                ));
            }
        }
        Ok(Self {
            transport: builder.build(),
            from,
            to,
            server: format!("{}:{port}", c.host),
        })
    }

    /// The mail for the notification `uid`.
    pub fn mail(&self, uid: &str, m: &Message) -> Result<lettre::Message, SendError> {
        let domain = self.from.email.domain().to_owned();
        let mut b = lettre::Message::builder()
            .from(self.from.clone())
            .subject(crate::consumers::alert::message::cut(&m.title(), 200))
            .message_id(Some(format!("<sonde.{uid}@{domain}>")));
        for t in &self.to {
            b = b.to(t.clone());
        }
        b.multipart(MultiPart::alternative_plain_html(m.text(), m.html()))
            .map_err(|e| SendError::Rejected {
                reason: format!("cannot build the mail: {e}"),
            })
    }

    async fn deliver(&self, uid: &str, m: &Message) -> Result<(), SendError> {
        let mail = self.mail(uid, m)?;
        match self.transport.send(mail).await {
            Ok(_) => Ok(()),
            Err(e) if e.is_permanent() => Err(SendError::Rejected {
                reason: format!("{}: {e}", self.server),
            }),
            Err(e) => Err(SendError::Retry {
                reason: format!("{}: {}", self.server, sonde_runtime::error::chain(&e)),
                after: None,
            }),
        }
    }
}

impl Integration for Email {
    fn send<'a>(&'a self, uid: &'a str, message: &'a Message) -> SendFuture<'a> {
        Box::pin(self.deliver(uid, message))
    }

    fn describe(&self) -> String {
        format!("mail via {}", self.server)
    }
}
