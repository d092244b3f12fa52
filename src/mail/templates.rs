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

/// An invitation to register: the link opens the registration page with the invitation, the
/// address filled in. `name` is the name the superuser gave, if any.
pub fn invitation(public_url: &str, token: &str, hours: u64, name: Option<&str>) -> Composed {
    let greeting = match name {
        Some(name) => format!("Hello {name},\n\n"),
        None => String::new(),
    };
    Composed {
        subject: "You are invited to create an account".into(),
        body: format!(
            "{greeting}An administrator invited this email address to create an account.\n\n\
             To create it, open this link within {hours} hours:\n\n\
             {public_url}/register?invitation={token}\n\n\
             The link works once, for this address only. If you did not expect this, ignore this \
             mail: no account is created without you.\n"
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
        "An administrator removed the second factors (the authenticator app, the recovery \
         codes and the passkeys) of the account with this email address, and the account was \
         signed out everywhere. Signing in now needs the password only (if the account had no \
         password, ask for a password reset link): set up a second factor again."
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

/// A passkey was registered, named `name`.
pub fn passkey_added(name: &str) -> Composed {
    Composed {
        subject: "A passkey was added to your account".into(),
        body: format!(
            "A passkey named \"{name}\" was added to the account with this email address, and \
             the account was signed out of its other sessions. It can now be used to sign in.\n\n\
             If you did not do this, remove the passkey, reset your password at once and contact \
             support.\n"
        ),
    }
}

/// A passkey was removed.
pub fn passkey_removed(name: &str) -> Composed {
    Composed {
        subject: "A passkey was removed from your account".into(),
        body: format!(
            "The passkey named \"{name}\" was removed from the account with this email address; \
             it can no longer be used to sign in.\n\n\
             If you did not do this, reset your password at once and contact support.\n"
        ),
    }
}

/// A passkey's signature counter did not grow: it may have been copied.
pub fn passkey_counter_regressed(name: &str, refused: bool) -> Composed {
    let what = if refused {
        "The sign-in was refused."
    } else {
        "The sign-in was let through, as this server is configured to do."
    };
    Composed {
        subject: "A passkey of your account may have been copied".into(),
        body: format!(
            "The passkey named \"{name}\" of the account with this email address was just used \
             with a signature counter that did not grow since its last use. This happens when the \
             passkey's key was copied to another device (a cloned security key). {what}\n\n\
             If you do not recognise this, remove that passkey, reset your password and contact \
             support. This notice is sent once per passkey.\n"
        ),
    }
}

/// The account's password was removed: it signs in with its passkeys only.
pub fn password_removed() -> Composed {
    Composed {
        subject: "The password of your account was removed".into(),
        body: "The password of the account with this email address was removed: it now signs in \
               with its passkeys only, and it was signed out of its other sessions. A password \
               reset link sets a password again.\n\n\
               If you did not do this, ask for a password reset link at once and contact support.\n"
            .into(),
    }
}
