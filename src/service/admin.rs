//! Administration of accounts, for superusers.

use serde_json::json;

use crate::db::{self, sessions, users};
use crate::domain::{Account, Email, Name};
use crate::error::{Error, Result};
use crate::mail::templates;
use crate::service::audit::{self, EventType};
use crate::service::recovery;
use crate::service::sessions::Caller;
use crate::state::AppState;

pub const MAX_PAGE: i64 = 100;

pub async fn list(
    state: &AppState,
    q: Option<&str>,
    limit: i64,
    offset: i64,
) -> Result<(Vec<Account>, i64)> {
    let (users, total) = users::list(&state.db, q, limit, offset).await?;
    Ok((users.into_iter().map(Account::from).collect(), total))
}

pub async fn get(state: &AppState, id: &str) -> Result<Account> {
    find(state, id).await.map(Account::from)
}

async fn find(state: &AppState, id: &str) -> Result<users::User> {
    users::find_by_id(&state.db, id)
        .await?
        .ok_or(Error::NotFound("there is no user with this id"))
}

/// What an administrator may change, validated at the boundary.
#[derive(Debug, Default)]
pub struct UserUpdate {
    pub name: Option<Name>,
    pub email: Option<Email>,
    pub is_active: Option<bool>,
    pub is_verified: Option<bool>,
    pub is_superuser: Option<bool>,
}

#[tracing::instrument(skip_all, fields(admin_id = %admin.account.id, user_id = %id))]
pub async fn update(
    state: &AppState,
    admin: &Caller,
    id: &str,
    update: UserUpdate,
) -> Result<Account> {
    if id == admin.account.id
        && (update.is_superuser == Some(false) || update.is_active == Some(false))
    {
        return Err(Error::Forbidden(
            "you cannot remove your own superuser flag or deactivate yourself; ask another superuser",
        ));
    }
    // One's own address changes through PUT /me, with the password and step-up: an access
    // token alone must not take over the account that holds it.
    if id == admin.account.id
        && update
            .email
            .as_ref()
            .is_some_and(|e| e.as_str() != admin.account.email)
    {
        return Err(Error::Forbidden(
            "change your own email address with PUT /me (it needs your password)",
        ));
    }
    // The change applies to the account as read; a concurrent change means a fresh read.
    for _ in 0..3 {
        let current = find(state, id).await?;
        if let Some(updated) = apply_update(state, admin, &current, &update).await? {
            return Ok(updated.into());
        }
    }
    // Three lost races in a row: say so as "busy, try again".
    Err(Error::Busy {
        retry_after: std::time::Duration::from_secs(1),
    })
}

/// Applies `update` to `current` if the account's credentials are still as read (`None`
/// otherwise), with what follows a credential change, in one transaction.
async fn apply_update(
    state: &AppState,
    admin: &Caller,
    current: &users::User,
    update: &UserUpdate,
) -> Result<Option<users::User>> {
    let id = current.id.as_str();
    let new_email = update
        .email
        .as_ref()
        .filter(|e| e.as_str() != current.email);
    let changes = users::AdminChanges {
        name: update.name.as_ref().map(Name::as_str),
        email: new_email.map(Email::as_str),
        is_active: update.is_active,
        // A new address is unverified unless the administrator says otherwise.
        is_verified: update.is_verified.or(new_email.map(|_| false)),
        is_superuser: update.is_superuser,
    };
    let now = state.clock.now_ms();
    let mut tx = state.db.begin().await?;
    let updated =
        match users::admin_update(&mut tx, id, current.security_stamp, &changes, now).await {
            Ok(Some(user)) => user,
            Ok(None) => return Ok(None),
            Err(e) if db::is_unique_violation(&e) => return Err(Error::EmailTaken),
            Err(e) => return Err(e.into()),
        };
    if !updated.is_active {
        let ended = sessions::revoke_all_of_user_in(&mut tx, id, None, now).await?;
        if current.is_active {
            tracing::info!(sessions_ended = ended, "account deactivated");
        }
    } else if updated.security_stamp != current.security_stamp {
        // The account's sessions go on; its outstanding links and logins in flight do not.
        sessions::carry_forward(
            &mut tx,
            id,
            current.security_stamp,
            updated.security_stamp,
            None,
        )
        .await?;
    }
    if let Some(new_email) = new_email {
        let notice = templates::email_changed(&current.email, new_email.as_str());
        recovery::queue_notice(
            state,
            &mut tx,
            recovery::NOTICE_EMAIL_CHANGED,
            &current.email,
            notice,
            now,
        )
        .await?;
    }
    for event in change_events(admin, current, &updated) {
        audit::record_in(state, &mut tx, event).await?;
    }
    tx.commit().await?;
    if new_email.is_some() {
        state.mail_wakeup.notify_one();
    }
    Ok(Some(updated))
}

