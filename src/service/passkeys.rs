//! Passkeys (WebAuthn): registering them, signing in with one (usernameless or email-first), a
//! passkey as the second factor of a password login and as the proof of a sensitive change,
//! and accounts without a password. The WebAuthn checks themselves are `auth::webauthn`'s.
//!
//! Rules kept here:
//! - Every ceremony is stored (`webauthn_ceremonies`, by the hash of its challenge) with its
//!   purpose and what it is bound to: the session (`register`, `step_up`, with the account's
//!   stamp), the `mfa_token` (`mfa`), nothing (`login`, with the account when email-first). It
//!   is taken (deleted) by the first answer that names its challenge, whatever that answer turns
//!   out to be, before anything else is looked at: no challenge is answered twice. Its expiry
//!   (WEBAUTHN_CHALLENGE_SECONDS), purpose, binding, user and stamp are then checked: any
//!   mismatch is 401 PASSKEY_CHALLENGE_INVALID.
//! - An assertion is checked against the stored credential it names (origin, RP ID hash, type,
//!   challenge, user presence, signature, backup flags; the user handle, when sent, must be the
//!   credential's user); anything wrong is 401 INVALID_PASSKEY naming the check, never whose
//!   credential it is. At sign-in (`login` ceremonies) the detail is one for all of these checks,
//!   so that a real credential id cannot be told from a decoy by the check that refused it. Its use (counter, backup state, last use) is written conditionally on
//!   the counter it was checked against, in the transaction that opens the session or passes the
//!   step: of two concurrent uses, one wins.
//! - A signature counter that did not grow (both non-zero) is logged at warn, flags the passkey
//!   and mails its user once; WEBAUTHN_COUNTER_POLICY=refuse then refuses it (401
//!   PASSKEY_COUNTER_REGRESSED). The stored counter never goes down.
//! - Registering a passkey is a credential change: it needs what other sensitive changes need
//!   (the password, or a recent passkey proof without one; the second factor, or a recent pass),
//!   and it moves the security stamp, carries the caller's session forward, ends the others and
//!   marks the caller's session as having passed the second factor, and as having proved a
//!   passkey only when the new one verified the user. At most [`MAX_PER_ACCOUNT`].
//! - Signing in with a passkey alone (POST /login/passkey) needs user verification (UV: a PIN,
//!   biometrics): the options ask for it, and an assertion without it is refused (401
//!   INVALID_PASSKEY, once its signature is known to be good) — a security key without a PIN
//!   alone must not sign in where a password alone would not. Such a passkey is still
//!   registered (UV preferred) and is a second factor after the password. A sign-in with UV is
//!   two factors: the session passed the second factor (`amr` `hwk|swk user mfa`).
//! - As a second factor (PASSKEYS=true), a passkey counts wherever TOTP does: MFA_REQUIRED,
//!   MFA_REQUIRED_FOR, step-up, the superuser's reset; at POST /login/mfa a wrong assertion is a
//!   failed try of the `mfa_token` and of the account's second-factor lockout, as a wrong code is.
//! - Email-first options do not tell whether an account exists or has passkeys: unknown,
//!   passkey-less and disabled accounts get 1 to 3 decoy credentials derived from a keyed hash of
//!   the address (stable per address), after the same queries a real account costs. Nor does
//!   the answer: the ceremony names the account, or for an unknown address a marker that is no
//!   account's, so any other passkey is refused by the same check, with the same detail.
//! - An account without a password (`users.password_hash` empty) proves a passkey (within
//!   MFA_STEP_UP_SECONDS, at least a minute) wherever a password is asked for
//!   (`accounts::confirm_password`); it keeps at least one passkey registered with UV (deleting
//!   the last is 409 LAST_CREDENTIAL, checked again under the account's lock), and only an
//!   account with one may drop its password.

use crate::auth::tokens::hash_token_id;
use crate::auth::webauthn::{
    self, Descriptor, ParsedAssertion, Refusal, StoredCredential, Verification,
};
use crate::db::{self, Tx, mfa as mfa_db, passkeys, sessions, users};
use crate::domain::{Email, Name, Password};
use crate::error::{Error, FieldError, Result};
use crate::mail::templates;
use crate::service::accounts::CREDENTIALS_CHANGED;
use crate::service::login::{Authentication, open_session_in};
use crate::service::mfa::{self, SecondFactor, StepUp};
use crate::service::sessions::{Caller, ClientInfo, TokenPair};
use crate::service::{ms, recovery};
use crate::state::AppState;

/// The `methods` value of a passkey (MFA_REQUIRED, STEP_UP_REQUIRED, GET /me/mfa).
pub const PASSKEY: &str = "passkey";

/// The most passkeys one account may have.
pub const MAX_PER_ACCOUNT: i64 = 20;

/// The longest name a passkey may have, in characters.
pub const NAME_MAX_LENGTH: usize = 64;

/// RFC 8176 `amr` values of a passkey: `hwk` a device-bound key, `swk` a synced one (backup
/// eligible); `user` when it verified the user. (`pin` and `fpt` are never said: an assertion
/// does not tell how the user was verified.)
const HWK: &str = "hwk";
const SWK: &str = "swk";
pub const AMR_HWK_UV: &str = "hwk user mfa";
pub const AMR_SWK_UV: &str = "swk user mfa";
pub const AMR_PASSWORD_HWK: &str = "pwd hwk mfa";
pub const AMR_PASSWORD_SWK: &str = "pwd swk mfa";
pub const AMR_PASSWORD_HWK_UV: &str = "pwd hwk user mfa";
pub const AMR_PASSWORD_SWK_UV: &str = "pwd swk user mfa";

/// Ceremony purposes.
const REGISTER: &str = "register";
const LOGIN: &str = "login";
const MFA: &str = "mfa";
const STEP_UP: &str = "step_up";

