//! Mail: the messages this server sends, and their delivery over SMTP (or to the log when no
//! SMTP_URL is configured). Mail is never sent from a request: requests write it to the outbox
//! in the same transaction as the token it carries, and [`worker`] delivers it.

pub mod templates;
pub mod worker;

use lettre::message::header::ContentType;
use lettre::message::{Mailbox, Message};
use lettre::transport::smtp::AsyncSmtpTransport;
use lettre::{AsyncTransport, Tokio1Executor};

use crate::config::MailConfig;
use crate::db::outbox::Mail;

/// Why a mail did not go out.
#[derive(Debug)]
pub struct SendFailure {
    /// True when trying again cannot help (the server refused the recipient for good, say).
    pub permanent: bool,
    pub message: String,
}

enum Transport {
    /// Development: each mail is written to the log in full.
    Log,
    Smtp(AsyncSmtpTransport<Tokio1Executor>),
}

pub struct Mailer {
    transport: Transport,
    from: Mailbox,
    /// The longest one attempt may take (MAIL_SMTP_TIMEOUT_SECONDS).
    timeout: std::time::Duration,
}

impl std::fmt::Debug for Mailer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kind = match self.transport {
            Transport::Log => "log",
            Transport::Smtp(_) => "smtp",
        };
        f.debug_struct("Mailer").field("transport", &kind).finish()
    }
}

/// `smtp://` uses STARTTLS where the server offers it (lettre's `tls=opportunistic`) unless
/// the URL says `tls=required` or `tls=none`; `smtps://` is TLS from the start.
fn lettre_url(url: &str) -> Result<(String, bool), String> {
    let mut parsed = url::Url::parse(url).map_err(|e| e.to_string())?;
    let tls = parsed
        .query_pairs()
        .find(|(k, _)| k == "tls")
        .map(|(_, v)| v.to_string());
    if parsed.scheme() == "smtp" {
        let others: Vec<(String, String)> = parsed
            .query_pairs()
            .filter(|(k, _)| k != "tls")
            .map(|(k, v)| (k.into_owned(), v.into_owned()))
            .collect();
        let tls = tls.as_deref().unwrap_or("opportunistic");
        let plain = tls == "none";
        {
            let mut query = parsed.query_pairs_mut();
            query.clear();
            query.extend_pairs(others);
            if !plain {
                query.append_pair("tls", tls);
            }
        }
        if parsed.query() == Some("") {
            parsed.set_query(None);
        }
        // Keep the port lettre would pick for a plain connection when none is given.
        if plain && parsed.port().is_none() {
            let _ = parsed.set_port(Some(25));
        }
        return Ok((parsed.to_string(), plain));
    }
    Ok((parsed.to_string(), false))
}

impl Mailer {
    pub fn new(config: &MailConfig) -> Result<Self, String> {
        let from: Mailbox = config
            .from()
            .parse()
            .map_err(|e| format!("MAIL_FROM: {e}"))?;
        let transport = match &config.smtp_url {
            None => Transport::Log,
            Some(url) => {
                let (url, _) = lettre_url(url.expose()).map_err(|e| format!("SMTP_URL: {e}"))?;
                let builder = AsyncSmtpTransport::<Tokio1Executor>::from_url(&url)
                    .map_err(|e| format!("SMTP_URL: {e}"))?;
                // lettre's timeout bounds the connection only; `send` bounds the whole attempt.
                Transport::Smtp(builder.timeout(Some(config.smtp_timeout)).build())
            }
        };
        Ok(Self {
            transport,
            from,
            timeout: config.smtp_timeout,
        })
    }

    pub fn logs_only(&self) -> bool {
        matches!(self.transport, Transport::Log)
    }

    pub async fn send(&self, mail: &Mail) -> Result<(), SendFailure> {
        let to: Mailbox = mail.recipient.parse().map_err(|e| SendFailure {
            permanent: true,
            message: format!("the recipient is not a valid address: {e}"),
        })?;
        match &self.transport {
            Transport::Log => {
                tracing::info!(
                    to = %mail.recipient,
                    subject = %mail.subject,
                    body = %mail.body_text,
                    "mail written to the log (SMTP_URL is not set)"
                );
                Ok(())
            }
            Transport::Smtp(smtp) => {
                let message = Message::builder()
                    .from(self.from.clone())
                    .to(to)
                    .subject(mail.subject.clone())
                    .header(ContentType::TEXT_PLAIN)
                    .body(mail.body_text.clone())
                    .map_err(|e| SendFailure {
                        permanent: true,
                        message: format!("cannot build the message: {e}"),
                    })?;
                // lettre waits for each answer of the server without a deadline: a server that
                // accepts the connection (or the message) and never answers would hold the
                // worker, and every mail behind this one, for ever. An attempt that runs out of
                // time is retried like any transient failure (if the server had taken the
                // message after all, it is sent twice: SMTP cannot tell).
                match tokio::time::timeout(self.timeout, smtp.send(message)).await {
                    Ok(sent) => sent.map(|_| ()).map_err(|e| SendFailure {
                        permanent: e.is_permanent(),
                        message: e.to_string(),
                    }),
                    Err(_) => Err(SendFailure {
                        permanent: false,
                        message: format!(
                            "the SMTP server did not answer within {} s",
                            self.timeout.as_secs()
                        ),
                    }),
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn smtp_urls_use_starttls_where_offered_unless_told_otherwise() {
        assert_eq!(
            lettre_url("smtp://u:p@mail.example.com:587").unwrap(),
            (
                "smtp://u:p@mail.example.com:587?tls=opportunistic".to_string(),
                false
            )
        );
        assert_eq!(
            lettre_url("smtp://mail.example.com:2525?tls=none").unwrap(),
            ("smtp://mail.example.com:2525".to_string(), true)
        );
        assert_eq!(
            lettre_url("smtp://mail.example.com?tls=required")
                .unwrap()
                .0,
            "smtp://mail.example.com?tls=required"
        );
        assert_eq!(
            lettre_url("smtps://mail.example.com").unwrap().0,
            "smtps://mail.example.com"
        );
    }
}
