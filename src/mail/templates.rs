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

pub fn mfa_enabled() -> Composed {
    Composed {
        subject: "A second factor was added to your account".into(),
        body: "An authenticator app (TOTP) was set up as the second factor of the account with \
               this email address, and the account was signed out of its other sessions.\n\n\
               If you did not do this, reset your password at once and contact support.\n"
            .into(),
    }
}

/// The factor was removed: by the user (`by_admin` false) or by a superuser's reset.
pub fn mfa_removed(by_admin: bool) -> Composed {
    let who = if by_admin {
        "An administrator removed the second factor (the authenticator app and the recovery \
         codes) of the account with this email address, and the account was signed out \
         everywhere. Signing in now needs the password only: set up a second factor again."
    } else {
        "The second factor (the authenticator app and the recovery codes) of the account with \
         this email address was turned off. Signing in now needs the password only."
    };
    Composed {
        subject: "The second factor was removed from your account".into(),
        body: format!(
            "{who}\n\nIf you did not ask for this, reset your password at once and contact support.\n"
        ),
    }
}

/// A superuser asked to remove the factor; it happens at `due` unless the user cancels.
pub fn mfa_reset_requested(due: &str) -> Composed {
    Composed {
        subject: "An administrator asked to remove your second factor".into(),
        body: format!(
            "An administrator asked to remove the second factor of the account with this email \
             address. It will be removed at {due} (UTC).\n\n\
             If you did not ask for this, sign in and cancel it (DELETE /me/mfa/reset), then \
             contact support: someone may be trying to take over your account.\n"
        ),
    }
}

/// A recovery code was used to sign in or confirm a change; `left` remain.
pub fn recovery_code_used(left: i64) -> Composed {
    Composed {
        subject: "A recovery code was used".into(),
        body: format!(
            "One of the recovery codes of the account with this email address was just used. \
             {left} unused recovery codes remain.\n\n\
             If this was not you, your password and a recovery code are known to someone else: \
             reset your password and make new recovery codes at once.\n"
        ),
    }
}

/// A new set of recovery codes was made (the old set no longer works).
pub fn recovery_codes_replaced() -> Composed {
    Composed {
        subject: "New recovery codes were made for your account".into(),
        body: "A new set of recovery codes was made for the account with this email address; \
               the previous codes no longer work.\n\n\
               If you did not do this, reset your password at once and contact support.\n"
            .into(),
    }
}
