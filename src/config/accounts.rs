//! The account rules that are configurable: how strong a new password must be, and whether an
//! unverified account may log in.

use super::values::{boolean, parsed};

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
