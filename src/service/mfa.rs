//! The second factor: TOTP enrolment, recovery codes, the second step of a login, step-up for
//! sensitive changes, disabling, the superuser's reset, and the policy that can require it.
//!
//! Rules kept here:
//! - A TOTP secret is stored only sealed (`auth::seal`, the user id as associated data), and a
//!   recovery code only as a keyed hash.
//! - A code is accepted once: only for a time step later than the last accepted one
//!   (`db::mfa::accept_step`, one conditional statement); a recovery code is spent by a
//!   conditional update of its own row.
//! - Every code check is an attempt against the account's second-factor lockout (key
//!   [`lockout_key`]), counted before the code is looked at, as passwords are; a right password
//!   does not clear it, a right code does. An `mfa_token` takes at most [`MAX_TRIES`] codes.
//! - A login's `mfa_token` is spent in the transaction that spends its code, so one token opens
//!   at most one session.
//! - An account has a second factor when it has a confirmed TOTP authenticator or (PASSKEYS=true)
//!   a passkey (`service::passkeys`): MFA_REQUIRED, MFA_REQUIRED_FOR, step-up and the superuser's
//!   reset count both. A passkey at POST /login/mfa is checked like a code: under the same
//!   lockout, spending a try of the token, in the transaction that spends the token.

use crate::auth::tokens::{hash_token_id, random_token};
use crate::auth::totp;
use crate::db::{Tx, mfa, sessions, users};
use crate::domain::Password;
use crate::error::{Error, FieldError, Result};
use crate::mail::templates;
use crate::service::accounts::{CREDENTIALS_CHANGED, confirm_password};
use crate::service::login::{Authentication, open_session};
use crate::service::passkeys::{self as passkeys_service, PASSKEY};
use crate::service::sessions::{Caller, ClientInfo, TokenPair};
use crate::service::{lockout, ms, recovery};
use crate::state::AppState;

/// How many codes one `mfa_token` takes.
pub const MAX_TRIES: i64 = 5;

/// The `methods` values.
pub const TOTP: &str = "totp";
pub const RECOVERY_CODE: &str = "recovery_code";

/// RFC 8176 `amr` of a session, space-separated.
pub const AMR_PASSWORD: &str = "pwd";
pub const AMR_PASSWORD_TOTP: &str = "pwd otp mfa";
pub const AMR_PASSWORD_RECOVERY_CODE: &str = "pwd mfa";

/// The notices, each limited per address on its own (MAIL_RATE_LIMIT_SECONDS); a superuser's
/// reset is always mailed (`recovery::queue_security_notice`).
const NOTICE_MFA_ADDED: &str = "notice_mfa_added";
const NOTICE_MFA_REMOVED: &str = "notice_mfa_removed";
const NOTICE_RECOVERY_CODE: &str = "notice_recovery_code";
const NOTICE_RECOVERY_CODES_NEW: &str = "notice_recovery_codes_new";

/// A second factor as sent: a TOTP code or a recovery code, each normalised; or, at POST
/// /login/mfa only, a passkey's assertion (`PublicKeyCredential.toJSON()`).
#[derive(Clone, Debug)]
pub enum SecondFactor {
    Totp(String),
    RecoveryCode(String),
    Passkey(Box<serde_json::Value>),
}

impl SecondFactor {
    /// The factor of a body's `code` and `recovery_code` fields: at most one of them; `None`
    /// when neither is there.
    pub fn from_fields(
        code: Option<String>,
        recovery_code: Option<String>,
    ) -> Result<Option<Self>, FieldError> {
        match (code, recovery_code) {
            (Some(_), Some(_)) => Err(FieldError::new(
                "recovery_code",
                "send either code or recovery_code, not both",
            )),
            (Some(code), None) => totp::parse_code(&code)
                .map(|c| Some(Self::Totp(c)))
                .ok_or_else(|| {
                    FieldError::new("code", "must be the 6 digits of the authenticator app")
                }),
            (None, Some(code)) => totp::normalise_recovery_code(&code)
                .map(|c| Some(Self::RecoveryCode(c)))
                .ok_or_else(|| {
                    FieldError::new(
                        "recovery_code",
                        "must be one of your recovery codes (xxxxx-xxxxx)",
                    )
                }),
            (None, None) => Ok(None),
        }
    }

