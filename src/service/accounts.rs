//! Accounts: registration, profile changes, deletion.

use crate::db::{self, outbox, sessions, users};
use crate::domain::{Email, Name, Password};
use crate::error::{Error, FieldError, Result};
use crate::mail::templates;
use crate::service::recovery;
use crate::service::sessions::Caller;
use crate::state::AppState;

/// A new account, as validated at the boundary.
#[derive(Debug)]
pub struct Registration {
    pub email: Email,
    pub name: Name,
    pub password: Password,
}

#[tracing::instrument(skip_all)]
pub async fn register(state: &AppState, new: Registration) -> Result<users::User> {
    let password_hash = state.hasher.hash(&new.password).await?;
    let now = db::now_ms();
    let user = users::User {
        id: uuid::Uuid::new_v4().to_string(),
        email: new.email.as_str().to_string(),
        name: new.name.as_str().to_string(),
        password_hash,
        is_active: true,
        is_verified: false,
        is_superuser: false,
        created_at: now,
        updated_at: now,
    };
    // The unique index decides between concurrent registrations of one address; the
    // verification mail is queued in the same transaction.
    let mut tx = state.db.begin().await?;
    match users::insert(&mut tx, &user).await {
        Ok(()) => {}
        Err(e) if db::is_unique_violation(&e) => return Err(Error::EmailTaken),
        Err(e) => return Err(e.into()),
    }
    recovery::queue_verification(state, &mut tx, &user.id, &user.email, now).await?;
    tx.commit().await?;
    state.mail_wakeup.notify_one();
    tracing::info!(user_id = %user.id, "account registered");
    Ok(user)
}

/// Checks the caller's password again before a sensitive change (403 when wrong).
pub async fn confirm_password(
    state: &AppState,
    user: &users::User,
    password: &Password,
) -> Result<()> {
    let verification = state
        .hasher
        .verify(password, Some(&user.password_hash))
        .await?;
    if verification.matches {
        Ok(())
    } else {
        Err(Error::WrongPassword)
    }
}

/// A profile update as validated at the boundary; `None` leaves a field as it is.
#[derive(Debug, Default)]
pub struct ProfileUpdate {
    pub name: Option<Name>,
    pub email: Option<Email>,
    pub current_password: Option<Password>,
}

#[tracing::instrument(skip_all, fields(user_id = %user.id))]
pub async fn update_profile(
    state: &AppState,
    user: &users::User,
    update: ProfileUpdate,
) -> Result<users::User> {
    let new_email = update.email.filter(|e| e.as_str() != user.email);
    if new_email.is_some() {
        let Some(password) = &update.current_password else {
            return Err(Error::Validation(vec![FieldError::new(
                "current_password",
                "is required to change the email address",
            )]));
        };
        confirm_password(state, user, password).await?;
    }
    let changes = users::ProfileChanges {
        name: update.name.as_ref().map(Name::as_str),
        email: new_email.as_ref().map(Email::as_str),
        unverify: new_email.is_some(),
    };
    let now = db::now_ms();
    let mut tx = state.db.begin().await?;
    let updated = match users::update_profile(&mut tx, &user.id, &changes, now).await {
        Ok(Some(updated)) => updated,
        Ok(None) => return Err(Error::Unauthorized("the account no longer exists")),
        Err(e) if db::is_unique_violation(&e) => return Err(Error::EmailTaken),
        Err(e) => return Err(e.into()),
    };
    if let Some(new_email) = &new_email {
        // A link to confirm the new address, and a word to the old one.
        recovery::queue_verification(state, &mut tx, &user.id, new_email.as_str(), now).await?;
        let notice = templates::email_changed(&user.email, new_email.as_str());
        outbox::enqueue(&mut tx, &user.email, &notice.subject, &notice.body, now).await?;
    }
    tx.commit().await?;
    if new_email.is_some() {
        state.mail_wakeup.notify_one();
        tracing::info!("email address changed");
    }
    Ok(updated)
}

/// Deletes the caller's account, its sessions and tokens, after checking its password.
#[tracing::instrument(skip_all, fields(user_id = %user.id))]
pub async fn delete_account(
    state: &AppState,
    user: &users::User,
    password: &Password,
) -> Result<()> {
    confirm_password(state, user, password).await?;
    users::delete(&state.db, &user.id).await?;
    tracing::info!("account deleted");
    Ok(())
}

/// Changes the caller's password: checks the current one, ends every other session, keeps this one.
#[tracing::instrument(skip_all, fields(user_id = %caller.user.id))]
pub async fn change_password(
    state: &AppState,
    caller: &Caller,
    current: &Password,
    new: &Password,
) -> Result<()> {
    confirm_password(state, &caller.user, current).await?;
    let new_hash = state.hasher.hash(new).await?;
    let now = db::now_ms();
    let mut tx = state.db.begin().await?;
    users::set_password_hash(&mut tx, &caller.user.id, &new_hash, false, now).await?;
    let ended =
        sessions::revoke_all_of_user_in(&mut tx, &caller.user.id, Some(&caller.session_id), now)
            .await?;
    tx.commit().await?;
    tracing::info!(sessions_ended = ended, "password changed");
    Ok(())
}