/// Notice kinds, each limited per address on its own (MAIL_RATE_LIMIT_SECONDS).
const NOTICE_PASSKEY_ADDED: &str = "notice_passkey_added";
const NOTICE_PASSKEY_REMOVED: &str = "notice_passkey_removed";
const NOTICE_PASSKEY_COUNTER: &str = "notice_passkey_counter";
const NOTICE_PASSWORD_REMOVED: &str = "notice_password_removed";

/// Options for `navigator.credentials.create/get`: `{"publicKey": {...}}`.
#[derive(Clone, Debug)]
pub struct Options(pub serde_json::Value);

/// A passkey, as its user sees it: never its public key or credential id.
#[derive(Clone, Debug)]
pub struct PasskeyView {
    pub id: String,
    pub name: String,
    pub created_at: i64,
    pub last_used_at: Option<i64>,
    pub backup_eligible: bool,
    pub backed_up: bool,
    pub user_verified: bool,
    pub transports: Vec<String>,
    pub aaguid: Option<String>,
}

impl From<passkeys::Passkey> for PasskeyView {
    fn from(p: passkeys::Passkey) -> Self {
        Self {
            transports: serde_json::from_str(&p.transports).unwrap_or_default(),
            id: p.id,
            name: p.name,
            created_at: p.created_at,
            last_used_at: p.last_used_at,
            backup_eligible: p.backup_eligible,
            backed_up: p.backed_up,
            user_verified: p.user_verified,
            aaguid: p.aaguid,
        }
    }
}

const CHALLENGE_UNKNOWN: Error = Error::PasskeyChallengeInvalid(
    "the challenge is unknown, already answered, or another ceremony's: ask for new options",
);
const CHALLENGE_EXPIRED: Error =
    Error::PasskeyChallengeInvalid("the challenge has expired: ask for new options");
const CHALLENGE_NOT_YOURS: Error = Error::PasskeyChallengeInvalid(
    "the challenge was made for another session, sign-in or account state: ask for new options",
);
const UNKNOWN_CREDENTIAL: Error = Error::InvalidPasskey("this passkey is not registered here");
const NOT_ALLOWED: Error = Error::InvalidPasskey("the passkey is not one this ceremony allows");
const HANDLE_MISMATCH: Error = Error::InvalidPasskey("the user handle does not match the passkey");
const USED_MEANWHILE: Error =
    Error::InvalidPasskey("the passkey was used by another request at the same time: try again");
/// Every refusal of a `login` answer's credential, whichever check failed (not registered here,
/// not the account the email-first ceremony named, the user handle, the origin, the signature...):
/// which one it was would tell a real credential id from a decoy, or an address with an account
/// from one without.
const LOGIN_REFUSED: Error = Error::InvalidPasskey(
    "the passkey was not accepted: it is not registered here, not one this sign-in asked for, or its answer failed verification",
);
/// A sign-in with a passkey that did not verify the user (once its signature is good).
const NOT_VERIFIED: Error = Error::InvalidPasskey(
    "the passkey did not verify the user (a PIN or biometrics): sign in with the password, and use the passkey as the second step",
);
/// The account an email-first `login` ceremony is for when the address has none: no account's
/// id (ids are UUIDs), so that any passkey is refused by the check that refuses another
/// account's, as for an address with an account.
const NO_ACCOUNT: &str = "no account";

/// Passkeys are off (PASSKEYS=false): there is nothing here.
fn enabled(state: &AppState) -> Result<()> {
    if state.config.passkeys.enabled {
        Ok(())
    } else {
        Err(Error::NotFound("there is nothing at this path"))
    }
}

fn ttl(state: &AppState) -> i64 {
    ms(state.config.passkeys.challenge_ttl)
}

/// The `amr` of a sign-in with a passkey (that verified the user): `synced` when it is backup
/// eligible.
pub(crate) fn first_factor_amr(synced: bool) -> &'static str {
    if synced { AMR_SWK_UV } else { AMR_HWK_UV }
}

/// The `amr` of a password login completed with a passkey.
fn second_factor_amr(synced: bool, user_verified: bool) -> &'static str {
    match (synced, user_verified) {
        (false, false) => AMR_PASSWORD_HWK,
        (true, false) => AMR_PASSWORD_SWK,
        (false, true) => AMR_PASSWORD_HWK_UV,
        (true, true) => AMR_PASSWORD_SWK_UV,
    }
}

/// `current` with the values of `add`, in the order RFC 8176 values are written here.
fn merged_amr(current: &str, add: &[&str]) -> String {
    const ORDER: [&str; 6] = ["pwd", "hwk", "swk", "otp", "user", "mfa"];
    let mut values: Vec<&str> = current.split_ascii_whitespace().collect();
    for value in add {
        if !values.contains(value) {
            values.push(value);
        }
    }
    values.sort_by_key(|v| ORDER.iter().position(|o| o == v).unwrap_or(ORDER.len()));
    values.dedup();
    values.join(" ")
}

/// The name a passkey is given: `domain::Name`'s rules (whose `PATTERN` the document states)
/// with at most [`NAME_MAX_LENGTH`] characters as sent; stored trimmed.
pub fn valid_name(field: &str, name: &str) -> std::result::Result<String, FieldError> {
    Name::text(field, name, NAME_MAX_LENGTH)
}