    /// Exactly one of `code`, `recovery_code` and `passkey` (POST /login/mfa).
    pub fn required_of(
        code: Option<String>,
        recovery_code: Option<String>,
        passkey: Option<serde_json::Value>,
    ) -> Result<Self, FieldError> {
        match passkey {
            None => Self::required(code, recovery_code),
            Some(_) if code.is_some() || recovery_code.is_some() => Err(FieldError::new(
                "passkey",
                "send one of code, recovery_code and passkey, not several",
            )),
            Some(passkey) => Ok(Self::Passkey(Box::new(passkey))),
        }
    }

    /// The same, where one of the two is required.
    pub fn required(
        code: Option<String>,
        recovery_code: Option<String>,
    ) -> Result<Self, FieldError> {
        Self::from_fields(code, recovery_code)?
            .ok_or_else(|| FieldError::new("code", "is required (or send recovery_code instead)"))
    }
}

/// The lockout key of an account's second factor. Upper case: no email address, normalised as
/// the login's keys are (lower case), can name it.
fn lockout_key(user_id: &str) -> String {
    format!("MFA:{user_id}")
}

fn recovery_code_hash(state: &AppState, user_id: &str, code: &str) -> String {
    state
        .seal
        .keyed_hash("recovery code", &[user_id.as_bytes(), code.as_bytes()])
}

fn open_secret(state: &AppState, row: &mfa::Totp) -> Result<Vec<u8>> {
    state
        .seal
        .open(&row.secret_sealed, row.user_id.as_bytes())
        .map_err(|e| {
            tracing::error!(user_id = %row.user_id, error = %e, "a TOTP secret cannot be opened: was MFA_ENCRYPTION_KEY (or SECRET_KEY) changed?");
            Error::internal(e)
        })
}

/// An account's second factors.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Factors {
    pub totp: bool,
    pub recovery_left: i64,
    /// Passkeys, counted only while PASSKEYS=true.
    pub passkeys: i64,
}

impl Factors {
    pub(crate) async fn of(state: &AppState, user_id: &str) -> Result<Self> {
        let totp = mfa::has_totp(&state.db, user_id).await?;
        let recovery_left = if totp {
            mfa::recovery_codes_left(&state.db, user_id).await?
        } else {
            0
        };
        Ok(Self {
            totp,
            recovery_left,
            passkeys: passkeys_service::count_as_factor(state, user_id).await?,
        })
    }

    pub(crate) fn any(&self) -> bool {
        self.totp || self.passkeys > 0
    }

    /// The `methods`: `totp`, `recovery_code` while unused codes remain, `passkey`.
    pub(crate) fn methods(&self) -> Vec<&'static str> {
        methods_from(self.totp, self.recovery_left, self.passkeys > 0)
    }
}

/// The `methods` of an account with (or without) TOTP, `recovery_left` unused codes, and
/// passkeys (or not).
fn methods_from(totp: bool, recovery_left: i64, passkey: bool) -> Vec<&'static str> {
    let mut methods = Vec::new();
    if totp {
        methods.push(TOTP);
        if recovery_left > 0 {
            methods.push(RECOVERY_CODE);
        }
    }
    if passkey {
        methods.push(PASSKEY);
    }
    methods
}

/// Whether the policy (MFA_REQUIRED_FOR) keeps this caller to enrolment: it covers the account,
/// and the session has not passed a second factor or the account no longer has one (it was
/// removed, and the policy came to cover the account afterwards). Reads the database only for
/// accounts the policy covers whose session passed a factor.
pub async fn must_enrol(state: &AppState, caller: &Caller) -> Result<bool> {
    if !state
        .config
        .mfa
        .required_for
        .covers(caller.account.is_superuser)
    {
        return Ok(false);
    }
    if !caller.passed_second_factor() {
        return Ok(true);
    }
    let passkeys = state.config.passkeys.enabled;
    Ok(!mfa::has_second_factor(&state.db, &caller.account.id, passkeys).await?)
}

/// The account's second factors, as GET /me/mfa shows them.
#[derive(Debug)]
pub struct Status {
    pub totp_enabled_at: Option<i64>,
    pub recovery_codes_remaining: i64,
    pub methods: Vec<&'static str>,
    pub required: bool,
    pub reset_pending_until: Option<i64>,
    /// How many passkeys the account has (0 while PASSKEYS=false).
    pub passkeys: i64,
    /// Whether the account has a password.
    pub has_password: bool,
}

