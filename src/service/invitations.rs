//! Registration modes (REGISTRATION) and invitations.
//!
//! The rules:
//! - `open` (the default): anyone registers. An invitation, when one is sent, is still checked
//!   and used, and makes the account verified; a bad one is refused (400 INVITATION_INVALID),
//!   never silently ignored.
//! - `invite`: a registration needs a pending invitation (none: 403 INVITATION_REQUIRED; a
//!   token that is unknown, used, revoked, expired, or for another address: 400
//!   INVITATION_INVALID).
//! - `closed`: nobody registers (403 REGISTRATION_CLOSED), invitation or not, and no invitation
//!   is made (POST /invitations is 403 REGISTRATION_CLOSED too). Pending ones stay, listed and
//!   revocable, and work again if the mode changes before they expire.
//! - Accounts made by a superuser's hand (`create-superuser`, `import-users`) never pass here.
//! - An invitation is for one normalised address: the account's email must be exactly it. Its
//!   token (256 bits from the OS) is in the mail only; the table keeps its SHA-256. It lasts
//!   INVITATION_EXPIRE_HOURS, works once, and a new invitation of the same address revokes the
//!   address's earlier ones.
//! - Accepting is one conditional `UPDATE` (`db::invitations::accept`: pending and for this
//!   address) in the transaction that inserts the account: of concurrent uses of one token,
//!   exactly one makes an account; the others get INVITATION_INVALID. The invitation proved the
//!   address, so the account is created verified and no verification mail is sent.
//! - Inviting an address that already has an account is 409 EMAIL_TAKEN: only a superuser can
//!   ask, and a superuser may know (GET /users). Nothing else here tells whether an address has
//!   an account: a registration with an invitation answers as one without would (409
//!   EMAIL_TAKEN only after the invitation is found good, i.e. to its holder).
//! - Audit: `invitation.created` and `invitation.revoked` (actor: the superuser; detail: the
//!   invitation's id and address) in the transaction of the change; the account an invitation
//!   makes is `user.created` with `{"via": "invitation", "invitation_id"}` (`accounts::register`).
//!   Never the token.

use serde_json::json;

use crate::auth::tokens::{hash_token_id, random_token};
use crate::config::RegistrationMode;
use crate::db::{self, Tx, outbox, users};
use crate::domain::{Email, Name};
use crate::error::{Error, Result};
use crate::mail::templates;
use crate::service::audit::{self, EventType};
use crate::service::ms;
use crate::service::sessions::Caller;
use crate::state::AppState;

/// An invitation as a superuser sees it: never its token or the token's hash.
#[derive(Clone, Debug)]
pub struct InvitationView {
    pub id: String,
    pub email: String,
    pub name: Option<String>,
    pub invited_by: Option<String>,
    pub created_at: i64,
    pub expires_at: i64,
}

impl From<db::invitations::Invitation> for InvitationView {
    fn from(i: db::invitations::Invitation) -> Self {
        Self {
            id: i.id,
            email: i.email,
            name: i.name,
            invited_by: i.invited_by,
            created_at: i.created_at,
            expires_at: i.expires_at,
        }
    }
}

/// What every refusal of a token says: which of the reasons it was would tell a guesser
/// nothing useful, and the holder of a real link knows.
const BAD_INVITATION: &str = "the invitation is invalid, expired, withdrawn or already used";
const OTHER_ADDRESS: &str =
    "this invitation is for another email address: register with the address it was sent to";

/// The registration mode's decision, before anything else is looked at: `closed` refuses every
/// registration, `invite` one without an invitation.
pub fn gate(state: &AppState, invitation: Option<&str>) -> Result<()> {
    match (state.config.accounts.registration, invitation) {
        (RegistrationMode::Closed, _) => Err(Error::RegistrationClosed),
        (RegistrationMode::Invite, None) => Err(Error::InvitationRequired),
        _ => Ok(()),
    }
}

/// Whether the registration page offers a form to anyone (REGISTRATION=open).
pub fn open_to_all(state: &AppState) -> bool {
    state.config.accounts.registration == RegistrationMode::Open
}