/// Well-known authenticators, by AAGUID (the passkey provider's model): their name is a
/// passkey's default name.
const KNOWN_AUTHENTICATORS: [(&str, &str); 10] = [
    (
        "ea9b8d66-4d01-1d21-3ce4-b6b48cb575d4",
        "Google Password Manager",
    ),
    ("adce0002-35bc-c60a-648b-0b25f1f05503", "Chrome on Mac"),
    ("fbfc3007-154e-4ecc-8c0b-6e020557d7bd", "iCloud Keychain"),
    ("dd4ec289-e01d-41c9-bb89-70fa845d4bf2", "iCloud Keychain"),
    ("08987058-cadc-4b81-b6e1-30de50dcbe96", "Windows Hello"),
    ("9ddd1817-af5a-4672-a2b9-3e3dd95000a9", "Windows Hello"),
    ("6028b017-b1d4-4c02-b4b3-afcdafc96bb2", "Windows Hello"),
    ("bada5566-a7aa-401f-bd96-45619a55120d", "1Password"),
    ("d548826e-79b4-db40-a3d8-11116f7e8349", "Bitwarden"),
    ("531126d6-e717-415c-9320-3d9aa6981239", "Dashlane"),
];

fn default_name(aaguid: Option<&str>, existing: i64) -> String {
    aaguid
        .and_then(|a| KNOWN_AUTHENTICATORS.iter().find(|(id, _)| *id == a))
        .map(|(_, name)| (*name).to_string())
        .unwrap_or_else(|| format!("Passkey {}", existing + 1))
}

fn descriptors(keys: &[passkeys::Passkey]) -> Vec<Descriptor> {
    keys.iter()
        .map(|k| Descriptor {
            credential_id: k.credential_id.clone(),
            transports: serde_json::from_str(&k.transports).unwrap_or_default(),
        })
        .collect()
}

/// A stored ceremony for `started`.
async fn store(
    state: &AppState,
    started: &webauthn::Started,
    purpose: &str,
    user_id: Option<&str>,
    binding: Option<&str>,
    user_stamp: Option<i64>,
) -> Result<()> {
    let now = state.clock.now_ms();
    passkeys::insert_ceremony(
        &state.db,
        &passkeys::Ceremony {
            challenge_hash: started.challenge_hash.clone(),
            purpose: purpose.to_string(),
            user_id: user_id.map(str::to_string),
            binding: binding.map(str::to_string),
            user_stamp,
            state: started.state.clone(),
            created_at: now,
            expires_at: now.saturating_add(ttl(state)),
        },
    )
    .await?;
    Ok(())
}

/// What a ceremony taken for an answer must be.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Expect<'a> {
    pub purpose: &'static str,
    /// The session or `mfa_token` hash it was bound to.
    pub binding: Option<&'a str>,
    pub user_id: Option<&'a str>,
    pub user_stamp: Option<i64>,
}

/// Takes the ceremony of a challenge (it is gone, whatever follows) and checks it is the one
/// `expect` names, unexpired at `now`.
async fn take(
    state: &AppState,
    challenge_hash: &str,
    expect: Expect<'_>,
    now: i64,
) -> Result<passkeys::Ceremony> {
    let ceremony = passkeys::take_ceremony(&state.db, challenge_hash, expect.purpose)
        .await?
        .ok_or(CHALLENGE_UNKNOWN)?;
    if ceremony.expires_at <= now {
        return Err(CHALLENGE_EXPIRED);
    }
    let fits = ceremony.binding.as_deref() == expect.binding
        && expect
            .user_id
            .is_none_or(|u| ceremony.user_id.as_deref() == Some(u))
        && expect
            .user_stamp
            .is_none_or(|s| ceremony.user_stamp == Some(s));
    if !fits {
        return Err(CHALLENGE_NOT_YOURS);
    }
    Ok(ceremony)
}

fn refusal(r: Refusal) -> Error {
    match r {
        Refusal::Challenge(why) => Error::PasskeyChallengeInvalid(why),
        Refusal::Invalid(why) => Error::InvalidPasskey(why),
    }
}

/// A 422 on `field` for a credential that cannot be read.
fn malformed(field: &str, message: String) -> Error {
    Error::validation(field, message)
}

/// Reads an assertion sent in `field`.
pub(crate) fn parse_assertion(
    field: &str,
    credential: &serde_json::Value,
) -> Result<ParsedAssertion> {
    webauthn::parse_assertion(credential).map_err(|m| malformed(field, m))
}

/// A verified assertion: the passkey it used, as stored, and what it said.
#[derive(Debug)]
pub(crate) struct Verified {
    pub passkey: passkeys::Passkey,
    pub asserted: webauthn::Asserted,
}

impl Verified {
    /// Whether the passkey is synced (backup eligible): `swk`, else `hwk`.
    fn synced(&self) -> bool {
        self.passkey.backup_eligible
    }

    /// The `amr` of a password login completed with it.
    pub fn second_factor_amr(&self) -> &'static str {
        second_factor_amr(self.synced(), self.asserted.user_verified)
    }
}

/// Checks an assertion: takes its ceremony, finds the credential, verifies, and judges the
/// counter (WEBAUTHN_COUNTER_POLICY). Nothing of the use is written yet ([`begin_use`]).
pub(crate) async fn verify(
    state: &AppState,
    assertion: &ParsedAssertion,
    expect: Expect<'_>,
    now: i64,
) -> Result<Verified> {
    let ceremony = take(state, &assertion.challenge_hash, expect, now).await?;
    let passkey = passkeys::find_by_credential_id(&state.db, &assertion.credential_id)
        .await?
        .ok_or(UNKNOWN_CREDENTIAL)?;
    if ceremony
        .user_id
        .as_deref()
        .is_some_and(|u| u != passkey.user_id)
    {
        return Err(NOT_ALLOWED);
    }
    let handle = webauthn::handle_of(&passkey.user_id).ok_or(UNKNOWN_CREDENTIAL)?;
    if assertion.foreign_user_handle || assertion.user_handle.is_some_and(|h| h != handle) {
        return Err(HANDLE_MISMATCH);
    }
    let asserted = state
        .webauthn
        .finish_authentication(
            &ceremony.state,
            assertion,
            &StoredCredential {
                credential: &passkey.credential,
                user_handle: handle,
                sign_count: passkey.sign_count,
                backup_eligible: passkey.backup_eligible,
                backed_up: passkey.backed_up,
                user_verified: passkey.user_verified,
            },
        )
        .map_err(refusal)?;
    if asserted.counter_regressed {
        counter_regressed(
            state,
            &passkey,
            passkey.sign_count,
            asserted.presented_count,
            now,
        )
        .await?;
    }
    Ok(Verified { passkey, asserted })
}