pub async fn status(state: &AppState, caller: &Caller) -> Result<Status> {
    let id = &caller.account.id;
    let row = mfa::totp_of(&state.db, id).await?;
    let reset_pending_until = row.as_ref().and_then(|t| t.reset_due_at);
    let totp = row.filter(|t| t.confirmed_at.is_some());
    let remaining = if totp.is_some() {
        mfa::recovery_codes_left(&state.db, id).await?
    } else {
        0
    };
    let passkeys = passkeys_service::count_as_factor(state, id).await?;
    Ok(Status {
        totp_enabled_at: totp.as_ref().and_then(|t| t.confirmed_at),
        recovery_codes_remaining: remaining,
        methods: methods_from(totp.is_some(), remaining, passkeys > 0),
        required: state
            .config
            .mfa
            .required_for
            .covers(caller.account.is_superuser),
        reset_pending_until,
        passkeys,
        has_password: caller.account.has_password,
    })
}

/// A started enrolment: what the authenticator app needs.
#[derive(Debug)]
pub struct Enrolment {
    pub secret: String,
    pub otpauth_uri: String,
    pub qr_svg: String,
}

/// Starts (or restarts) TOTP enrolment after checking the password. Nothing is enabled until
/// [`confirm_enrolment`].
#[tracing::instrument(skip_all, fields(user_id = %caller.account.id))]
pub async fn begin_enrolment(
    state: &AppState,
    caller: &Caller,
    password: &Password,
) -> Result<Enrolment> {
    let id = &caller.account.id;
    if mfa::has_totp(&state.db, id).await? {
        return Err(Error::MfaAlreadyEnabled);
    }
    confirm_password(state, caller, password).await?;
    let secret = totp::new_secret();
    let sealed = state.seal.seal(&secret, id.as_bytes());
    if !mfa::begin_enrolment(&state.db, id, &sealed, state.clock.now_ms()).await? {
        return Err(Error::MfaAlreadyEnabled);
    }
    let otpauth_uri = totp::otpauth_uri(&state.config.mfa.issuer, &caller.account.email, &secret);
    let qr_svg = totp::qr_svg(&otpauth_uri).map_err(|e| Error::internal(e.to_string()))?;
    tracing::info!("TOTP enrolment started");
    Ok(Enrolment {
        secret: totp::base32(&secret),
        otpauth_uri,
        qr_svg,
    })
}

/// The enrolment again, for the secret the caller was shown (`secret`: base32, as
/// [`begin_enrolment`] returned it): what the account page shows once more beside a wrong
/// confirmation code. Built only from what the caller sends back, never read from storage, so
/// that a session without the password cannot learn a pending secret. `None` for anything that
/// is not such a secret.
pub fn enrolment_for(state: &AppState, caller: &Caller, secret: &str) -> Option<Enrolment> {
    let bytes = data_encoding::BASE32_NOPAD.decode(secret.as_bytes()).ok()?;
    if bytes.len() != totp::SECRET_BYTES {
        return None;
    }
    let otpauth_uri = totp::otpauth_uri(&state.config.mfa.issuer, &caller.account.email, &bytes);
    let qr_svg = totp::qr_svg(&otpauth_uri).ok()?;
    Some(Enrolment {
        secret: totp::base32(&bytes),
        otpauth_uri,
        qr_svg,
    })
}

/// A new set of recovery codes, and their hashes for the account.
fn new_recovery_codes(state: &AppState, user_id: &str) -> (Vec<String>, Vec<String>) {
    let codes = totp::new_recovery_codes(totp::RECOVERY_CODES);
    let hashes = codes
        .iter()
        .map(|c| {
            let normal = totp::normalise_recovery_code(c).expect("a new code is well formed");
            recovery_code_hash(state, user_id, &normal)
        })
        .collect();
    (codes, hashes)
}

