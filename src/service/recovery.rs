//! Password reset and email verification: single-use tokens (256 bits from the OS, stored only
//! as a hash) mailed as links built from PUBLIC_URL; and the limits on the mail an account can
//! cause.
//!
//! A token carries the account's security stamp and the address it was mailed to: it is good
//! only while both are still the account's (checked in the statement that spends it and in the
//! one that applies it), so any change of email, password, active or superuser flag kills every
//! outstanding link, and a link never resets or verifies an address it was not mailed to.

use std::time::Duration;

use crate::auth::tokens::{hash_token_id, random_token};
use crate::db::{
    Tx, login_attempts, mail_quota, one_time_tokens, outbox, sessions, throttle, users,
};
use crate::domain::{Account, Email};
use crate::error::{Error, Result};
use crate::mail::templates;
use crate::service::audit::{self, EventType};
use crate::service::ms;
use crate::service::policy;
use crate::service::sessions::Caller;
use crate::state::AppState;

/// The kinds of mail, each limited per address on its own.
pub(crate) const REGISTRATION: &str = "register";
pub(crate) const NOTICE_EMAIL_CHANGED: &str = "notice_email";
pub(crate) const NOTICE_PASSWORD_CHANGED: &str = "notice_password";

const HOUR_MS: i64 = 3_600_000;

/// Whether a mail caused by an account may go out.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Allowance {
    Granted,
    /// One of this kind went to the address too recently: no mail, nothing else changes.
    AddressThrottled,
    /// The account has caused its hourly allowance of mail; the next window opens after this.
    AccountExhausted(Duration),
}

/// Takes, inside `tx`, one mail of `kind` to `address` from the allowances: first the account's
/// (MAIL_ACCOUNT_LIMIT_PER_HOUR), then the address's (one per MAIL_RATE_LIMIT_SECONDS). Only
/// for mail that the account itself asks for (registration, verification, email changes):
/// reset requests, which anyone can make, are limited per address only. What was taken stays
/// taken only if the caller commits: requests that send nothing roll back, an email change
/// commits (so every change counts, mailed or not).
pub(crate) async fn allowance(
    state: &AppState,
    tx: &mut Tx,
    user_id: &str,
    kind: &str,
    address: &str,
    now: i64,
) -> Result<Allowance> {
    let window_start = now - now.rem_euclid(HOUR_MS);
    let limit = i64::from(state.config.mail.account_limit_per_hour);
    if !mail_quota::try_take(tx, user_id, 1, limit, window_start).await? {
        let wait = window_start + HOUR_MS - now;
        return Ok(Allowance::AccountExhausted(Duration::from_millis(
            u64::try_from(wait).unwrap_or(0),
        )));
    }
    if !address_allows(state, tx, kind, address, now).await? {
        return Ok(Allowance::AddressThrottled);
    }
    Ok(Allowance::Granted)
}

/// The per-address limit alone: one mail of `kind` to `address` per MAIL_RATE_LIMIT_SECONDS.
async fn address_allows(
    state: &AppState,
    tx: &mut Tx,
    kind: &str,
    address: &str,
    now: i64,
) -> Result<bool> {
    let key = format!("{kind}:{address}");
    Ok(throttle::try_take(tx, &key, now, ms(state.config.mail.rate_limit)).await?)
}

/// Queues a notice (a changed email or password) to `address`, with no token in it. Notices are
/// limited per address only, so that using up the account's allowance cannot hide a change.
pub(crate) async fn queue_notice(
    state: &AppState,
    tx: &mut Tx,
    kind: &str,
    address: &str,
    mail: templates::Composed,
    now: i64,
) -> Result<()> {
    if address_allows(state, tx, kind, address, now).await? {
        outbox::enqueue(tx, address, &mail.subject, &mail.body, now).await?;
    } else {
        tracing::info!(
            kind,
            "a notice of this kind went to the address moments ago; no mail"
        );
    }
    Ok(())
}

/// Queues a notice that no limit may hold back: a superuser acted on the account (the user must
/// hear of it every time, however soon after the last one). Only for what a superuser, not
/// anyone with an address, can cause.
pub(crate) async fn queue_security_notice(
    tx: &mut Tx,
    address: &str,
    mail: templates::Composed,
    now: i64,
) -> Result<()> {
    outbox::enqueue(tx, address, &mail.subject, &mail.body, now).await?;
    Ok(())
}

/// The account a token is for: its id and the security stamp it must still have.
#[derive(Clone, Copy, Debug)]
pub(crate) struct TokenOwner<'a> {
    pub id: &'a str,
    pub security_stamp: i64,
}

