//! The second factor: the key that seals TOTP secrets, who must have a second factor, and the
//! windows of the MFA login, step-up and the superuser's reset.

use std::str::FromStr;
use std::time::Duration;

use base64::Engine as _;

use super::Secret;
use super::values::{at_most, hours, parsed, seconds, text, within};

#[derive(Clone, Debug, clap::Args)]
#[command(next_help_heading = "Second factor")]
pub struct MfaConfig {
    /// 32 bytes, base64 (for example `openssl rand -base64 32`): seals TOTP secrets at rest and
    /// keys the recovery-code hashes; every instance needs the same. Unset: derived from
    /// SECRET_KEY (then changing SECRET_KEY makes enrolled authenticators unusable)
    #[arg(
        long = "mfa-encryption-key",
        env = "MFA_ENCRYPTION_KEY",
        value_name = "KEY",
        value_parser = encryption_key,
        hide_env_values = true
    )]
    pub encryption_key: Option<Secret<[u8; 32]>>,

    /// The issuer name authenticator apps show beside the account
    #[arg(
        long = "mfa-issuer",
        env = "MFA_ISSUER",
        value_name = "NAME",
        default_value = "auth-server",
        value_parser = text
    )]
    pub issuer: String,

    /// Who must have a second factor: nobody, superusers or everyone. Until they enrol, such
    /// accounts can do nothing but enrol (403 MFA_ENROLMENT_REQUIRED)
    #[arg(
        long = "mfa-required-for",
        env = "MFA_REQUIRED_FOR",
        value_name = "WHO",
        default_value = "nobody",
        value_parser = parsed::<MfaRequiredFor>
    )]
    pub required_for: MfaRequiredFor,

    /// The lifetime of the `mfa_token` a login answers with (60 to 900)
    #[arg(
        long = "mfa-token-expire-seconds",
        env = "MFA_TOKEN_EXPIRE_SECONDS",
        value_name = "SECONDS",
        default_value = "300",
        value_parser = seconds(within(60u64, 900))
    )]
    pub token_ttl: Duration,

    /// How long after passing the second factor a session may make a sensitive change without
    /// sending a code again (0 to 3600; 0: always send one)
    #[arg(
        long = "mfa-step-up-seconds",
        env = "MFA_STEP_UP_SECONDS",
        value_name = "SECONDS",
        default_value = "300",
        value_parser = seconds(at_most(3600u64))
    )]
    pub step_up: Duration,

    /// How long a superuser's removal of a user's second factor waits before it takes effect,
    /// while the user is told and can cancel it (0 to 720; 0: at once)
    #[arg(
        long = "mfa-reset-delay-hours",
        env = "MFA_RESET_DELAY_HOURS",
        value_name = "HOURS",
        default_value = "0",
        value_parser = hours(at_most(720u64))
    )]
    pub reset_delay: Duration,
}

/// Which accounts MFA_REQUIRED_FOR covers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MfaRequiredFor {
    Nobody,
    Superusers,
    Everyone,
}

impl MfaRequiredFor {
    /// Whether an account with this superuser flag must have a second factor.
    pub fn covers(self, is_superuser: bool) -> bool {
        match self {
            Self::Nobody => false,
            Self::Superusers => is_superuser,
            Self::Everyone => true,
        }
    }
}

impl FromStr for MfaRequiredFor {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "nobody" | "none" => Ok(Self::Nobody),
            "superusers" => Ok(Self::Superusers),
            "everyone" | "all" => Ok(Self::Everyone),
            _ => Err(format!("`{s}` is not one of nobody, superusers, everyone")),
        }
    }
}

fn encryption_key(text: &str) -> Result<Secret<[u8; 32]>, String> {
    use base64::engine::general_purpose::{STANDARD_NO_PAD, URL_SAFE_NO_PAD};
    let trimmed = text.trim().trim_end_matches('=');
    let bytes = STANDARD_NO_PAD
        .decode(trimmed)
        .or_else(|_| URL_SAFE_NO_PAD.decode(trimmed))
        .map_err(|_| "must be base64 (for example `openssl rand -base64 32`)".to_string())?;
    let key: [u8; 32] = bytes.try_into().map_err(|bytes: Vec<u8>| {
        format!(
            "must be 32 bytes, base64-encoded (for example `openssl rand -base64 32`); this is {}",
            bytes.len()
        )
    })?;
    Ok(Secret::new(key))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_encryption_key_is_32_bytes_of_base64() {
        let key = [7u8; 32];
        let standard = base64::engine::general_purpose::STANDARD.encode(key);
        let url_safe = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode([0xfbu8; 32]);
        assert_eq!(encryption_key(&standard).unwrap().expose(), &key);
        assert_eq!(encryption_key(&url_safe).unwrap().expose(), &[0xfb; 32]);
        let short = base64::engine::general_purpose::STANDARD.encode([1u8; 31]);
        assert!(encryption_key(&short).unwrap_err().contains("this is 31"));
        assert!(encryption_key("not base64!").is_err());
    }

    #[test]
    fn the_policy_names_who_it_covers() {
        let p = |s: &str| s.parse::<MfaRequiredFor>().unwrap();
        assert!(!p("nobody").covers(true));
        assert!(p("superusers").covers(true) && !p("superusers").covers(false));
        assert!(p("EVERYONE").covers(false));
        assert!("admins".parse::<MfaRequiredFor>().is_err());
    }
}