/// Confirms enrolment with a first code: enables TOTP, returns the recovery codes (shown this
/// once), moves the security stamp (a credential change), ends the account's other sessions,
/// and marks this one as having passed the factor.
#[tracing::instrument(skip_all, fields(user_id = %caller.account.id))]
pub async fn confirm_enrolment(
    state: &AppState,
    caller: &Caller,
    code: &str,
) -> Result<Vec<String>> {
    let id = &caller.account.id;
    // A row without a secret only holds a superuser's pending reset: no enrolment.
    let row = match mfa::totp_of(&state.db, id)
        .await?
        .filter(|t| !t.secret_sealed.is_empty())
    {
        None => {
            return Err(Error::NotFound(
                "no enrolment is under way: start one with POST /me/mfa/totp",
            ));
        }
        Some(row) if row.confirmed_at.is_some() => return Err(Error::MfaAlreadyEnabled),
        Some(row) => row,
    };
    let attempt = lockout::begin(state, &lockout_key(id)).await?;
    let secret = match open_secret(state, &row) {
        Ok(secret) => secret,
        Err(e) => {
            attempt.abandoned(state).await?;
            return Err(e);
        }
    };
    let now = state.clock.now_ms();
    let Some(step) = totp::matching_step(&secret, code, now) else {
        attempt.failed();
        return Err(Error::WrongMfaCode);
    };
    let (codes, hashes) = new_recovery_codes(state, id);
    let mut tx = state.db.begin().await?;
    if !mfa::confirm(&mut tx, id, &row.secret_sealed, step, now).await? {
        drop(tx);
        attempt.abandoned(state).await?;
        return Err(Error::NotFound(
            "the enrolment was replaced or confirmed meanwhile: start again",
        ));
    }
    // A credential change: logins whose password was checked before it (and links mailed
    // before it) yield nothing after it; this session goes on under the new stamp.
    let Some(stamp) =
        users::move_stamp(&mut tx, id, caller.security_stamp, &caller.session_id, now).await?
    else {
        drop(tx);
        attempt.abandoned(state).await?;
        return Err(CREDENTIALS_CHANGED);
    };
    mfa::replace_recovery_codes(&mut tx, id, &hashes, now).await?;
    let ended = sessions::revoke_all_of_user_in(&mut tx, id, Some(&caller.session_id), now).await?;
    sessions::carry_forward(
        &mut tx,
        id,
        caller.security_stamp,
        stamp,
        Some(&caller.session_id),
    )
    .await?;
    sessions::passed_second_factor_in(&mut tx, &caller.session_id, AMR_PASSWORD_TOTP, now).await?;
    recovery::queue_notice(
        state,
        &mut tx,
        NOTICE_MFA_ADDED,
        &caller.account.email,
        templates::mfa_enabled(),
        now,
    )
    .await?;
    tx.commit().await?;
    state.mail_wakeup.notify_one();
    settle_after_commit(state, attempt).await;
    tracing::info!(other_sessions_ended = ended, "TOTP enabled");
    Ok(codes)
}

/// A right code clears the second factor's lockout. What it did is committed by then: a failure
/// to clear the count is logged, not answered (the user would lose the recovery codes or the
/// session just made).
async fn settle_after_commit(state: &AppState, attempt: lockout::Attempt) {
    if let Err(e) = attempt.succeeded(state).await {
        tracing::warn!(error = %e, "could not clear the second factor's failed attempts");
    }
}

/// Checks `factor` for the account and spends it inside `tx`: returns the `amr` it earns, or
/// `None` when it is wrong, old, replayed or used. A spent recovery code queues a notice.
async fn spend_factor(
    state: &AppState,
    tx: &mut Tx,
    user_id: &str,
    email: &str,
    factor: &SecondFactor,
    now: i64,
) -> Result<Option<&'static str>> {
    match factor {
        // A passkey is verified before the transaction (`with_factor`); here it is wrong.
        SecondFactor::Passkey(_) => Ok(None),
        SecondFactor::Totp(code) => {
            let Some(row) = mfa::totp_of_in(tx, user_id)
                .await?
                .filter(|t| t.confirmed_at.is_some())
            else {
                return Ok(None);
            };
            let secret = open_secret(state, &row)?;
            let Some(step) = totp::matching_step(&secret, code, now) else {
                return Ok(None);
            };
            Ok(mfa::accept_step(tx, user_id, &row.secret_sealed, step)
                .await?
                .then_some(AMR_PASSWORD_TOTP))
        }
        SecondFactor::RecoveryCode(code) => {
            let hash = recovery_code_hash(state, user_id, code);
            if !mfa::use_recovery_code(tx, user_id, &hash, now).await? {
                return Ok(None);
            }
            let left = mfa::recovery_codes_left_in(tx, user_id).await?;
            recovery::queue_notice(
                state,
                tx,
                NOTICE_RECOVERY_CODE,
                email,
                templates::recovery_code_used(left),
                now,
            )
            .await?;
            tracing::info!(
                user_id,
                recovery_codes_left = left,
                "a recovery code was used"
            );
            Ok(Some(AMR_PASSWORD_RECOVERY_CODE))
        }
    }
}

