//! Accounts: registration, profile changes, deletion.

use crate::db::{self, sessions, users};
use crate::domain::{Account, Email, Name, Password};
use crate::error::{Error, FieldError, Result};
use crate::mail::templates;
use crate::service::audit::{self, EventType};
use crate::service::mfa::{self, SecondFactor, StepUp};
use crate::service::recovery::{self, Allowance, TokenOwner};
use crate::service::sessions::Caller;
use crate::service::{invitations, lockout};
use crate::state::AppState;

/// A new account, as validated at the boundary.
#[derive(Debug)]
pub struct Registration {
    pub email: Email,
    pub name: Name,
    pub password: Password,
    /// The token of an invitation (`service::invitations`), if the registration has one.
    pub invitation: Option<String>,
}

/// Registers an account, under REGISTRATION's rules (`invitations::gate`). With an invitation,
/// the token is looked at before the password is hashed (a bad one costs no hash) and accepted
/// in the transaction that inserts the account, which is then verified (the invitation proved
/// the address) and gets no verification mail.
#[tracing::instrument(skip_all)]
pub async fn register(state: &AppState, new: Registration) -> Result<Account> {
    invitations::gate(state, new.invitation.as_deref())?;
    if let Some(token) = &new.invitation {
        invitations::check(state, token, &new.email).await?;
    }
    let password_hash = state.hasher.hash(&new.password).await?;
    let now = state.clock.now_ms();
    let user = users::User {
        id: uuid::Uuid::new_v4().to_string(),
        email: new.email.as_str().to_string(),
        name: new.name.as_str().to_string(),
        password_hash,
        is_active: true,
        is_verified: new.invitation.is_some(),
        is_superuser: false,
        created_at: now,
        updated_at: now,
        security_stamp: 0,
    };
    // The unique index decides between concurrent registrations of one address, the
    // invitation's conditional update between concurrent uses of one invitation; the
    // verification mail is queued in the same transaction.
    let mut tx = state.db.begin().await?;
    let invitation = match &new.invitation {
        Some(token) => Some(invitations::accept_in(&mut tx, token, &new.email, now).await?),
        None => None,
    };
    match users::insert(&mut tx, &user).await {
        Ok(()) => {}
        Err(e) if db::is_unique_violation(&e) => return Err(Error::EmailTaken),
        Err(e) => return Err(e.into()),
    }
    let via = match &invitation {
        Some(id) => serde_json::json!({"via": "invitation", "invitation_id": id}),
        None => serde_json::json!({"via": "registration"}),
    };
    let created = audit::Event::new(EventType::UserCreated)
        .user(&user.id)
        .actor(&user.id)
        .detail(via);
    audit::record_in(state, &mut tx, created).await?;
    if let Some(invitation) = &invitation {
        invitations::link_account_in(&mut tx, invitation, &user.id).await?;
        tx.commit().await?;
        tracing::info!(user_id = %user.id, invitation_id = %invitation, "account registered by invitation");
        return Ok(user.into());
    }
    // Registering, deleting and registering again must not spray one address with mail.
    let granted = recovery::allowance(
        state,
        &mut tx,
        &user.id,
        recovery::REGISTRATION,
        &user.email,
        now,
    )
    .await?;
    if granted == Allowance::Granted {
        let owner = TokenOwner {
            id: &user.id,
            security_stamp: user.security_stamp,
        };
        recovery::queue_verification(state, &mut tx, owner, &user.email, now).await?;
    } else {
        tracing::info!(
            ?granted,
            "a verification mail went to this address moments ago; no mail"
        );
    }
    tx.commit().await?;
    state.mail_wakeup.notify_one();
    tracing::info!(user_id = %user.id, "account registered");
    Ok(user.into())
}