fn refuses_regressions(state: &AppState) -> bool {
    state.config.passkeys.counter_policy == crate::config::CounterPolicy::Refuse
}

/// A counter that did not grow: warn, flag the passkey and mail its user (the first time), and
/// refuse under WEBAUTHN_COUNTER_POLICY=refuse.
async fn counter_regressed(
    state: &AppState,
    passkey: &passkeys::Passkey,
    stored: i64,
    presented: i64,
    now: i64,
) -> Result<()> {
    let mut tx = state.db.begin().await?;
    flag_in(state, &mut tx, passkey, stored, presented, now).await?;
    tx.commit().await?;
    state.mail_wakeup.notify_one();
    if refuses_regressions(state) {
        return Err(Error::PasskeyCounterRegressed);
    }
    Ok(())
}

/// Logs a counter that did not grow and, inside `tx`, flags the passkey and mails its user the
/// first time.
async fn flag_in(
    state: &AppState,
    tx: &mut Tx,
    passkey: &passkeys::Passkey,
    stored: i64,
    presented: i64,
    now: i64,
) -> Result<()> {
    let refuse = refuses_regressions(state);
    tracing::warn!(
        user_id = %passkey.user_id,
        passkey_id = %passkey.id,
        stored,
        presented,
        refused = refuse,
        "a passkey's signature counter did not grow: possibly a cloned authenticator"
    );
    if passkeys::mark_counter_regressed(tx, &passkey.id, now).await?
        && let Some(email) = users::email_in(tx, &passkey.user_id).await?
    {
        recovery::queue_notice(
            state,
            tx,
            NOTICE_PASSKEY_COUNTER,
            &email,
            templates::passkey_counter_regressed(&passkey.name, refuse),
            now,
        )
        .await?;
    }
    Ok(())
}

/// Begins the transaction that records a verified use (counter, backup state, last use), and
/// records it, conditionally on the counter it was checked against. A use that lost a race to
/// another of the same passkey is judged again against the counter that won: at the same or a
/// lower count it is a clone (flagged, mailed, and under WEBAUTHN_COUNTER_POLICY=refuse refused,
/// the flag committed); without a counter, or at a higher one, it is recorded after it.
pub(crate) async fn begin_use(state: &AppState, verified: &Verified, now: i64) -> Result<Tx> {
    let mut tx = state.db.begin().await?;
    let key = &verified.passkey;
    let presented = verified.asserted.presented_count;
    let record = |expected: i64, count: i64| passkeys::Use {
        id: &key.id,
        expected_count: expected,
        sign_count: count,
        backed_up: verified.asserted.backed_up,
        now,
    };
    if passkeys::record_use(
        &mut tx,
        &record(key.sign_count, verified.asserted.sign_count),
    )
    .await?
    {
        return Ok(tx);
    }
    let current = passkeys::sign_count_in(&mut tx, &key.id)
        .await?
        .ok_or(UNKNOWN_CREDENTIAL)?;
    if presented != 0 && presented <= current {
        flag_in(state, &mut tx, key, current, presented, now).await?;
        if refuses_regressions(state) {
            tx.commit().await?;
            state.mail_wakeup.notify_one();
            return Err(Error::PasskeyCounterRegressed);
        }
    }
    if passkeys::record_use(&mut tx, &record(current, current.max(presented))).await? {
        Ok(tx)
    } else {
        Err(USED_MEANWHILE)
    }
}

/// Whether the caller's session proved a passkey recently enough to stand in for a password
/// (MFA_STEP_UP_SECONDS, at least [`mfa::PASSKEY_PROOF_MIN_MS`]).
pub(crate) fn recently_proved(state: &AppState, caller: &Caller) -> bool {
    mfa::within_step_up(state, caller.passkey_at, true)
}

/// What an account without a password needs where a password is asked for: a passkey proved
/// within MFA_STEP_UP_SECONDS (at least a minute), else 403 STEP_UP_REQUIRED.
pub(crate) fn require_passkey_proof(state: &AppState, caller: &Caller) -> Result<()> {
    if state.config.passkeys.enabled && recently_proved(state, caller) {
        Ok(())
    } else {
        Err(Error::StepUpRequired {
            methods: vec![PASSKEY],
        })
    }
}

/// What a passkey change needs: the password (422 when an account with one sends none; a
/// passkey proof for an account without one), and the second factor or a recent pass.
async fn confirm_change(
    state: &AppState,
    caller: &Caller,
    password: Option<&Password>,
    factor: Option<&SecondFactor>,
) -> Result<()> {
    let none = Password::given(String::new());
    let password = match password {
        Some(p) => p,
        None if caller.account.has_password => {
            return Err(Error::validation("password", "is required"));
        }
        None => &none,
    };
    mfa::step_up(
        state,
        caller,
        Some(password),
        factor,
        StepUp::CodeOrRecentPass,
    )
    .await
}