/// The events of a superuser's change from `before` to `after`: `user.email_changed`,
/// `user.deactivated` or `user.reactivated`, and `user.updated` for the rest (name, verified and
/// superuser flags), each only for what did change.
fn change_events(admin: &Caller, before: &users::User, after: &users::User) -> Vec<audit::Event> {
    let event = |kind| audit::Event::new(kind).by_admin(admin, &after.id);
    let mut events = Vec::new();
    if before.email != after.email {
        events.push(
            event(EventType::EmailChanged).detail(json!({"from": before.email, "to": after.email})),
        );
    }
    match (before.is_active, after.is_active) {
        (true, false) => events.push(event(EventType::UserDeactivated)),
        (false, true) => events.push(event(EventType::UserReactivated)),
        _ => {}
    }
    let mut fields = Vec::new();
    let mut detail = serde_json::Map::new();
    if before.name != after.name {
        fields.push("name");
    }
    // A new address is unverified unless the superuser said otherwise: a change all the same.
    if before.is_verified != after.is_verified {
        fields.push("is_verified");
        detail.insert("is_verified".into(), json!(after.is_verified));
    }
    if before.is_superuser != after.is_superuser {
        fields.push("is_superuser");
        detail.insert("is_superuser".into(), json!(after.is_superuser));
    }
    if !fields.is_empty() {
        detail.insert("fields".into(), json!(fields));
        events.push(event(EventType::UserUpdated).detail(serde_json::Value::Object(detail)));
    }
    events
}

#[tracing::instrument(skip_all, fields(admin_id = %admin.account.id, user_id = %id))]
pub async fn delete(state: &AppState, admin: &Caller, id: &str) -> Result<()> {
    if id == admin.account.id {
        return Err(Error::Forbidden(
            "you cannot delete yourself here; use DELETE /me, or ask another superuser",
        ));
    }
    let mut tx = state.db.begin().await?;
    let Some(email) = users::delete_in(&mut tx, id).await? else {
        return Err(Error::NotFound("there is no user with this id"));
    };
    let deleted = audit::Event::new(EventType::UserDeleted)
        .by_admin(admin, id)
        .detail(json!({ "email": email }));
    audit::record_in(state, &mut tx, deleted).await?;
    tx.commit().await?;
    tracing::info!("account deleted by a superuser");
    Ok(())
}

/// What `create-superuser` did.
#[derive(Debug, PartialEq, Eq)]
pub enum SuperuserOutcome {
    Created(String),
    Promoted(String),
}

