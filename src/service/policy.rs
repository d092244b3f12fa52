//! The password policy, applied to every new password (registration, change, reset, the CLI):
//! 8 to 128 characters (PASSWORD_MIN_LENGTH raises the minimum), no composition rules, and not
//! too guessable: zxcvbn, which knows the common-password and dictionary lists, estimates it,
//! given the account's email and name, and it must reach PASSWORD_MIN_SCORE.

use crate::config::Config;
use crate::domain::Password;
use crate::error::FieldError;

/// Checks a new password. `context` holds what it must not be built from (email, name).
pub fn new_password(
    config: &Config,
    field: &str,
    raw: String,
    context: &[&str],
) -> Result<Password, FieldError> {
    let password = Password::new_password(field, raw, config.accounts.password_min_length)?;
    // The parts of the email and name too: `alice` from `alice@example.com`, each word of a name.
    let mut inputs: Vec<String> = Vec::new();
    for item in context {
        let item = item.to_lowercase();
        inputs.extend(
            item.split(|c: char| !c.is_alphanumeric())
                .filter(|p| p.chars().count() >= 3)
                .map(str::to_string),
        );
        inputs.push(item);
    }
    let inputs: Vec<&str> = inputs.iter().map(String::as_str).collect();
    let estimate = zxcvbn::zxcvbn(password.expose(), &inputs);
    if u8::from(estimate.score()) >= config.accounts.password_min_score {
        return Ok(password);
    }
    let mut message = String::from("is too easy to guess");
    if let Some(feedback) = estimate.feedback() {
        if let Some(warning) = feedback.warning() {
            message.push_str(&format!(
                " ({})",
                warning.to_string().trim_end_matches('.').to_lowercase()
            ));
        }
        let suggestions: Vec<String> = feedback
            .suggestions()
            .iter()
            .map(ToString::to_string)
            .collect();
        if !suggestions.is_empty() {
            message.push_str(". ");
            message.push_str(&suggestions.join(" "));
        }
    }
    if !message.ends_with('.') {
        message.push('.');
    }
    message
        .push_str(" A passphrase of several unrelated words is long enough and easy to remember.");
    Err(FieldError::new(field, message))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> Config {
        Config::from_vars([("SECRET_KEY", "k".repeat(32))]).unwrap()
    }

    #[test]
    fn guessable_passwords_are_refused_with_a_reason() {
        let c = config();
        for weak in [
            "password",
            "12345678",
            "qwertyuiop",
            "iloveyou1",
            "aaaaaaaaaa",
        ] {
            let e = new_password(&c, "password", weak.into(), &[]).unwrap_err();
            assert!(
                e.message.starts_with("is too easy to guess"),
                "{weak}: {}",
                e.message
            );
        }
        let e = new_password(
            &c,
            "password",
            "alice.liddell@example.com".into(),
            &["alice.liddell@example.com", "Alice Liddell"],
        );
        assert!(e.is_err());
        let e = new_password(
            &c,
            "password",
            "AliceLiddell".into(),
            &["alice.liddell@example.com", "Alice Liddell"],
        );
        assert!(e.is_err());
    }

    #[test]
    fn good_passphrases_pass() {
        let c = config();
        for good in [
            "correct horse battery staple",
            "ñ7ü€ß9Ωж",
            "a brand new passphrase",
        ] {
            assert!(
                new_password(&c, "password", good.into(), &["bob@example.com", "Bob"]).is_ok(),
                "{good}"
            );
        }
    }

    #[test]
    fn the_score_threshold_is_configurable() {
        let c = Config::from_vars([
            ("SECRET_KEY", "k".repeat(32)),
            ("PASSWORD_MIN_SCORE", "0".into()),
        ])
        .unwrap();
        assert!(new_password(&c, "password", "password".into(), &[]).is_ok());
    }
}