/// Writes a verification token for `email` and its mail, inside `tx` (the caller has taken
/// the allowance).
pub(crate) async fn queue_verification(
    state: &AppState,
    tx: &mut Tx,
    owner: TokenOwner<'_>,
    email: &str,
    now: i64,
) -> Result<()> {
    let token = random_token();
    one_time_tokens::replace(
        tx,
        &one_time_tokens::NewToken {
            token_hash: &hash_token_id(&token),
            user_id: owner.id,
            purpose: one_time_tokens::VERIFY_EMAIL,
            email,
            user_stamp: owner.security_stamp,
            created_at: now,
            expires_at: now + ms(state.config.mail.verify_email_ttl),
        },
    )
    .await?;
    let hours = state.config.mail.verify_email_ttl.as_secs() / 3600;
    let mail = templates::verify_email(&state.config.server.public_url, &token, hours);
    outbox::enqueue(tx, email, &mail.subject, &mail.body, now).await?;
    Ok(())
}

/// Starts a password reset. Answers the same, at once, whether or not the account exists: the
/// work runs beside the request, so neither the answer nor its timing tells. The work carries
/// the request's origin for its audit event.
pub fn request_password_reset(state: &AppState, email: Email) {
    let state = state.clone();
    let origin = audit::current_origin();
    tokio::spawn(audit::with_origin(origin, async move {
        if let Err(e) = queue_password_reset(&state, &email).await {
            tracing::warn!(error = %e, "password reset request could not be queued");
        }
    }));
}

async fn queue_password_reset(state: &AppState, email: &Email) -> Result<()> {
    let Some(user) = users::find_by_email(&state.db, email.as_str()).await? else {
        tracing::info!("password reset requested for an address with no account; no mail");
        return Ok(());
    };
    if !user.is_active {
        tracing::info!(user_id = %user.id, "password reset requested for a deactivated account; no mail");
        return Ok(());
    }
    let now = state.clock.now_ms();
    let mut tx = state.db.begin().await?;
    // Anyone may ask for a reset of any address: it is limited per address only, and does not
    // spend the account's allowance (which a stranger could otherwise use up).
    if queue_reset_mail(state, &mut tx, &user, now)
        .await?
        .is_some()
    {
        tracing::info!(user_id = %user.id, "password reset mail limit reached; no mail");
        return Ok(());
    }
    let requested = audit::Event::new(EventType::PasswordResetRequested).user(&user.id);
    audit::record_in(state, &mut tx, requested).await?;
    tx.commit().await?;
    state.mail_wakeup.notify_one();
    tracing::info!(user_id = %user.id, "password reset mail queued");
    Ok(())
}

/// Queues a reset link for `user` inside `tx`, under the per-address limit (one per
/// MAIL_RATE_LIMIT_SECONDS): `None` when queued, else how long until the address may have the
/// next one (and nothing was queued).
async fn queue_reset_mail(
    state: &AppState,
    tx: &mut Tx,
    user: &users::User,
    now: i64,
) -> Result<Option<Duration>> {
    let kind = one_time_tokens::PASSWORD_RESET;
    if !address_allows(state, tx, kind, &user.email, now).await? {
        let key = format!("{kind}:{}", user.email);
        let last = throttle::last_sent_in(tx, &key).await?.unwrap_or(now);
        let wait = last
            .saturating_add(ms(state.config.mail.rate_limit))
            .saturating_sub(now)
            .max(1_000);
        return Ok(Some(Duration::from_millis(
            u64::try_from(wait).unwrap_or(1_000),
        )));
    }
    let token = random_token();
    one_time_tokens::replace(
        tx,
        &one_time_tokens::NewToken {
            token_hash: &hash_token_id(&token),
            user_id: &user.id,
            purpose: one_time_tokens::PASSWORD_RESET,
            email: &user.email,
            // Read with the address: if either has changed by now, the token is born dead.
            user_stamp: user.security_stamp,
            created_at: now,
            expires_at: now + ms(state.config.mail.password_reset_ttl),
        },
    )
    .await?;
    let minutes = state.config.mail.password_reset_ttl.as_secs() / 60;
    let mail = templates::password_reset(&state.config.server.public_url, &token, minutes);
    outbox::enqueue(tx, &user.email, &mail.subject, &mail.body, now).await?;
    Ok(None)
}

/// A superuser has a reset link mailed to the account `user_id` (through the outbox, as the
/// public request does), under the same per-address limit: when the address had one too
/// recently, the answer is 429 with the time to wait, not a silent no-op (the superuser would
/// believe a mail went out). A deactivated account gets none (403 ACCOUNT_DISABLED): its reset
/// could not sign it in. Recorded as `user.password_reset_sent`, the superuser as actor.
#[tracing::instrument(skip_all, fields(admin_id = %admin.account.id, user_id = %user_id))]
pub async fn send_password_reset(state: &AppState, admin: &Caller, user_id: &str) -> Result<()> {
    let user = users::find_by_id(&state.db, user_id)
        .await?
        .ok_or(Error::NotFound("there is no user with this id"))?;
    if !user.is_active {
        return Err(Error::AccountDisabled);
    }
    let now = state.clock.now_ms();
    let mut tx = state.db.begin().await?;
    if let Some(retry_after) = queue_reset_mail(state, &mut tx, &user, now).await? {
        return Err(Error::TooManyRequests { retry_after });
    }
    let sent = audit::Event::new(EventType::PasswordResetSent).by_admin(admin, user_id);
    audit::record_in(state, &mut tx, sent).await?;
    tx.commit().await?;
    state.mail_wakeup.notify_one();
    tracing::info!("password reset mail queued at a superuser's request");
    Ok(())
}