/// Options to register a passkey, after what a sensitive change needs (see [`confirm_change`]):
/// the caller's existing passkeys are excluded. A `register` ceremony bound to the caller's
/// session and stamp.
#[tracing::instrument(skip_all, fields(user_id = %caller.account.id))]
pub async fn registration_options(
    state: &AppState,
    caller: &Caller,
    password: Option<&Password>,
    factor: Option<&SecondFactor>,
) -> Result<Options> {
    enabled(state)?;
    let id = &caller.account.id;
    let keys = passkeys::list_of_user(&state.db, id).await?;
    if i64::try_from(keys.len()).unwrap_or(i64::MAX) >= MAX_PER_ACCOUNT {
        return Err(Error::PasskeyLimit);
    }
    confirm_change(state, caller, password, factor).await?;
    let handle = webauthn::handle_of(id).ok_or_else(|| Error::internal("a user id is a UUID"))?;
    let started = state
        .webauthn
        .start_registration(
            handle,
            &caller.account.email,
            &caller.account.name,
            &descriptors(&keys),
        )
        .map_err(Error::internal)?;
    store(
        state,
        &started,
        REGISTER,
        Some(id),
        Some(&caller.session_id),
        Some(caller.security_stamp),
    )
    .await?;
    Ok(Options(started.options))
}

/// Registers the passkey of `credential` (the answer to [`registration_options`]), named `name`
/// (or after its authenticator, or "Passkey N"). A credential change: see the module's rules.
#[tracing::instrument(skip_all, fields(user_id = %caller.account.id))]
pub async fn register(
    state: &AppState,
    caller: &Caller,
    credential: &serde_json::Value,
    name: Option<String>,
) -> Result<PasskeyView> {
    enabled(state)?;
    let parsed =
        webauthn::parse_registration(credential).map_err(|m| malformed("credential", m))?;
    let name = name
        .map(|n| valid_name("name", &n))
        .transpose()
        .map_err(|e| Error::Validation(vec![e]))?;
    let id = &caller.account.id;
    let now = state.clock.now_ms();
    let ceremony = take(
        state,
        &parsed.challenge_hash,
        Expect {
            purpose: REGISTER,
            binding: Some(&caller.session_id),
            user_id: Some(id),
            user_stamp: Some(caller.security_stamp),
        },
        now,
    )
    .await?;
    let new = state
        .webauthn
        .finish_registration(&ceremony.state, &parsed)
        .map_err(refusal)?;
    let mut tx = state.db.begin().await?;
    let Some(stamp) =
        users::move_stamp(&mut tx, id, caller.security_stamp, &caller.session_id, now).await?
    else {
        return Err(CREDENTIALS_CHANGED);
    };
    let existing = passkeys::count_of_user_in(&mut tx, id).await?;
    if existing >= MAX_PER_ACCOUNT {
        return Err(Error::PasskeyLimit);
    }
    let row = passkeys::Passkey {
        id: uuid::Uuid::new_v4().to_string(),
        user_id: id.clone(),
        credential_id: new.credential_id,
        credential: new.credential,
        sign_count: new.sign_count,
        backup_eligible: new.backup_eligible,
        backed_up: new.backed_up,
        user_verified: new.user_verified,
        transports: serde_json::to_string(&new.transports).unwrap_or_else(|_| "[]".into()),
        name: name.unwrap_or_else(|| default_name(new.aaguid.as_deref(), existing)),
        aaguid: new.aaguid,
        created_at: now,
        last_used_at: None,
        counter_regressed_at: None,
    };
    match passkeys::insert(&mut tx, &row).await {
        Ok(()) => {}
        Err(e) if db::is_unique_violation(&e) => return Err(Error::PasskeyAlreadyRegistered),
        Err(e) => return Err(e.into()),
    }
    let ended = sessions::revoke_all_of_user_in(&mut tx, id, Some(&caller.session_id), now).await?;
    sessions::carry_forward(
        &mut tx,
        id,
        caller.security_stamp,
        stamp,
        Some(&caller.session_id),
    )
    .await?;
    let kind = if row.backup_eligible { SWK } else { HWK };
    let amr = if row.user_verified {
        merged_amr(&caller.amr, &[kind, "user", "mfa"])
    } else {
        merged_amr(&caller.amr, &[kind, "mfa"])
    };
    // A passkey proof (`passkey_at`) only if it verified the user, as at a step-up.
    sessions::passed_passkey_in(&mut tx, &caller.session_id, &amr, row.user_verified, now).await?;
    recovery::queue_notice(
        state,
        &mut tx,
        NOTICE_PASSKEY_ADDED,
        &caller.account.email,
        templates::passkey_added(&row.name),
        now,
    )
    .await?;
    tx.commit().await?;
    state.mail_wakeup.notify_one();
    tracing::info!(
        passkey_id = %row.id,
        user_verified = row.user_verified,
        synced = row.backup_eligible,
        other_sessions_ended = ended,
        "passkey registered"
    );
    Ok(row.into())
}

/// The caller's passkeys, oldest first.
pub async fn list(state: &AppState, caller: &Caller) -> Result<Vec<PasskeyView>> {
    enabled(state)?;
    let keys = passkeys::list_of_user(&state.db, &caller.account.id).await?;
    Ok(keys.into_iter().map(Into::into).collect())
}

const NO_SUCH_PASSKEY: Error = Error::NotFound("you have no passkey with this id");

/// Renames one of the caller's passkeys.
pub async fn rename(
    state: &AppState,
    caller: &Caller,
    id: &str,
    name: String,
) -> Result<PasskeyView> {
    enabled(state)?;
    let name = valid_name("name", &name).map_err(|e| Error::Validation(vec![e]))?;
    let renamed = passkeys::rename(&state.db, &caller.account.id, id, &name)
        .await?
        .ok_or(NO_SUCH_PASSKEY)?;
    Ok(renamed.into())
}

