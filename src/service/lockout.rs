//! The lockout: every password check (login, and the current password that PUT /me,
//! PUT /me/password and DELETE /me ask for) is an attempt against its address, counted in the
//! database *before* the password is checked, so that no number of concurrent requests on any
//! number of instances checks more passwords than allowed.
//!
//! The first LOGIN_FREE_ATTEMPTS consecutive attempts are free; the one that reaches the limit
//! locks the address for LOGIN_LOCKOUT_FIRST_SECONDS (1) as it is counted (so attempts racing it find the address locked),
//! and each further one, once the lock has passed, for twice as long, up to
//! LOGIN_LOCKOUT_MAX_SECONDS. A successful check forgets them all and lifts the lock. While an
//! address is locked no password is checked, the right one included: the answer is 429 with
//! Retry-After. Addresses with no account lock the same way, so a lock tells nothing.

use std::time::Duration;

use crate::db::login_attempts::{self, Attempts};
use crate::db::users;
use crate::error::{Error, Result};
use crate::service::audit::{self, EventType};
use crate::service::ms;
use crate::service::sessions::Caller;
use crate::state::AppState;

/// How often a count lost to a concurrent one is tried again before the request gives up (429).
const MAX_RACES: usize = 32;

/// An attempt counted against an address, waiting for its password check.
#[must_use = "say how the password check ended"]
#[derive(Debug)]
pub struct Attempt {
    key: String,
    /// The record as this attempt left it, and as it was before.
    counted: i64,
    before: Option<Attempts>,
}

/// How long the `failures`th consecutive failed attempt locks the address, if it does.
fn lock_after(state: &AppState, failures: i64) -> Option<i64> {
    let free = i64::from(state.config.lockout.free_attempts);
    if failures < free {
        return None;
    }
    let doublings = u32::try_from((failures - free).min(40)).unwrap_or(40);
    Some(
        ms(state.config.lockout.first)
            .saturating_mul(1i64 << doublings)
            .min(ms(state.config.lockout.max)),
    )
}

fn locked(until: i64, now: i64) -> Error {
    Error::TooManyRequests {
        retry_after: Duration::from_millis(u64::try_from(until - now).unwrap_or(0)),
    }
}

/// Counts an attempt at `key` (a normalised address), or answers 429 while it is locked.
pub async fn begin(state: &AppState, key: &str) -> Result<Attempt> {
    for _ in 0..MAX_RACES {
        let seen = login_attempts::lookup(&state.db, key).await?;
        // After the look: a lock set while this request waited for a connection is seen with
        // its true remaining time.
        let now = state.clock.now_ms();
        if let Some(Attempts {
            locked_until: Some(until),
            ..
        }) = seen
            && until > now
        {
            return Err(locked(until, now));
        }
        let counted = seen.map_or(0, |s| s.failures) + 1;
        let lock = lock_after(state, counted).map(|d| now.saturating_add(d));
        if login_attempts::reserve(&state.db, key, seen, lock, now).await? {
            if let Some(until) = lock {
                tracing::warn!(
                    failures = counted,
                    lock_ms = until - now,
                    "repeated password attempts at one address; it is locked for a while"
                );
            }
            return Ok(Attempt {
                key: key.to_string(),
                counted,
                before: seen,
            });
        }
    }
    // Many attempts at once at one address: someone else's turn.
    Err(Error::TooManyRequests {
        retry_after: Duration::from_secs(1),
    })
}

impl Attempt {
    /// The password was right: the address starts afresh.
    pub async fn succeeded(self, state: &AppState) -> Result<()> {
        login_attempts::clear(&state.db, &self.key).await?;
        Ok(())
    }

    /// The password was wrong: the attempt stays counted (and its lock, if it brought one).
    pub fn failed(self) {
        tracing::info!(failures = self.counted, "wrong password");
    }

    /// No password was checked (the hashing pool turned the request away): the attempt is
    /// taken back, unless others have been counted since, in which case it stays counted.
    pub async fn abandoned(self, state: &AppState) -> Result<()> {
        login_attempts::take_back(&state.db, &self.key, self.counted, self.before).await?;
        Ok(())
    }
}

/// A superuser clears the lockouts of the account `user_id`: its address's (the password's)
/// and its second factor's (`mfa::lockout_key`), as a right password and a right code would.
/// Recorded as `lockout.cleared`, the superuser as actor, with whether each had attempts on
/// record.
#[tracing::instrument(skip_all, fields(admin_id = %admin.account.id, user_id = %user_id))]
pub async fn clear_for_account(state: &AppState, admin: &Caller, user_id: &str) -> Result<()> {
    let mut tx = state.db.begin().await?;
    let email = users::email_in(&mut tx, user_id)
        .await?
        .ok_or(Error::NotFound("there is no user with this id"))?;
    let address = login_attempts::clear_in(&mut tx, &email).await?;
    let second_factor =
        login_attempts::clear_in(&mut tx, &crate::service::mfa::lockout_key(user_id)).await?;
    let cleared = audit::Event::new(EventType::LockoutCleared)
        .by_admin(admin, user_id)
        .detail(serde_json::json!({
            "address": email,
            "address_was_counted": address,
            "second_factor_was_counted": second_factor,
        }));
    audit::record_in(state, &mut tx, cleared).await?;
    tx.commit().await?;
    tracing::info!(address, second_factor, "lockouts cleared by a superuser");
    Ok(())
}