/// Checks the caller's password again before a sensitive change (403 when wrong; for an
/// account with a second factor, `mfa::step_up` calls this). An account without a password
/// proves a passkey instead: its session must have done so within MFA_STEP_UP_SECONDS
/// (`service::passkeys::require_passkey_proof`; else 403 STEP_UP_REQUIRED), and `password`,
/// which it may leave empty, is not looked at. The password is checked against the
/// credentials its session was found live under: the hash is read here, and if the account's
/// stamp has moved since (or the account is gone), no password is checked and the answer is the
/// 401 that the conditional write after it would have given. Each check is an attempt counted
/// by the lockout of the account's address, as a login is.
pub async fn confirm_password(
    state: &AppState,
    caller: &Caller,
    password: &Password,
) -> Result<()> {
    if !caller.account.has_password {
        return crate::service::passkeys::require_passkey_proof(state, caller);
    }
    let attempt = lockout::begin(state, &caller.account.email).await?;
    let stored = match users::find_by_id(&state.db, &caller.account.id).await {
        Ok(Some(user)) if user.security_stamp == caller.security_stamp => user,
        Ok(_) => {
            attempt.abandoned(state).await?;
            return Err(CREDENTIALS_CHANGED);
        }
        Err(e) => {
            attempt.abandoned(state).await?;
            return Err(e.into());
        }
    };
    let verification = match state
        .hasher
        .verify(
            password,
            Some(stored.password_hash.as_str()).filter(|h| !h.is_empty()),
        )
        .await
    {
        Ok(v) => v,
        Err(e) => {
            attempt.abandoned(state).await?;
            return Err(e);
        }
    };
    if verification.matches {
        attempt.succeeded(state).await
    } else {
        attempt.failed();
        Err(Error::WrongPassword)
    }
}

/// The caller's credentials changed while its request was under way (another session changed
/// the password, say): it must sign in again.
pub(crate) const CREDENTIALS_CHANGED: Error =
    Error::Unauthorized("the account's credentials changed meanwhile; sign in again");

/// A profile update as validated at the boundary; `None` leaves a field as it is.
#[derive(Debug, Default)]
pub struct ProfileUpdate {
    pub name: Option<Name>,
    pub email: Option<Email>,
    pub current_password: Option<Password>,
    /// The second factor, for an account that has one (see `mfa::step_up`).
    pub factor: Option<SecondFactor>,
}

#[tracing::instrument(skip_all, fields(user_id = %caller.account.id))]
pub async fn update_profile(
    state: &AppState,
    caller: &Caller,
    update: ProfileUpdate,
) -> Result<Account> {
    let user = &caller.account;
    let new_email = update.email.filter(|e| e.as_str() != user.email);
    let Some(new_email) = new_email else {
        return rename(state, caller, update.name.as_ref()).await;
    };
    // An account without a password proves a passkey instead (see `confirm_password`).
    let none = Password::given(String::new());
    let password = match &update.current_password {
        Some(password) => password,
        None if !user.has_password => &none,
        None => {
            return Err(Error::Validation(vec![FieldError::new(
                "current_password",
                "is required to change the email address",
            )]));
        }
    };
    mfa::step_up(
        state,
        caller,
        Some(password),
        update.factor.as_ref(),
        StepUp::CodeOrRecentPass,
    )
    .await?;
    let changes = users::ProfileChanges {
        name: update.name.as_ref().map(Name::as_str),
        email: Some(new_email.as_str()),
        unverify: true,
    };
    let now = state.clock.now_ms();
    let mut tx = state.db.begin().await?;
    let verification_mail = match recovery::allowance(
        state,
        &mut tx,
        &user.id,
        crate::db::one_time_tokens::VERIFY_EMAIL,
        new_email.as_str(),
        now,
    )
    .await?
    {
        Allowance::AccountExhausted(retry_after) => {
            return Err(Error::TooManyRequests { retry_after });
        }
        granted => granted,
    };
    // Checked against the credentials the password was confirmed with, from a live session.
    let updated = match users::update_profile(
        &mut tx,
        &user.id,
        caller.security_stamp,
        &caller.session_id,
        &changes,
        now,
    )
    .await
    {
        Ok(Some(updated)) => updated,
        Ok(None) => return Err(CREDENTIALS_CHANGED),
        Err(e) if db::is_unique_violation(&e) => return Err(Error::EmailTaken),
        Err(e) => return Err(e.into()),
    };
    // Every session of the account goes on under the new stamp; outstanding links and logins
    // still in flight do not.
    sessions::carry_forward(
        &mut tx,
        &user.id,
        caller.security_stamp,
        updated.security_stamp,
        None,
    )
    .await?;
    // A link to confirm the new address, and a word to the old one.
    if verification_mail == Allowance::Granted {
        let owner = TokenOwner {
            id: &user.id,
            security_stamp: updated.security_stamp,
        };
        recovery::queue_verification(state, &mut tx, owner, new_email.as_str(), now).await?;
    }
    let notice = templates::email_changed(&user.email, new_email.as_str());
    recovery::queue_notice(
        state,
        &mut tx,
        recovery::NOTICE_EMAIL_CHANGED,
        &user.email,
        notice,
        now,
    )
    .await?;
    tx.commit().await?;
    state.mail_wakeup.notify_one();
    tracing::info!("email address changed");
    Ok(updated.into())
}