/// Removes one of the caller's passkeys, after what a sensitive change needs. Not the last
/// passkey registered with user verification of an account without a password (409
/// LAST_CREDENTIAL), nor the last second factor of an account MFA_REQUIRED_FOR covers (403).
#[tracing::instrument(skip_all, fields(user_id = %caller.account.id))]
pub async fn delete(
    state: &AppState,
    caller: &Caller,
    id: &str,
    password: Option<&Password>,
    factor: Option<&SecondFactor>,
) -> Result<()> {
    enabled(state)?;
    let user_id = &caller.account.id;
    let key = passkeys::find_of_user(&state.db, user_id, id)
        .await?
        .ok_or(NO_SUCH_PASSKEY)?;
    let count = passkeys::count_of_user(&state.db, user_id).await?;
    if !caller.account.has_password {
        if count <= 1 {
            return Err(LAST_PASSKEY);
        }
        let verifying = passkeys::count_user_verified(&state.db, user_id).await?;
        if verifying - i64::from(key.user_verified) <= 0 {
            return Err(LAST_VERIFYING_PASSKEY);
        }
    }
    let policy = state
        .config
        .mfa
        .required_for
        .covers(caller.account.is_superuser);
    if count <= 1 && policy && !mfa_db::has_totp(&state.db, user_id).await? {
        return Err(LAST_FACTOR);
    }
    confirm_change(state, caller, password, factor).await?;
    let now = state.clock.now_ms();
    let mut tx = state.db.begin().await?;
    // Concurrent removals of an account's last credentials (passkeys, TOTP) wait for each other
    // here, and the rules are checked again on what the others left.
    users::lock_in(&mut tx, user_id).await?;
    if !passkeys::delete(&mut tx, user_id, id).await? {
        return Err(NO_SUCH_PASSKEY);
    }
    let left = passkeys::remaining_in(&mut tx, user_id).await?;
    if !left.password && left.passkeys == 0 {
        return Err(LAST_PASSKEY);
    }
    if !left.password && left.verifying_passkeys == 0 {
        return Err(LAST_VERIFYING_PASSKEY);
    }
    if policy && left.passkeys == 0 && !left.totp {
        return Err(LAST_FACTOR);
    }
    recovery::queue_notice(
        state,
        &mut tx,
        NOTICE_PASSKEY_REMOVED,
        &caller.account.email,
        templates::passkey_removed(&key.name),
        now,
    )
    .await?;
    tx.commit().await?;
    state.mail_wakeup.notify_one();
    tracing::info!(passkey_id = %key.id, passkeys_left = left.passkeys, "passkey removed");
    Ok(())
}

const LAST_VERIFYING_PASSKEY: Error = Error::LastCredential(
    "this is the last passkey that verifies you (with a PIN or biometrics) of an account without a password, the only kind that signs it in: set a password or add another such passkey first",
);

const LAST_FACTOR: Error = Error::Forbidden(
    "MFA_REQUIRED_FOR requires a second factor for this account: its last one cannot be removed",
);

const LAST_PASSKEY: Error = Error::LastCredential(
    "this is the last passkey of an account without a password: set a password or add another passkey first",
);

/// Options to sign in with a passkey: usernameless (any discoverable passkey; conditional UI)
/// without `email`, else the account's passkeys, or decoys (see the module's rules). A `login`
/// ceremony.
pub async fn login_options(state: &AppState, email: Option<&str>) -> Result<Options> {
    enabled(state)?;
    let email = email.map(str::trim).filter(|e| !e.is_empty());
    let Some(email) = email else {
        let started = state
            .webauthn
            .start_authentication(None, Verification::RequiredByCaller)
            .map_err(Error::internal)?;
        store(state, &started, LOGIN, None, None, None).await?;
        return Ok(Options(started.options));
    };
    let normalised = match Email::parse("email", email) {
        Ok(e) => e.as_str().to_string(),
        Err(_) => Email::normalise(email)
            .chars()
            .take(Email::MAX_LENGTH)
            .collect(),
    };
    // The same queries whether or not there is such an account.
    let user = users::find_by_email(&state.db, &normalised).await?;
    let keys =
        passkeys::list_of_user(&state.db, user.as_ref().map_or("", |u| u.id.as_str())).await?;
    let usable = user.as_ref().is_some_and(|u| u.is_active) && !keys.is_empty();
    // No transports, real or decoy: a security key's `["usb"]` would tell a real account.
    let allow = if usable {
        descriptors(&keys)
            .into_iter()
            .map(|d| Descriptor {
                transports: Vec::new(),
                ..d
            })
            .collect()
    } else {
        decoys(state, &normalised)
    };
    let started = state
        .webauthn
        .start_authentication(Some(&allow), Verification::RequiredByCaller)
        .map_err(Error::internal)?;
    store(
        state,
        &started,
        LOGIN,
        Some(user.as_ref().map_or(NO_ACCOUNT, |u| u.id.as_str())),
        None,
        None,
    )
    .await?;
    Ok(Options(started.options))
}

/// 1 to 3 credential descriptors (as many of each, for a given key) for an address that has no
/// usable passkey: 32 bytes each like real ids, no transports (as real ones are listed here),
/// derived from a keyed hash of the address (the same at every call).
fn decoys(state: &AppState, email: &str) -> Vec<Descriptor> {
    let seed = state
        .seal
        .keyed_hash("passkey decoy count", &[email.as_bytes()]);
    let count = 1 + decoy_count_index(
        &data_encoding::HEXLOWER
            .decode(seed.as_bytes())
            .unwrap_or_default(),
    );
    (0..count)
        .map(|i| {
            let hex = state
                .seal
                .keyed_hash("passkey decoy id", &[email.as_bytes(), &[i as u8]]);
            let bytes = data_encoding::HEXLOWER
                .decode(hex.as_bytes())
                .unwrap_or_else(|_| vec![0; 32]);
            Descriptor {
                credential_id: base64::Engine::encode(
                    &base64::engine::general_purpose::URL_SAFE_NO_PAD,
                    bytes,
                ),
                transports: Vec::new(),
            }
        })
        .collect()
}

