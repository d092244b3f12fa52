//! Mail: where it goes, whom it is from, how long its links last, how much of it one address or
//! account may cause, and how a failed one is retried.

use std::time::Duration;

use super::values::{
    capped, converted, hours, minutes, positive, positive_at_most, positive_capped, seconds, text,
};
use super::{ConfigError, Secret};

/// The From of every mail when no SMTP server is configured (mail is then only logged).
const LOG_ONLY_FROM: &str = "auth-server <no-reply@localhost>";

/// The longest MAIL_SMTP_TIMEOUT_SECONDS: an attempt must end well within the outbox worker's
/// claim on the mail (two minutes), or another instance could send it at the same time.
pub const SMTP_TIMEOUT_MAX_SECONDS: u64 = 60;

#[derive(Clone, Debug, clap::Args)]
#[command(next_help_heading = "Mail")]
pub struct MailConfig {
    /// smtp://user:password@host:587 (STARTTLS where offered; ?tls=required or ?tls=none) or
    /// smtps://...:465. Unset: each mail is written to the log instead (development)
    #[arg(
        long = "smtp-url",
        env = "SMTP_URL",
        value_name = "URL",
        value_parser = smtp_url,
        hide_env_values = true
    )]
    pub smtp_url: Option<Secret<String>>,

    /// The From of every mail, such as `Example <no-reply@example.com>` (required with SMTP_URL)
    #[arg(
        long = "mail-from",
        env = "MAIL_FROM",
        value_name = "MAILBOX",
        value_parser = text
    )]
    from: Option<String>,

    /// How long a password-reset link lasts (at most 30 days)
    #[arg(
        long = "password-reset-expire-minutes",
        env = "PASSWORD_RESET_EXPIRE_MINUTES",
        value_name = "MINUTES",
        default_value = "30",
        value_parser = minutes(positive_capped(60 * 24 * 30))
    )]
    pub password_reset_ttl: Duration,

    /// How long an email-verification link lasts (at most a year)
    #[arg(
        long = "verify-email-expire-hours",
        env = "VERIFY_EMAIL_EXPIRE_HOURS",
        value_name = "HOURS",
        default_value = "24",
        value_parser = hours(positive_capped(24 * 365))
    )]
    pub verify_email_ttl: Duration,

    /// At most one mail of each kind (reset, verification, notice) per address per this interval
    /// (0: no limit; at most a day)
    #[arg(
        long = "mail-rate-limit-seconds",
        env = "MAIL_RATE_LIMIT_SECONDS",
        value_name = "SECONDS",
        default_value = "60",
        value_parser = seconds(capped(86_400))
    )]
    pub rate_limit: Duration,

    /// Mails one account may cause per clock hour (verification, reset, email changes); notices
    /// of a changed email or password are not counted, so they cannot be suppressed by using the
    /// allowance up
    #[arg(
        long = "mail-account-limit-per-hour",
        env = "MAIL_ACCOUNT_LIMIT_PER_HOUR",
        value_name = "N",
        default_value = "10",
        value_parser = converted(positive::<u64>, |n| u32::try_from(n).unwrap_or(u32::MAX))
    )]
    pub account_limit_per_hour: u32,

    /// The first retry of a mail that could not be sent waits this long, each next one twice as
    /// long, up to an hour (at most 3600)
    #[arg(
        long = "mail-retry-base-seconds",
        env = "MAIL_RETRY_BASE_SECONDS",
        value_name = "SECONDS",
        default_value = "5",
        value_parser = seconds(positive_capped(3600))
    )]
    pub retry_base: Duration,

    /// Attempts after which a mail is marked failed for good (at most 100)
    #[arg(
        long = "mail-max-attempts",
        env = "MAIL_MAX_ATTEMPTS",
        value_name = "N",
        default_value = "10",
        value_parser = converted(positive_capped(100u64), |n| n as u32)
    )]
    pub max_attempts: u32,

    /// How long one delivery attempt may take, from connecting to the SMTP server's answer to
    /// the message; a server that takes longer (or never answers) fails the attempt, which is
    /// retried (1 to 60)
    #[arg(
        long = "mail-smtp-timeout-seconds",
        env = "MAIL_SMTP_TIMEOUT_SECONDS",
        value_name = "SECONDS",
        default_value = "20",
        value_parser = seconds(positive_at_most(SMTP_TIMEOUT_MAX_SECONDS))
    )]
    pub smtp_timeout: Duration,
}

fn smtp_url(text: &str) -> Result<Secret<String>, String> {
    let url = text.trim();
    // The URL holds the password: no error repeats it.
    let parsed = url::Url::parse(url).map_err(|e| format!("not a URL: {e}"))?;
    if !matches!(parsed.scheme(), "smtp" | "smtps") || parsed.host_str().is_none() {
        return Err("expected smtp://user:password@host:port or smtps://...".into());
    }
    Ok(Secret::new(url.to_string()))
}

impl MailConfig {
    /// A From is required with an SMTP server, and must be an address.
    pub fn validate(&mut self) -> Result<(), ConfigError> {
        if self.from.is_none() && self.smtp_url.is_some() {
            return Err(ConfigError::new(
                "MAIL_FROM",
                "is required when SMTP_URL is set",
            ));
        }
        let from = self.from();
        if from.parse::<lettre::message::Mailbox>().is_err() {
            return Err(ConfigError::new(
                "MAIL_FROM",
                format!("`{from}` is not an address such as `Example <no-reply@example.com>`"),
            ));
        }
        Ok(())
    }

    /// The From of every mail: MAIL_FROM, or without an SMTP server a placeholder.
    pub fn from(&self) -> &str {
        self.from.as_deref().unwrap_or(LOG_ONLY_FROM)
    }
}