/// A change of name (or nothing): no credential is involved, so a concurrent credential change
/// that the caller's session survived only means a fresh read of the account.
async fn rename(state: &AppState, caller: &Caller, name: Option<&Name>) -> Result<Account> {
    let changes = users::ProfileChanges {
        name: name.map(Name::as_str),
        email: None,
        unverify: false,
    };
    let mut stamp = caller.security_stamp;
    for _ in 0..3 {
        let now = state.clock.now_ms();
        let mut tx = state.db.begin().await?;
        let updated = users::update_profile(
            &mut tx,
            &caller.account.id,
            stamp,
            &caller.session_id,
            &changes,
            now,
        )
        .await?;
        if let Some(updated) = updated {
            tx.commit().await?;
            return Ok(updated.into());
        }
        drop(tx);
        stamp = users::find_by_id(&state.db, &caller.account.id)
            .await?
            .ok_or(CREDENTIALS_CHANGED)?
            .security_stamp;
    }
    Err(Error::Busy {
        retry_after: std::time::Duration::from_secs(1),
    })
}

/// Deletes the caller's account, its sessions and tokens, after checking its password: only
/// while its credentials are those the password was checked against and the caller's session is
/// still live.
#[tracing::instrument(skip_all, fields(user_id = %caller.account.id))]
pub async fn delete_account(
    state: &AppState,
    caller: &Caller,
    password: &Password,
    factor: Option<&SecondFactor>,
) -> Result<()> {
    mfa::step_up(
        state,
        caller,
        Some(password),
        factor,
        StepUp::CodeOrRecentPass,
    )
    .await?;
    let id = &caller.account.id;
    if !users::delete_own(&state.db, id, caller.security_stamp, &caller.session_id).await? {
        return Err(CREDENTIALS_CHANGED);
    }
    tracing::info!("account deleted");
    Ok(())
}

/// Changes the caller's password: checks the current one, ends every other session, keeps this one.
#[tracing::instrument(skip_all, fields(user_id = %caller.account.id))]
pub async fn change_password(
    state: &AppState,
    caller: &Caller,
    current: &Password,
    new: &Password,
    factor: Option<&SecondFactor>,
) -> Result<()> {
    mfa::step_up(
        state,
        caller,
        Some(current),
        factor,
        StepUp::CodeOrRecentPass,
    )
    .await?;
    let new_hash = state.hasher.hash(new).await?;
    let now = state.clock.now_ms();
    let mut tx = state.db.begin().await?;
    let changed = users::set_password_hash(
        &mut tx,
        &users::NewPassword {
            id: &caller.account.id,
            hash: &new_hash,
            expected_stamp: caller.security_stamp,
            reset_email: None,
            session_id: Some(&caller.session_id),
        },
        now,
    )
    .await?
    .ok_or(CREDENTIALS_CHANGED)?;
    let ended =
        sessions::revoke_all_of_user_in(&mut tx, &caller.account.id, Some(&caller.session_id), now)
            .await?;
    sessions::carry_forward(
        &mut tx,
        &caller.account.id,
        caller.security_stamp,
        changed.security_stamp,
        Some(&caller.session_id),
    )
    .await?;
    recovery::queue_notice(
        state,
        &mut tx,
        recovery::NOTICE_PASSWORD_CHANGED,
        &changed.email,
        templates::password_changed(),
        now,
    )
    .await?;
    tx.commit().await?;
    state.mail_wakeup.notify_one();
    tracing::info!(sessions_ended = ended, "password changed");
    Ok(())
}