/// Invites `email`: stores the invitation (revoking the address's earlier ones) and queues its
/// mail in the same transaction.
#[tracing::instrument(skip_all, fields(admin_id = %admin.account.id))]
pub async fn create(
    state: &AppState,
    admin: &Caller,
    email: &Email,
    name: Option<&Name>,
) -> Result<InvitationView> {
    if state.config.accounts.registration == RegistrationMode::Closed {
        return Err(Error::RegistrationClosed);
    }
    if users::find_by_email(&state.db, email.as_str())
        .await?
        .is_some()
    {
        return Err(Error::EmailTaken);
    }
    let token = random_token();
    let now = state.clock.now_ms();
    let ttl = state.config.accounts.invitation_ttl;
    let id = uuid::Uuid::new_v4().to_string();
    let new = db::invitations::NewInvitation {
        id: &id,
        email: email.as_str(),
        name: name.map(Name::as_str),
        token_hash: &hash_token_id(&token),
        invited_by: &admin.account.id,
        created_at: now,
        expires_at: now + ms(ttl),
    };
    let mut tx = state.db.begin().await?;
    let replaced = db::invitations::insert(&mut tx, &new).await?;
    let created = audit::Event::new(EventType::InvitationCreated)
        .actor(&admin.account.id)
        .session(&admin.session_id)
        .detail(json!({"invitation_id": id, "email": email.as_str(), "replaced": replaced}));
    audit::record_in(state, &mut tx, created).await?;
    let mail = templates::invitation(
        &state.config.server.public_url,
        &token,
        ttl.as_secs() / 3600,
        new.name,
    );
    outbox::enqueue(&mut tx, email.as_str(), &mail.subject, &mail.body, now).await?;
    tx.commit().await?;
    state.mail_wakeup.notify_one();
    tracing::info!(invitation_id = %id, replaced, "invitation created and mailed");
    Ok(InvitationView {
        id: id.clone(),
        email: email.as_str().to_string(),
        name: new.name.map(str::to_string),
        invited_by: Some(admin.account.id.clone()),
        created_at: now,
        expires_at: new.expires_at,
    })
}

/// A page of pending invitations, newest first, and how many are pending in all.
pub async fn list(state: &AppState, limit: i64, offset: i64) -> Result<(Vec<InvitationView>, i64)> {
    let now = state.clock.now_ms();
    let (items, total) = db::invitations::list_pending(&state.db, now, limit, offset).await?;
    Ok((items.into_iter().map(Into::into).collect(), total))
}

/// Revokes a pending invitation (404 when there is none with this id: unknown, accepted,
/// revoked or expired).
#[tracing::instrument(skip_all, fields(admin_id = %admin.account.id, invitation_id = %id))]
pub async fn revoke(state: &AppState, admin: &Caller, id: &str) -> Result<InvitationView> {
    let now = state.clock.now_ms();
    let mut tx = state.db.begin().await?;
    let revoked = db::invitations::revoke(&mut tx, id, now)
        .await?
        .ok_or(Error::NotFound(
            "there is no pending invitation with this id",
        ))?;
    let event = audit::Event::new(EventType::InvitationRevoked)
        .actor(&admin.account.id)
        .session(&admin.session_id)
        .detail(json!({"invitation_id": revoked.id, "email": revoked.email}));
    audit::record_in(state, &mut tx, event).await?;
    tx.commit().await?;
    tracing::info!("invitation revoked");
    Ok(revoked.into())
}

/// The pending invitation of a link's token (the registration page fills in its address).
pub async fn pending(state: &AppState, token: &str) -> Result<InvitationView> {
    let now = state.clock.now_ms();
    db::invitations::find_pending(&state.db, &hash_token_id(token), now)
        .await?
        .map(Into::into)
        .ok_or(Error::InvitationInvalid(BAD_INVITATION))
}

/// Looks at a registration's token before its password is hashed: it must name a pending
/// invitation of `email`. (Nothing is spent: [`accept_in`] decides.)
pub(crate) async fn check(state: &AppState, token: &str, email: &Email) -> Result<()> {
    let invitation = pending(state, token).await?;
    if invitation.email != email.as_str() {
        return Err(Error::InvitationInvalid(OTHER_ADDRESS));
    }
    Ok(())
}

/// Accepts the token's invitation for `email` inside the registration's transaction, before the
/// account is inserted; returns the invitation's id (for [`link_account_in`]).
pub(crate) async fn accept_in(tx: &mut Tx, token: &str, email: &Email, now: i64) -> Result<String> {
    db::invitations::accept(tx, &hash_token_id(token), email.as_str(), now)
        .await?
        .map(|invitation| invitation.id)
        .ok_or(Error::InvitationInvalid(BAD_INVITATION))
}

/// Records the account an accepted invitation made, in the same transaction.
pub(crate) async fn link_account_in(tx: &mut Tx, invitation_id: &str, user_id: &str) -> Result<()> {
    db::invitations::set_accepted_user(tx, invitation_id, user_id).await?;
    Ok(())
}