/// A passkey's assertion offered as the factor, and the ceremony it must answer.
struct PasskeyFactor<'a> {
    assertion: &'a crate::auth::webauthn::ParsedAssertion,
    expect: passkeys_service::Expect<'a>,
}

/// Checks and spends `factor` under the account's second-factor lockout, then runs `also`
/// in the same transaction (only when the factor was right) and commits. `wrong` is the error
/// for a wrong code. A passkey (`passkey`) is verified first, its ceremony taken whatever
/// follows; its refusals are its own errors, counted as wrong codes are. Returns the `amr` the
/// factor earns and what `also` returned.
async fn with_factor<T>(
    state: &AppState,
    user_id: &str,
    email: &str,
    factor: &SecondFactor,
    passkey: Option<PasskeyFactor<'_>>,
    wrong: Error,
    also: impl AsyncFnOnce(&mut Tx, i64) -> Result<Option<T>>,
) -> Result<(&'static str, T)> {
    let attempt = lockout::begin(state, &lockout_key(user_id)).await?;
    let now = state.clock.now_ms();
    let verified = match passkey {
        None => None,
        Some(p) => match passkeys_service::verify(state, p.assertion, p.expect, now).await {
            Ok(verified) => Some(verified),
            Err(
                e @ (Error::InvalidPasskey(_)
                | Error::PasskeyChallengeInvalid(_)
                | Error::PasskeyCounterRegressed),
            ) => {
                attempt.failed();
                return Err(e);
            }
            Err(e) => {
                attempt.abandoned(state).await?;
                return Err(e);
            }
        },
    };
    let outcome = async {
        let (mut tx, amr) = match &verified {
            Some(verified) => match passkeys_service::begin_use(state, verified, now).await {
                Ok(tx) => (tx, Some(verified.second_factor_amr())),
                Err(
                    e @ (Error::InvalidPasskey(_)
                    | Error::PasskeyCounterRegressed
                    | Error::PasskeyChallengeInvalid(_)),
                ) => return Ok(Err(e)),
                Err(e) => return Err(e),
            },
            None => {
                let mut tx = state.db.begin().await?;
                let amr = spend_factor(state, &mut tx, user_id, email, factor, now).await?;
                (tx, amr)
            }
        };
        let Some(amr) = amr else {
            return Ok(Err(wrong));
        };
        let Some(value) = also(&mut tx, now).await? else {
            return Ok(Ok(None));
        };
        tx.commit().await?;
        Ok::<_, Error>(Ok(Some((amr, value))))
    }
    .await;
    match outcome {
        Ok(Ok(Some(done))) => {
            state.mail_wakeup.notify_one();
            settle_after_commit(state, attempt).await;
            Ok(done)
        }
        Ok(Err(wrong)) => {
            attempt.failed();
            Err(wrong)
        }
        // `also` declined (the token was spent meanwhile): no code was judged.
        Ok(Ok(None)) => {
            attempt.abandoned(state).await?;
            Err(Error::InvalidMfaToken(INVALID_MFA_TOKEN))
        }
        Err(e) => {
            attempt.abandoned(state).await?;
            Err(e)
        }
    }
}

pub(crate) const INVALID_MFA_TOKEN: &str =
    "the mfa_token is not valid (unknown, used, expired or out of tries): log in again";

/// The first step of a login for an account with a second factor, after its password was
/// right: a single-use `mfa_token` for [`complete_login`], as the 403 MFA_REQUIRED error.
pub async fn challenge(state: &AppState, user: &users::User, client: ClientInfo) -> Result<Error> {
    let factors = Factors::of(state, &user.id).await?;
    let token = random_token();
    let now = state.clock.now_ms();
    let ttl = ms(state.config.mfa.token_ttl);
    mfa::insert_challenge(
        &state.db,
        &mfa::Challenge {
            token_hash: hash_token_id(&token),
            user_id: user.id.clone(),
            user_stamp: user.security_stamp,
            created_at: now,
            expires_at: now.saturating_add(ttl),
            attempts: 0,
            user_agent: client.user_agent,
            ip: client.ip,
        },
    )
    .await?;
    tracing::info!(user_id = %user.id, "password right; waiting for the second factor");
    Ok(Error::MfaRequired {
        mfa_token: token,
        methods: factors.methods(),
        expires_in: ttl / 1000,
    })
}