/// 0, 1 or 2, uniformly, from the first byte of `seed` below 255 (255 = 3 × 85: the rest would
/// favour 0); 0 in the (2⁻²⁵⁶) case there is none.
fn decoy_count_index(seed: &[u8]) -> usize {
    seed.iter()
        .find(|b| **b < 255)
        .map_or(0, |b| usize::from(b % 3))
}

/// Signs in with a passkey (the answer to [`login_options`]): it must have verified the user, and
/// the session has then passed the second factor.
#[tracing::instrument(skip_all)]
pub async fn login(
    state: &AppState,
    credential: &serde_json::Value,
    client: ClientInfo,
) -> Result<TokenPair> {
    // Off, there is no passkey login to count.
    enabled(state)?;
    let result = sign_in(state, credential, client).await;
    state
        .metrics
        .login(crate::metrics::LoginMethod::Passkey, &result);
    result
}

async fn sign_in(
    state: &AppState,
    credential: &serde_json::Value,
    client: ClientInfo,
) -> Result<TokenPair> {
    enabled(state)?;
    let assertion = parse_assertion("credential", credential)?;
    let now = state.clock.now_ms();
    let verified = verify(
        state,
        &assertion,
        Expect {
            purpose: LOGIN,
            binding: None,
            user_id: None,
            user_stamp: None,
        },
        now,
    )
    .await
    .map_err(|e| match e {
        Error::InvalidPasskey(_) => LOGIN_REFUSED,
        e => e,
    })?;
    // Only now, the signature being good: only the passkey's holder learns this was the reason.
    if !verified.asserted.user_verified {
        tracing::info!(user_id = %verified.passkey.user_id, "passkey sign-in without user verification refused");
        return Err(NOT_VERIFIED);
    }
    let user = users::find_by_id(&state.db, &verified.passkey.user_id)
        .await?
        .ok_or(LOGIN_REFUSED)?;
    if !user.is_active {
        return Err(Error::AccountDisabled);
    }
    if state.config.accounts.require_verified_email && !user.is_verified {
        return Err(Error::EmailNotVerified);
    }
    let amr = first_factor_amr(verified.synced());
    let mut tx = begin_use(state, &verified, now).await?;
    let pair = open_session_in(
        state,
        &mut tx,
        &user,
        client,
        Authentication {
            amr,
            auth_time: now,
            mfa_at: Some(now),
            passkey_at: Some(now),
        },
        now,
    )
    .await?
    .ok_or(CREDENTIALS_CHANGED)?;
    tx.commit().await?;
    tracing::info!(user_id = %user.id, "signed in with a passkey");
    Ok(pair)
}

/// Options to finish a password login with a passkey: the account's passkeys. Spends no try of
/// the `mfa_token`. An `mfa` ceremony bound to the token.
pub async fn mfa_options(state: &AppState, mfa_token: &str) -> Result<Options> {
    enabled(state)?;
    let token_hash = hash_token_id(mfa_token);
    let now = state.clock.now_ms();
    let challenge = mfa_db::peek_challenge(&state.db, &token_hash, now, mfa::MAX_TRIES)
        .await?
        .ok_or(Error::InvalidMfaToken(mfa::INVALID_MFA_TOKEN))?;
    let keys = passkeys::list_of_user(&state.db, &challenge.user_id).await?;
    if keys.is_empty() {
        return Err(Error::NoPasskey);
    }
    let started = state
        .webauthn
        .start_authentication(Some(&descriptors(&keys)), Verification::Preferred)
        .map_err(Error::internal)?;
    store(
        state,
        &started,
        MFA,
        Some(&challenge.user_id),
        Some(&token_hash),
        Some(challenge.user_stamp),
    )
    .await?;
    Ok(Options(started.options))
}

/// What an `mfa` ceremony must be: bound to this token's hash, for its account and stamp.
pub(crate) fn mfa_expect<'a>(token_hash: &'a str, user_id: &'a str, user_stamp: i64) -> Expect<'a> {
    Expect {
        purpose: MFA,
        binding: Some(token_hash),
        user_id: Some(user_id),
        user_stamp: Some(user_stamp),
    }
}

/// Options for a step-up with one of the caller's passkeys (user verification required). A
/// `step_up` ceremony bound to the caller's session and stamp.
pub async fn step_up_options(state: &AppState, caller: &Caller) -> Result<Options> {
    enabled(state)?;
    let keys = passkeys::list_of_user(&state.db, &caller.account.id).await?;
    if keys.is_empty() {
        return Err(Error::NoPasskey);
    }
    let started = state
        .webauthn
        .start_authentication(Some(&descriptors(&keys)), Verification::Required)
        .map_err(Error::internal)?;
    store(
        state,
        &started,
        STEP_UP,
        Some(&caller.account.id),
        Some(&caller.session_id),
        Some(caller.security_stamp),
    )
    .await?;
    Ok(Options(started.options))
}