const BAD_TOKEN: &str = "the token is invalid, expired or already used";

/// Sets a new password with a reset token, and ends every session of the account. The token
/// must still be usable, and the account must still have the address the link was mailed to
/// and the credentials it had then; the address is then marked verified (the link proved it).
#[tracing::instrument(skip_all)]
pub async fn confirm_password_reset(
    state: &AppState,
    token: &str,
    new_password: String,
) -> Result<()> {
    let token_hash = hash_token_id(token);
    let now = state.clock.now_ms();
    // Look before hashing, so that a bad token costs no hash; spend it in the transaction.
    let user_id =
        one_time_tokens::find_usable(&state.db, &token_hash, one_time_tokens::PASSWORD_RESET, now)
            .await?
            .ok_or(Error::InvalidOneTimeToken(BAD_TOKEN))?;
    let user = users::find_by_id(&state.db, &user_id)
        .await?
        .ok_or(Error::InvalidOneTimeToken(BAD_TOKEN))?;
    let context = [user.email.as_str(), user.name.as_str()];
    let new_password = policy::new_password(&state.config, "new_password", new_password, &context)
        .map_err(|e| Error::Validation(vec![e]))?;
    let new_hash = state.hasher.hash(&new_password).await?;
    let now = state.clock.now_ms();
    let mut tx = state.db.begin().await?;
    let spent = one_time_tokens::spend(&mut tx, &token_hash, one_time_tokens::PASSWORD_RESET, now)
        .await?
        .ok_or(Error::InvalidOneTimeToken(BAD_TOKEN))?;
    let changed = users::set_password_hash(
        &mut tx,
        &users::NewPassword {
            id: &spent.user_id,
            hash: &new_hash,
            expected_stamp: spent.user_stamp,
            reset_email: Some(&spent.email),
            session_id: None,
        },
        now,
    )
    .await?
    .ok_or(Error::InvalidOneTimeToken(BAD_TOKEN))?;
    let ended = sessions::revoke_all_of_user_in(&mut tx, &spent.user_id, None, now).await?;
    let reset = audit::Event::new(EventType::PasswordReset)
        .user(&spent.user_id)
        .actor(&spent.user_id)
        .detail(serde_json::json!({ "sessions_ended": ended }));
    audit::record_in(state, &mut tx, reset).await?;
    queue_notice(
        state,
        &mut tx,
        NOTICE_PASSWORD_CHANGED,
        &changed.email,
        templates::password_changed(),
        now,
    )
    .await?;
    tx.commit().await?;
    state.mail_wakeup.notify_one();
    // A reset works for a locked address, and ends the lock.
    login_attempts::clear(&state.db, &changed.email).await?;
    tracing::info!(user_id = %spent.user_id, sessions_ended = ended, "password reset");
    Ok(())
}

/// Mails a verification link to the caller's address (nothing when it is already verified, or
/// when the address or the account has had its share of mail).
pub async fn request_verification(state: &AppState, caller: &Caller) -> Result<()> {
    let user = &caller.account;
    if user.is_verified {
        return Ok(());
    }
    let now = state.clock.now_ms();
    let mut tx = state.db.begin().await?;
    let granted = allowance(
        state,
        &mut tx,
        &user.id,
        one_time_tokens::VERIFY_EMAIL,
        &user.email,
        now,
    )
    .await?;
    if granted != Allowance::Granted {
        tracing::info!(user_id = %user.id, ?granted, "verification mail limit reached; no mail");
        return Ok(());
    }
    let owner = TokenOwner {
        id: &user.id,
        security_stamp: caller.security_stamp,
    };
    queue_verification(state, &mut tx, owner, &user.email, now).await?;
    tx.commit().await?;
    state.mail_wakeup.notify_one();
    Ok(())
}

/// Marks the address verified with a verification token. The token holds only while the
/// account still has the address it was mailed to and the credentials it had then.
pub async fn confirm_verification(state: &AppState, token: &str) -> Result<Account> {
    let now = state.clock.now_ms();
    let mut tx = state.db.begin().await?;
    let spent = one_time_tokens::spend(
        &mut tx,
        &hash_token_id(token),
        one_time_tokens::VERIFY_EMAIL,
        now,
    )
    .await?
    .ok_or(Error::InvalidOneTimeToken(BAD_TOKEN))?;
    let user = users::mark_verified(&mut tx, &spent.user_id, &spent.email, spent.user_stamp, now)
        .await?
        .ok_or(Error::InvalidOneTimeToken(BAD_TOKEN))?;
    let verified = audit::Event::new(EventType::EmailVerified)
        .user(&user.id)
        .actor(&user.id)
        .detail(serde_json::json!({ "email": user.email }));
    audit::record_in(state, &mut tx, verified).await?;
    tx.commit().await?;
    tracing::info!(user_id = %user.id, "email verified");
    Ok(user.into())
}