/// The second step of a login: spends the `mfa_token` and the code together and opens the
/// session, whose `auth_time` is the password's check.
#[tracing::instrument(skip_all)]
pub async fn complete_login(
    state: &AppState,
    mfa_token: &str,
    factor: &SecondFactor,
    client: ClientInfo,
) -> Result<TokenPair> {
    let result = second_step(state, mfa_token, factor, client).await;
    state
        .metrics
        .login(crate::metrics::LoginMethod::Mfa, &result);
    result
}

async fn second_step(
    state: &AppState,
    mfa_token: &str,
    factor: &SecondFactor,
    client: ClientInfo,
) -> Result<TokenPair> {
    // A passkey's answer that cannot be read costs no try.
    let assertion = match factor {
        SecondFactor::Passkey(_) if !state.config.passkeys.enabled => {
            return Err(Error::validation(
                "passkey",
                "passkeys are turned off here (PASSKEYS=false): send a code",
            ));
        }
        SecondFactor::Passkey(credential) => {
            Some(passkeys_service::parse_assertion("passkey", credential)?)
        }
        _ => None,
    };
    let token_hash = hash_token_id(mfa_token);
    let challenge = mfa::try_challenge(&state.db, &token_hash, state.clock.now_ms(), MAX_TRIES)
        .await?
        .ok_or(Error::InvalidMfaToken(INVALID_MFA_TOKEN))?;
    let user = users::find_by_id(&state.db, &challenge.user_id)
        .await?
        .filter(|u| u.security_stamp == challenge.user_stamp && u.is_active)
        .ok_or(Error::InvalidMfaToken(INVALID_MFA_TOKEN))?;
    if state.config.accounts.require_verified_email && !user.is_verified {
        return Err(Error::EmailNotVerified);
    }
    let passkey = assertion.as_ref().map(|assertion| PasskeyFactor {
        assertion,
        expect: passkeys_service::mfa_expect(&token_hash, &user.id, challenge.user_stamp),
    });
    let (amr, ()) = with_factor(
        state,
        &user.id,
        &user.email,
        factor,
        passkey,
        Error::InvalidMfaCode,
        async |tx, now| {
            Ok(mfa::spend_challenge(tx, &token_hash, now)
                .await?
                .then_some(()))
        },
    )
    .await?;
    let now = state.clock.now_ms();
    open_session(
        state,
        &user,
        ClientInfo {
            ip: client.ip.or(challenge.ip),
            user_agent: client.user_agent.or(challenge.user_agent),
        },
        Authentication {
            amr,
            auth_time: challenge.created_at,
            mfa_at: Some(now),
            passkey_at: None,
        },
    )
    .await
}

/// The shortest a passkey's proof lasts, whatever MFA_STEP_UP_SECONDS says: a passkey is proved
/// at a step-up route of its own and then stands for a while, so with a window of 0 it could
/// never be used (a code, sent in the body of the change itself, can).
pub(crate) const PASSKEY_PROOF_MIN_MS: i64 = 60_000;

/// Whether `at` lies within MFA_STEP_UP_SECONDS (at least [`PASSKEY_PROOF_MIN_MS`] when a
/// passkey may have made it).
pub(crate) fn within_step_up(state: &AppState, at: Option<i64>, passkey: bool) -> bool {
    let window = ms(state.config.mfa.step_up);
    let window = if passkey {
        window.max(PASSKEY_PROOF_MIN_MS)
    } else {
        window
    };
    at.is_some_and(|at| state.clock.now_ms() < at.saturating_add(window))
}

/// Whether the caller's session passed the second factor within MFA_STEP_UP_SECONDS; for an
/// account with a passkey, at least [`PASSKEY_PROOF_MIN_MS`].
pub(crate) fn recently_passed(state: &AppState, caller: &Caller, passkeys: bool) -> bool {
    within_step_up(state, caller.mfa_at, passkeys)
}

