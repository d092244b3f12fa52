//! Password reset and email verification: single-use tokens (256 bits from the OS, stored only
//! as a hash) mailed as links built from PUBLIC_URL.

use crate::auth::tokens::{hash_token_id, random_token};
use crate::db::{self, Tx, login_attempts, one_time_tokens, outbox, sessions, throttle, users};
use crate::domain::Email;
use crate::error::{Error, Result};
use crate::mail::templates;
use crate::service::ms;
use crate::service::policy;
use crate::state::AppState;

/// Takes the per-address allowance for one mail of `purpose`; false when one went out too recently.
async fn allowed(
    state: &AppState,
    tx: &mut Tx,
    purpose: &str,
    email: &str,
    now: i64,
) -> Result<bool> {
    let key = format!("{purpose}:{email}");
    Ok(throttle::try_take(tx, &key, now, ms(state.config.mail_rate_limit)).await?)
}

/// Writes a verification token for `email` and its mail, inside `tx`.
pub async fn queue_verification(
    state: &AppState,
    tx: &mut Tx,
    user_id: &str,
    email: &str,
    now: i64,
) -> Result<()> {
    let token = random_token();
    one_time_tokens::replace(
        tx,
        &one_time_tokens::NewToken {
            token_hash: &hash_token_id(&token),
            user_id,
            purpose: one_time_tokens::VERIFY_EMAIL,
            email,
            created_at: now,
            expires_at: now + ms(state.config.verify_email_ttl),
        },
    )
    .await?;
    let hours = state.config.verify_email_ttl.as_secs() / 3600;
    let mail = templates::verify_email(&state.config.public_url, &token, hours);
    outbox::enqueue(tx, email, &mail.subject, &mail.body, now).await?;
    Ok(())
}

/// Starts a password reset. Answers the same, at once, whether or not the account exists: the
/// work runs beside the request, so neither the answer nor its timing tells.
pub fn request_password_reset(state: &AppState, email: Email) {
    let state = state.clone();
    tokio::spawn(async move {
        if let Err(e) = queue_password_reset(&state, &email).await {
            tracing::warn!(error = %e, "password reset request could not be queued");
        }
    });
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
    let now = db::now_ms();
    let mut tx = state.db.begin().await?;
    if !allowed(
        state,
        &mut tx,
        one_time_tokens::PASSWORD_RESET,
        &user.email,
        now,
    )
    .await?
    {
        tracing::info!(user_id = %user.id, "password reset mail limit reached; no mail");
        return Ok(());
    }
    let token = random_token();
    one_time_tokens::replace(
        &mut tx,
        &one_time_tokens::NewToken {
            token_hash: &hash_token_id(&token),
            user_id: &user.id,
            purpose: one_time_tokens::PASSWORD_RESET,
            email: &user.email,
            created_at: now,
            expires_at: now + ms(state.config.password_reset_ttl),
        },
    )
    .await?;
    let minutes = state.config.password_reset_ttl.as_secs() / 60;
    let mail = templates::password_reset(&state.config.public_url, &token, minutes);
    outbox::enqueue(&mut tx, &user.email, &mail.subject, &mail.body, now).await?;
    tx.commit().await?;
    state.mail_wakeup.notify_one();
    tracing::info!(user_id = %user.id, "password reset mail queued");
    Ok(())
}

const BAD_TOKEN: &str = "the token is invalid, expired or already used";

/// Sets a new password with a reset token, and ends every session of the account.
#[tracing::instrument(skip_all)]
pub async fn confirm_password_reset(
    state: &AppState,
    token: &str,
    new_password: String,
) -> Result<()> {
    let token_hash = hash_token_id(token);
    let now = db::now_ms();
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
    let now = db::now_ms();
    let mut tx = state.db.begin().await?;
    let spent = one_time_tokens::spend(&mut tx, &token_hash, one_time_tokens::PASSWORD_RESET, now)
        .await?
        .ok_or(Error::InvalidOneTimeToken(BAD_TOKEN))?;
    if !users::set_password_hash(&mut tx, &spent.user_id, &new_hash, true, now).await? {
        return Err(Error::InvalidOneTimeToken(BAD_TOKEN));
    }
    let ended = sessions::revoke_all_of_user_in(&mut tx, &spent.user_id, None, now).await?;
    tx.commit().await?;
    // A reset works for a locked address, and ends the lock.
    login_attempts::clear(&state.db, &user.email).await?;
    tracing::info!(user_id = %spent.user_id, sessions_ended = ended, "password reset");
    Ok(())
}

/// Mails a verification link to the caller's address (nothing when it is already verified, or
/// when one went out too recently).
pub async fn request_verification(state: &AppState, user: &users::User) -> Result<()> {
    if user.is_verified {
        return Ok(());
    }
    let now = db::now_ms();
    let mut tx = state.db.begin().await?;
    if !allowed(
        state,
        &mut tx,
        one_time_tokens::VERIFY_EMAIL,
        &user.email,
        now,
    )
    .await?
    {
        tracing::info!(user_id = %user.id, "verification mail limit reached; no mail");
        return Ok(());
    }
    queue_verification(state, &mut tx, &user.id, &user.email, now).await?;
    tx.commit().await?;
    state.mail_wakeup.notify_one();
    Ok(())
}

/// Marks the address verified with a verification token. The token holds only while the
/// account still has the address it was mailed to.
pub async fn confirm_verification(state: &AppState, token: &str) -> Result<users::User> {
    let now = db::now_ms();
    let mut tx = state.db.begin().await?;
    let spent = one_time_tokens::spend(
        &mut tx,
        &hash_token_id(token),
        one_time_tokens::VERIFY_EMAIL,
        now,
    )
    .await?
    .ok_or(Error::InvalidOneTimeToken(BAD_TOKEN))?;
    let user = users::mark_verified(&mut tx, &spent.user_id, &spent.email, now)
        .await?
        .ok_or(Error::InvalidOneTimeToken(BAD_TOKEN))?;
    tx.commit().await?;
    tracing::info!(user_id = %user.id, "email verified");
    Ok(user)
}