/// A step-up with a passkey: the caller's session passed the second factor now (`mfa_at`), and
/// proved a passkey (`passkey_at`).
#[tracing::instrument(skip_all, fields(user_id = %caller.account.id))]
pub async fn step_up(
    state: &AppState,
    caller: &Caller,
    credential: &serde_json::Value,
) -> Result<()> {
    enabled(state)?;
    let assertion = parse_assertion("credential", credential)?;
    let now = state.clock.now_ms();
    let verified = verify(
        state,
        &assertion,
        Expect {
            purpose: STEP_UP,
            binding: Some(&caller.session_id),
            user_id: Some(&caller.account.id),
            user_stamp: Some(caller.security_stamp),
        },
        now,
    )
    .await?;
    // The session has now shown this passkey too.
    let kind = if verified.synced() { SWK } else { HWK };
    let amr = if verified.asserted.user_verified {
        merged_amr(&caller.amr, &[kind, "user", "mfa"])
    } else {
        merged_amr(&caller.amr, &[kind, "mfa"])
    };
    let mut tx = begin_use(state, &verified, now).await?;
    if !sessions::passed_passkey_in(
        &mut tx,
        &caller.session_id,
        &amr,
        verified.asserted.user_verified,
        now,
    )
    .await?
    {
        return Err(Error::Unauthorized("the session has ended"));
    }
    tx.commit().await?;
    tracing::info!("step-up passed with a passkey");
    Ok(())
}

/// Makes the caller's account passwordless: it needs a passkey registered with user
/// verification and a recent passkey proof. A credential change: the stamp moves, this session
/// goes on, the others end, outstanding links die, and the account is mailed.
#[tracing::instrument(skip_all, fields(user_id = %caller.account.id))]
pub async fn remove_password(state: &AppState, caller: &Caller) -> Result<()> {
    enabled(state)?;
    let id = &caller.account.id;
    if !caller.account.has_password {
        return Err(Error::PasswordNotSet);
    }
    if passkeys::count_user_verified(&state.db, id).await? == 0 {
        return Err(NO_VERIFYING_PASSKEY);
    }
    require_passkey_proof(state, caller)?;
    let now = state.clock.now_ms();
    let mut tx = state.db.begin().await?;
    let Some(changed) =
        users::remove_password(&mut tx, id, caller.security_stamp, &caller.session_id, now).await?
    else {
        drop(tx);
        return match users::find_by_id(&state.db, id).await? {
            Some(user) if !user.has_password() => Err(Error::PasswordNotSet),
            _ => Err(CREDENTIALS_CHANGED),
        };
    };
    // Checked again now that the account is locked: a passkey removed meanwhile counts.
    if passkeys::count_user_verified_in(&mut tx, id).await? == 0 {
        return Err(NO_VERIFYING_PASSKEY);
    }
    let ended = sessions::revoke_all_of_user_in(&mut tx, id, Some(&caller.session_id), now).await?;
    sessions::carry_forward(
        &mut tx,
        id,
        caller.security_stamp,
        changed.security_stamp,
        Some(&caller.session_id),
    )
    .await?;
    recovery::queue_notice(
        state,
        &mut tx,
        NOTICE_PASSWORD_REMOVED,
        &changed.email,
        templates::password_removed(),
        now,
    )
    .await?;
    tx.commit().await?;
    state.mail_wakeup.notify_one();
    tracing::info!(
        other_sessions_ended = ended,
        "password removed: passkeys only"
    );
    Ok(())
}

const NO_VERIFYING_PASSKEY: Error = Error::LastCredential(
    "add a passkey that verifies you (with a PIN or biometrics) first: it would be the account's only way to sign in",
);

/// How many passkeys count as the account's second factor (none while PASSKEYS=false).
pub(crate) async fn count_as_factor(state: &AppState, user_id: &str) -> Result<i64> {
    if !state.config.passkeys.enabled {
        return Ok(0);
    }
    Ok(passkeys::count_of_user(&state.db, user_id).await?)
}

/// The same, inside `tx`.
pub(crate) async fn count_as_factor_in(
    state: &AppState,
    tx: &mut Tx,
    user_id: &str,
) -> Result<i64> {
    if !state.config.passkeys.enabled {
        return Ok(0);
    }
    Ok(passkeys::count_of_user_in(tx, user_id).await?)
}

/// Removes every passkey of the account inside `tx` (a superuser's reset). Returns how many.
pub(crate) async fn remove_all_in(tx: &mut Tx, user_id: &str) -> Result<u64> {
    Ok(passkeys::remove_all_of_user(tx, user_id).await?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn amr_values_are_merged_in_order() {
        assert_eq!(
            merged_amr("pwd", &["hwk", "user", "mfa"]),
            "pwd hwk user mfa"
        );
        assert_eq!(
            merged_amr("pwd otp mfa", &["swk", "mfa"]),
            "pwd swk otp mfa"
        );
        assert_eq!(merged_amr("", &["hwk", "mfa"]), "hwk mfa");
        assert_eq!(first_factor_amr(true), "swk user mfa");
        assert_eq!(first_factor_amr(false), "hwk user mfa");
        assert_eq!(second_factor_amr(false, false), "pwd hwk mfa");
    }

    #[test]
    fn names_are_trimmed_and_bounded() {
        assert_eq!(valid_name("name", "  Laptop ").unwrap(), "Laptop");
        assert!(valid_name("name", "   ").is_err());
        assert!(valid_name("name", &"é".repeat(64)).is_ok());
        assert!(valid_name("name", &"é".repeat(65)).is_err());
        assert!(valid_name("name", "a\u{0}b").is_err());
        assert!(valid_name("name", "a\nb").is_err());
        assert_eq!(
            default_name(Some("ea9b8d66-4d01-1d21-3ce4-b6b48cb575d4"), 0),
            "Google Password Manager"
        );
        assert_eq!(default_name(None, 2), "Passkey 3");
    }

    #[test]
    fn decoy_counts_are_uniform() {
        let mut seen = [0usize; 3];
        for b in 0..=u8::MAX {
            if b < 255 {
                seen[decoy_count_index(&[b])] += 1;
            }
        }
        assert_eq!(seen, [85, 85, 85]);
        assert_eq!(decoy_count_index(&[255, 4]), 1);
        assert_eq!(decoy_count_index(&[]), 0);
    }
}