/// How a sensitive change is allowed for an account with a second factor.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StepUp {
    /// A code, or a session that passed the factor within MFA_STEP_UP_SECONDS.
    CodeOrRecentPass,
    /// A code, always (disabling the factor).
    Code,
}

/// Checks what a sensitive change needs: the password (when given), and, for an account with
/// a second factor, a code or a recent pass ([`StepUp`]). Without either the answer is 403
/// STEP_UP_REQUIRED before any hash is computed; the password is checked before the code, so a
/// wrong password spends no code. A code that passes renews the session's window.
pub async fn step_up(
    state: &AppState,
    caller: &Caller,
    password: Option<&Password>,
    factor: Option<&SecondFactor>,
    rule: StepUp,
) -> Result<()> {
    let id = &caller.account.id;
    let factors = Factors::of(state, id).await?;
    let has_factor = factors.any();
    if has_factor
        && factor.is_none()
        && (rule == StepUp::Code || !recently_passed(state, caller, factors.passkeys > 0))
    {
        return Err(Error::StepUpRequired {
            methods: factors.methods(),
        });
    }
    if let Some(password) = password {
        confirm_password(state, caller, password).await?;
    }
    let (true, Some(factor)) = (has_factor, factor) else {
        return Ok(());
    };
    let session = caller.session_id.clone();
    let amr = caller.amr.clone();
    with_factor(
        state,
        id,
        &caller.account.email,
        factor,
        None,
        Error::WrongMfaCode,
        async |tx, now| {
            sessions::passed_second_factor_in(tx, &session, &amr, now).await?;
            Ok(Some(()))
        },
    )
    .await?;
    tracing::info!(user_id = %id, "step-up passed");
    Ok(())
}

const LAST_FACTOR: Error = Error::Forbidden(
    "MFA_REQUIRED_FOR requires a second factor for this account: it cannot be removed",
);

/// Disables TOTP (and drops the recovery codes): needs the password and a code, always.
#[tracing::instrument(skip_all, fields(user_id = %caller.account.id))]
pub async fn disable(
    state: &AppState,
    caller: &Caller,
    password: &Password,
    factor: Option<&SecondFactor>,
) -> Result<()> {
    let id = &caller.account.id;
    if !mfa::has_totp(&state.db, id).await? {
        return Err(Error::MfaNotEnabled);
    }
    let policy = state
        .config
        .mfa
        .required_for
        .covers(caller.account.is_superuser);
    if policy && passkeys_service::count_as_factor(state, id).await? == 0 {
        return Err(LAST_FACTOR);
    }
    step_up(state, caller, Some(password), factor, StepUp::Code).await?;
    let now = state.clock.now_ms();
    let mut tx = state.db.begin().await?;
    // A concurrent removal of the last passkey waits here (or this waits for it), and the rule is
    // checked again on what it left.
    users::lock_in(&mut tx, id).await?;
    if !mfa::remove_all(&mut tx, id).await? {
        return Err(Error::MfaNotEnabled);
    }
    if policy && passkeys_service::count_as_factor_in(state, &mut tx, id).await? == 0 {
        return Err(LAST_FACTOR);
    }
    recovery::queue_notice(
        state,
        &mut tx,
        NOTICE_MFA_REMOVED,
        &caller.account.email,
        templates::mfa_removed(false),
        now,
    )
    .await?;
    tx.commit().await?;
    state.mail_wakeup.notify_one();
    tracing::info!("TOTP disabled by its user");
    Ok(())
}

/// A new set of recovery codes, voiding the old one: needs the password and step-up.
#[tracing::instrument(skip_all, fields(user_id = %caller.account.id))]
pub async fn regenerate_recovery_codes(
    state: &AppState,
    caller: &Caller,
    password: &Password,
    factor: Option<&SecondFactor>,
) -> Result<Vec<String>> {
    let id = &caller.account.id;
    if !mfa::has_totp(&state.db, id).await? {
        return Err(Error::MfaNotEnabled);
    }
    step_up(
        state,
        caller,
        Some(password),
        factor,
        StepUp::CodeOrRecentPass,
    )
    .await?;
    let (codes, hashes) = new_recovery_codes(state, id);
    let now = state.clock.now_ms();
    let mut tx = state.db.begin().await?;
    mfa::replace_recovery_codes(&mut tx, id, &hashes, now).await?;
    recovery::queue_notice(
        state,
        &mut tx,
        NOTICE_RECOVERY_CODES_NEW,
        &caller.account.email,
        templates::recovery_codes_replaced(),
        now,
    )
    .await?;
    tx.commit().await?;
    state.mail_wakeup.notify_one();
    tracing::info!("recovery codes replaced");
    Ok(codes)
}

