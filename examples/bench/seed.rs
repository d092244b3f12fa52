//! Seeding: accounts written straight into the database through `db::users::insert_many`, live
//! sessions through `db::sessions::insert_many` (with access tokens minted for them by the
//! library's own token issuing, under the server's SECRET_KEY), and confirmed TOTP
//! authenticators through `db::mfa`, sealed as the server seals them.

use std::sync::Arc;

use auth_server::auth::seal::SealKey;
use auth_server::auth::tokens::{Authentication, TokenKeys, hash_token_id};
use auth_server::auth::totp;
use auth_server::db::Db;
use auth_server::db::mfa;
use auth_server::db::sessions::{self, Session};
use auth_server::db::users::{self, User};

use crate::SECRET;

/// Accounts (or sessions) built and written per call (one transaction each).
const CHUNK: usize = 10_000;

/// The kinds of seeded account, each with its own addresses and ids.
#[derive(Clone, Copy)]
pub enum Kind {
    /// The password scenarios' users.
    Plain,
    /// Accounts with a confirmed TOTP authenticator.
    Mfa,
    /// Accounts that register a passkey (one per worker).
    Passkey,
}

impl Kind {
    fn prefix(self) -> &'static str {
        match self {
            Kind::Plain => "user",
            Kind::Mfa => "mfa",
            Kind::Passkey => "passkey",
        }
    }
}

/// The address of seeded user `i`.
pub fn email(i: usize) -> String {
    email_of(Kind::Plain, i)
}

/// The address of seeded account `i` of `kind`.
pub fn email_of(kind: Kind, i: usize) -> String {
    format!("{}{i}@bench.example", kind.prefix())
}

/// The id of seeded account `i` of `kind`: a version 4 UUID made from the pair, so that
/// sessions and authenticators can be seeded for accounts without reading their ids back.
pub fn user_id(kind: Kind, i: usize) -> String {
    // splitmix64 of the pair, twice: well spread, as random ids would be.
    let mix = |mut z: u64| {
        z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    };
    let seed = ((kind as u64) << 56) ^ i as u64;
    let mut bytes = [0u8; 16];
    bytes[..8].copy_from_slice(&mix(seed).to_le_bytes());
    bytes[8..].copy_from_slice(&mix(!seed).to_le_bytes());
    uuid::Builder::from_random_bytes(bytes)
        .into_uuid()
        .to_string()
}

/// Writes users `from..to` straight into the database, all with one argon2id hash.
pub async fn seed(db: &Db, hash: &str, from: usize, to: usize) {
    seed_accounts(db, Kind::Plain, hash, from, to).await;
}

/// Writes accounts `from..to` of `kind` straight into the database, all with one argon2id hash.
pub async fn seed_accounts(db: &Db, kind: Kind, hash: &str, from: usize, to: usize) {
    let now = chrono::Utc::now().timestamp_millis();
    let mut i = from;
    while i < to {
        let end = (i + CHUNK).min(to);
        let batch: Vec<User> = (i..end)
            .map(|n| User {
                id: user_id(kind, n),
                email: email_of(kind, n),
                name: format!("Bench User {n}"),
                password_hash: hash.to_string(),
                is_active: true,
                is_verified: true,
                is_superuser: false,
                created_at: now - n as i64,
                updated_at: now - n as i64,
                security_stamp: 0,
            })
            .collect();
        users::insert_many(db, &batch).await.expect("seed users");
        i = end;
    }
}

/// The server's configuration, as far as the seeding needs it (the same SECRET_KEY).
fn config() -> auth_server::Config {
    auth_server::Config::from_vars([("SECRET_KEY", SECRET)]).unwrap()
}

/// Writes `count` live sessions of users `0..users` (password logins of a moment ago, spread
/// over the accounts) straight into the database, and returns access tokens for the first
/// `tokens` of them, signed as the server signs them.
pub async fn live_sessions(db: &Db, users: usize, count: usize, tokens: usize) -> Arc<Vec<String>> {
    let config = config();
    let keys = TokenKeys::new(&config.tokens).unwrap();
    let now = chrono::Utc::now().timestamp_millis();
    let ms = |d: std::time::Duration| d.as_millis() as i64;
    let expires_at = now + ms(config.tokens.session_max_age);
    let refresh_expires_at = (now + ms(config.tokens.refresh_token_ttl)).min(expires_at);
    let access_exp = (now + ms(config.tokens.access_token_ttl)).min(refresh_expires_at) / 1000;
    let mut minted = Vec::with_capacity(tokens.min(count));
    let mut k = 0;
    while k < count {
        let end = (k + CHUNK).min(count);
        let batch: Vec<Session> = (k..end)
            .map(|n| {
                let id = uuid::Uuid::new_v4().to_string();
                Session {
                    refresh_generation: 0,
                    refresh_jti_hash: hash_token_id(&keys.refresh_jti(&id, 0)),
                    previous_jti_hash: None,
                    refreshed_at: now,
                    refresh_expires_at,
                    created_at: now,
                    last_used_at: now,
                    expires_at,
                    revoked_at: None,
                    user_id: user_id(Kind::Plain, (n * 7919 + 13) % users),
                    user_agent: Some("bench".into()),
                    ip: Some("127.0.0.1".into()),
                    user_stamp: 0,
                    amr: "pwd".into(),
                    auth_time: Some(now),
                    mfa_at: None,
                    passkey_at: None,
                    id,
                }
            })
            .collect();
        for s in batch.iter().take(tokens.saturating_sub(minted.len())) {
            let authentication = Authentication {
                amr: &s.amr,
                auth_time: now / 1000,
            };
            minted.push(keys.issue_access(
                &s.user_id,
                &s.id,
                now / 1000,
                access_exp,
                authentication,
            ));
        }
        sessions::insert_many(db, &batch)
            .await
            .expect("seed sessions");
        k = end;
    }
    Arc::new(minted)
}

/// Gives accounts `0..count` of [`Kind::Mfa`] a confirmed TOTP authenticator (sealed with the
/// key the server derives from SECRET_KEY, the account id as associated data, as enrolment
/// does), last used long ago; returns their secrets.
pub async fn totp_secrets(db: &Db, count: usize) -> Vec<Vec<u8>> {
    let seal = SealKey::derive(config().tokens.secret_key());
    let now = chrono::Utc::now().timestamp_millis();
    let (mut secrets, mut sealed) = (Vec::with_capacity(count), Vec::with_capacity(count));
    for i in 0..count {
        let id = user_id(Kind::Mfa, i);
        let secret = totp::new_secret();
        let s = seal.seal(&secret, id.as_bytes());
        assert!(mfa::begin_enrolment(db, &id, &s, now).await.unwrap());
        secrets.push(secret);
        sealed.push(s);
    }
    let mut tx = db.begin().await.unwrap();
    for (i, s) in sealed.iter().enumerate() {
        assert!(
            mfa::confirm(&mut tx, &user_id(Kind::Mfa, i), s, 0, now)
                .await
                .unwrap()
        );
    }
    tx.commit().await.unwrap();
    secrets
}

/// A bulk load leaves the rows in SQLite's write-ahead log, where every read has to look for
/// them; a live database is checkpointed as it goes. Checkpoint, as it would be.
pub async fn checkpoint(db: &Db) {
    db.checkpoint().await.expect("checkpoint");
}