/// Creates a superuser (verified, no mail). An account that already has this email is made one
/// only with `promote_existing` (it keeps its password); otherwise that is refused, so that a
/// typo or a squatted address cannot hand superuser rights to someone else's account.
/// The password is needed, and checked against the policy, only for a new account.
pub async fn create_superuser(
    state: &AppState,
    email: &Email,
    name: &Name,
    promote_existing: bool,
    password: impl FnOnce() -> std::result::Result<String, String>,
) -> std::result::Result<SuperuserOutcome, String> {
    let now = state.clock.now_ms();
    if let Some(user) = users::find_by_email(&state.db, email.as_str())
        .await
        .map_err(|e| e.to_string())?
    {
        let created = chrono::DateTime::from_timestamp_millis(user.created_at)
            .map_or_else(String::new, |t| t.to_rfc3339());
        let standing = format!(
            "id {}, created {created}, address {}, {}",
            user.id,
            if user.is_verified {
                "verified"
            } else {
                "not verified"
            },
            if user.is_active {
                "active"
            } else {
                "deactivated"
            }
        );
        if !promote_existing {
            return Err(format!(
                "an account with the email {} already exists ({standing}); nothing was changed. \
                 To make that account a superuser (it keeps its password), run again with --promote-existing",
                email.as_str()
            ));
        }
        // Anyone could have registered the address before the operator: only an account that
        // proved it owns the address, and is active, is promoted.
        if !(user.is_verified && user.is_active) {
            return Err(format!(
                "the account with the email {} ({standing}) is not promoted: anyone could have \
                 registered that address. Verify its address (or reset its password from that \
                 mailbox) first, or delete it and run again to create a new account",
                email.as_str()
            ));
        }
        return promote(state, email, &user.id, now)
            .await
            .map(SuperuserOutcome::Promoted);
    }
    let password = password()?;
    let password = crate::service::policy::new_password(
        &state.config,
        "password",
        password,
        &[email.as_str(), name.as_str()],
    )
    .map_err(|e| format!("the password {}", e.message))?;
    let hash = state
        .hasher
        .hash(&password)
        .await
        .map_err(|e| e.to_string())?;
    let user = users::User {
        id: uuid::Uuid::new_v4().to_string(),
        email: email.as_str().to_string(),
        name: name.as_str().to_string(),
        password_hash: hash,
        is_active: true,
        is_verified: true,
        is_superuser: true,
        created_at: now,
        updated_at: now,
        security_stamp: 0,
    };
    let mut tx = state.db.begin().await.map_err(|e| e.to_string())?;
    match users::insert(&mut tx, &user).await {
        Ok(()) => {}
        Err(e) if db::is_unique_violation(&e) => {
            return Err(format!(
                "an account with the email {} was created meanwhile; nothing was changed",
                email.as_str()
            ));
        }
        Err(e) => return Err(e.to_string()),
    }
    let created = audit::Event::new(EventType::UserCreated)
        .user(&user.id)
        .detail(json!({ "via": "cli", "is_superuser": true }));
    audit::record_in(state, &mut tx, created)
        .await
        .map_err(|e| e.to_string())?;
    tx.commit().await.map_err(|e| e.to_string())?;
    Ok(SuperuserOutcome::Created(user.id))
}

/// `create-superuser --promote-existing` on the account `id` (of `email`), with its
/// `user.updated` event (no actor: the command line).
async fn promote(
    state: &AppState,
    email: &Email,
    id: &str,
    now: i64,
) -> std::result::Result<String, String> {
    let changed_meanwhile = || {
        format!(
            "the account {id} was changed or deleted meanwhile; nothing was changed. Run the command again"
        )
    };
    let result = async {
        let mut tx = state.db.begin().await?;
        match users::promote_in(&mut tx, email.as_str(), now).await? {
            users::Promotion::Promoted(promoted) if promoted == id => {
                let event = audit::Event::new(EventType::UserUpdated)
                    .user(&promoted)
                    .detail(json!({
                        "fields": ["is_superuser"],
                        "is_superuser": true,
                        "via": "cli",
                    }));
                audit::record_in(state, &mut tx, event).await?;
                tx.commit().await?;
                Ok::<_, Error>(Some(promoted))
            }
            users::Promotion::Already(already) if already == id => Ok(Some(already)),
            _ => Ok(None),
        }
    }
    .await;
    match result {
        Ok(Some(id)) => Ok(id),
        Ok(None) => Err(changed_meanwhile()),
        Err(e) => Err(e.to_string()),
    }
}