/// A superuser removes a user's second factors: at once (204), or, with MFA_RESET_DELAY_HOURS,
/// when due (the time is returned), the user being told now and able to cancel.
///
/// A superuser with a second factor steps up for it (a code, or a recent pass): an access token
/// alone does not strip someone else's factor.
#[tracing::instrument(skip_all, fields(admin_id = %admin.account.id, user_id = %user_id))]
pub async fn admin_reset(
    state: &AppState,
    admin: &Caller,
    user_id: &str,
    factor: Option<&SecondFactor>,
) -> Result<Option<i64>> {
    if admin.account.id == user_id {
        return Err(Error::Forbidden(
            "a superuser removes their own second factor with DELETE /me/mfa/totp",
        ));
    }
    let user = users::find_by_id(&state.db, user_id)
        .await?
        .ok_or(Error::NotFound("there is no user with this id"))?;
    let passkeys = state.config.passkeys.enabled;
    if !mfa::has_second_factor(&state.db, user_id, passkeys).await? {
        return Err(Error::MfaNotEnabled);
    }
    step_up(state, admin, None, factor, StepUp::CodeOrRecentPass).await?;
    let now = state.clock.now_ms();
    let delay = ms(state.config.mfa.reset_delay);
    if delay == 0 {
        let mut tx = state.db.begin().await?;
        remove_for_reset(&mut tx, &user, &admin.account.id, now).await?;
        tx.commit().await?;
        state.mail_wakeup.notify_one();
        return Ok(None);
    }
    let mut tx = state.db.begin().await?;
    let due = mfa::schedule_reset(
        &mut tx,
        user_id,
        now.saturating_add(delay),
        &admin.account.id,
        now,
    )
    .await?;
    recovery::queue_security_notice(
        &mut tx,
        &user.email,
        templates::mfa_reset_requested(&crate::clock::rfc3339(due)),
        now,
    )
    .await?;
    tx.commit().await?;
    state.mail_wakeup.notify_one();
    tracing::warn!(
        due_at = due,
        "a superuser asked to remove a user's second factor"
    );
    Ok(Some(due))
}

/// Removes the user's factors (TOTP, recovery codes, passkeys), ends every session, and tells
/// the user, inside `tx`.
async fn remove_for_reset(tx: &mut Tx, user: &users::User, admin_id: &str, now: i64) -> Result<()> {
    mfa::remove_all(tx, &user.id).await?;
    let passkeys = passkeys_service::remove_all_in(tx, &user.id).await?;
    let ended = sessions::revoke_all_of_user_in(tx, &user.id, None, now).await?;
    recovery::queue_security_notice(tx, &user.email, templates::mfa_removed(true), now).await?;
    tracing::warn!(
        admin_id,
        user_id = %user.id,
        sessions_ended = ended,
        passkeys_removed = passkeys,
        "a superuser removed a user's second factors"
    );
    Ok(())
}

/// Applies the delayed resets that are due (the maintenance job calls this).
pub async fn apply_due_resets(state: &AppState) -> Result<u64> {
    let now = state.clock.now_ms();
    let mut applied = 0;
    for (user_id, admin_id) in mfa::due_resets(&state.db, now).await? {
        let Some(user) = users::find_by_id(&state.db, &user_id).await? else {
            continue;
        };
        let mut tx = state.db.begin().await?;
        if mfa::take_due_reset(&mut tx, &user_id, now).await? {
            remove_for_reset(&mut tx, &user, &admin_id, now).await?;
            tx.commit().await?;
            applied += 1;
        }
    }
    if applied > 0 {
        state.mail_wakeup.notify_one();
    }
    Ok(applied)
}

/// The user cancels a pending reset.
pub async fn cancel_reset(state: &AppState, caller: &Caller) -> Result<()> {
    if !mfa::cancel_reset(&state.db, &caller.account.id).await? {
        return Err(Error::NotFound(
            "no removal of your second factor is pending",
        ));
    }
    tracing::warn!(user_id = %caller.account.id, "a pending reset of the second factor was cancelled by its user");
    Ok(())
}
