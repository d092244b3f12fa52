//! The account rules that are configurable: how strong a new password must be, whether an
//! unverified account may log in, who may register (open, by invitation, nobody) and how long
//! an invitation lasts.

use std::str::FromStr;
use std::time::Duration;

use super::values::{boolean, hours, parsed, positive_at_most};

/// The longest password accepted (a bound on hashing work, not a policy).
pub const PASSWORD_MAX_LENGTH: usize = 128;
const DEFAULT_PASSWORD_MIN_LENGTH: usize = 8;

#[derive(Clone, Debug, clap::Args)]
#[command(next_help_heading = "Accounts")]
pub struct AccountPolicy {
    /// The fewest characters a new password may have (8 to 128; it can only be raised)
    #[arg(
        long = "password-min-length",
        env = "PASSWORD_MIN_LENGTH",
        value_name = "N",
        default_value_t = DEFAULT_PASSWORD_MIN_LENGTH,
        value_parser = password_min_length
    )]
    pub password_min_length: usize,

    /// The lowest zxcvbn score (0 to 4) a new password may have
    #[arg(
        long = "password-min-score",
        env = "PASSWORD_MIN_SCORE",
        value_name = "SCORE",
        default_value = "2",
        value_parser = password_min_score
    )]
    pub password_min_score: u8,

    /// true: unverified accounts cannot log in (403 EMAIL_NOT_VERIFIED)
    #[arg(
        long = "require-verified-email",
        env = "REQUIRE_VERIFIED_EMAIL",
        value_name = "BOOL",
        default_value = "false",
        num_args = 0..=1,
        default_missing_value = "true",
        value_parser = boolean
    )]
    pub require_verified_email: bool,

    /// Who may register: `open` (anyone), `invite` (only with a superuser's invitation: POST
    /// /invitations), `closed` (nobody: accounts come from create-superuser and import-users)
    #[arg(
        long = "registration",
        env = "REGISTRATION",
        value_name = "MODE",
        default_value = "open",
        value_parser = parsed::<RegistrationMode>
    )]
    pub registration: RegistrationMode,

    /// How long an invitation's link lasts (1 to 8760 hours)
    #[arg(
        long = "invitation-expire-hours",
        env = "INVITATION_EXPIRE_HOURS",
        value_name = "HOURS",
        default_value = "72",
        value_parser = hours(positive_at_most(24 * 365))
    )]
    pub invitation_ttl: Duration,
}

/// REGISTRATION: who may create an account through POST /register (and the registration page).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RegistrationMode {
    /// Anyone; an invitation, when one is sent, still makes the account verified.
    Open,
    /// Only with a valid invitation.
    Invite,
    /// Nobody (403 REGISTRATION_CLOSED), invitation or not.
    Closed,
}

impl FromStr for RegistrationMode {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "open" => Ok(Self::Open),
            "invite" => Ok(Self::Invite),
            "closed" => Ok(Self::Closed),
            _ => Err(format!("`{s}` is not one of open, invite, closed")),
        }
    }
}

fn password_min_length(text: &str) -> Result<usize, String> {
    let length: usize = parsed(text)?;
    if !(DEFAULT_PASSWORD_MIN_LENGTH..=PASSWORD_MAX_LENGTH).contains(&length) {
        return Err(format!(
            "{length} must be between {DEFAULT_PASSWORD_MIN_LENGTH} and {PASSWORD_MAX_LENGTH} (it can only be raised)"
        ));
    }
    Ok(length)
}

fn password_min_score(text: &str) -> Result<u8, String> {
    let score: u8 = parsed(text)?;
    if score > 4 {
        return Err(format!("{score} must be 0 to 4"));
    }
    Ok(score)
}
