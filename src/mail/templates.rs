//! The mails this server writes: plain text, with links built from PUBLIC_URL only.

pub struct Composed {
    pub subject: String,
    pub body: String,
}

pub fn password_reset(public_url: &str, token: &str, minutes: u64) -> Composed {
    Composed {
        subject: "Reset your password".into(),
        body: format!(
            "Someone asked to reset the password of the account with this email address.\n\n\
             To choose a new password, open this link within {minutes} minutes:\n\n\
             {public_url}/reset-password?token={token}\n\n\
             The link works once. If you did not ask for this, ignore this mail: your password stays as it is.\n"
        ),
    }
}

pub fn verify_email(public_url: &str, token: &str, hours: u64) -> Composed {
    Composed {
        subject: "Confirm your email address".into(),
        body: format!(
            "To confirm that this address is yours, open this link within {hours} hours:\n\n\
             {public_url}/verify-email?token={token}\n\n\
             If you did not create an account or change its address, ignore this mail.\n"
        ),
    }
}

pub fn email_changed(old: &str, new: &str) -> Composed {
    Composed {
        subject: "Your email address was changed".into(),
        body: format!(
            "The email address of your account was changed from {old} to {new}.\n\n\
             If you did not do this, reset your password at once and contact support.\n"
        ),
    }
}

pub fn password_changed() -> Composed {
    Composed {
        subject: "Your password was changed".into(),
        body: "The password of the account with this email address was changed, and the account \
               was signed out of its other sessions.\n\n\
               If you did not do this, reset your password at once and contact support.\n"
            .into(),
    }
}
