//! The session check's cache (SESSION_CACHE_MS): a revocation is seen at once by the instance
//! that made it, by other instances within the stated bound (PostgreSQL's notification; the
//! TTL on SQLite), through an interrupted channel, and by every request with the bound at 0.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::json;

use crate::helpers::*;

/// Checks answered from `app`'s cache so far.
pub(crate) fn hits(app: &TestApp) -> u64 {
    app.state.db.session_cache_stats().0
}

/// Waits until `app` answers checks from its cache (on PostgreSQL, once it listens).
pub(crate) async fn cache_in_use(app: &TestApp) {
    eventually(
        "the session cache in use",
        Duration::from_secs(10),
        || async { app.state.db.session_cache_stats().2 },
        |in_use| *in_use,
    )
    .await;
}

/// GET /me until it answers 401; returns how long that took.
async fn until_refused(app: &TestApp, access: &str, within: Duration) -> Duration {
    let started = Instant::now();
    eventually(
        "the revoked session refused",
        within,
        || async { app.me(access).await.status() },
        |status| *status == StatusCode::UNAUTHORIZED,
    )
    .await;
    started.elapsed()
}

#[tokio::test]
async fn checks_are_cached_and_every_change_is_seen_at_once_by_this_instance() {
    let app = spawn_app_with(&[("SESSION_CACHE_MS", "60000")]).await;
    cache_in_use(&app).await;
    let (_, first) = app.signed_up(&unique_email()).await;
    let email = unique_email();
    let (user, tokens) = app.signed_up(&email).await;
    let before = hits(&app);
    for _ in 0..3 {
        assert_eq!(app.me(&tokens.access).await.status(), StatusCode::OK);
    }
    assert!(hits(&app) >= before + 2, "the checks were cached");

    // A profile change shows in the next answer.
    let renamed = app
        .client
        .patch(app.url("/me"))
        .bearer_auth(&tokens.access)
        .json(&json!({"name": "Renamed Now"}))
        .send()
        .await
        .unwrap();
    assert_eq!(renamed.status(), StatusCode::OK);
    let me: serde_json::Value = app.me(&tokens.access).await.json().await.unwrap();
    assert_eq!(me["name"], "Renamed Now");

    // A superuser's changes: promotion shows, deactivation ends the session at once.
    let (_, admin) = app.superuser().await;
    let id = user["id"].as_str().unwrap();
    let patch = |body: serde_json::Value| {
        app.client
            .patch(app.url(&format!("/users/{id}")))
            .bearer_auth(&admin.access)
            .json(&body)
            .send()
    };
    assert_eq!(
        patch(json!({"is_verified": false})).await.unwrap().status(),
        StatusCode::OK
    );
    let me: serde_json::Value = app.me(&tokens.access).await.json().await.unwrap();
    assert_eq!(me["is_verified"], false);
    assert_eq!(
        patch(json!({"is_active": false})).await.unwrap().status(),
        StatusCode::OK
    );
    assert_problem(app.me(&tokens.access).await, 401, "UNAUTHORIZED").await;

    // Logout, and a password change's end of the other sessions.
    assert_eq!(app.me(&first.access).await.status(), StatusCode::OK);
    let second = app.login_ok(&app_email(&app, &first).await).await;
    assert_eq!(app.me(&second.access).await.status(), StatusCode::OK);
    assert_eq!(
        app.change_password(&second.access, PASSWORD, "another long passphrase 42")
            .await
            .status(),
        StatusCode::NO_CONTENT
    );
    assert_problem(app.me(&first.access).await, 401, "UNAUTHORIZED").await;
    assert_eq!(app.me(&second.access).await.status(), StatusCode::OK);
    assert_eq!(
        app.logout(&second.access, None).await.status(),
        StatusCode::NO_CONTENT
    );
    assert_problem(app.me(&second.access).await, 401, "UNAUTHORIZED").await;
}

/// The address of the account `tokens` belong to.
async fn app_email(app: &TestApp, tokens: &Tokens) -> String {
    let me: serde_json::Value = app.me(&tokens.access).await.json().await.unwrap();
    me["email"].as_str().unwrap().to_string()
}

/// Six workers send GET /me with `access` in a loop while `change` runs; each sends one more
/// once `change` has been answered. Returns (checks sent, checks sent after the change that
/// were still served).
pub(crate) async fn race_checks_with(
    app: &Arc<TestApp>,
    access: &str,
    change: impl std::future::Future<Output = ()>,
) -> (usize, usize) {
    let changed = Arc::new(AtomicBool::new(false));
    let late = Arc::new(AtomicUsize::new(0));
    let checks = Arc::new(AtomicUsize::new(0));
    let workers: Vec<_> = (0..6)
        .map(|_| {
            let (app, access) = (app.clone(), access.to_string());
            let (changed, late, checks) = (changed.clone(), late.clone(), checks.clone());
            tokio::spawn(async move {
                loop {
                    let after = changed.load(Ordering::SeqCst);
                    let status = app.me(&access).await.status();
                    checks.fetch_add(1, Ordering::Relaxed);
                    if after {
                        if status == StatusCode::OK {
                            late.fetch_add(1, Ordering::SeqCst);
                        }
                        return;
                    }
                }
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(30)).await;
    change.await;
    changed.store(true, Ordering::SeqCst);
    for w in workers {
        w.await.unwrap();
    }
    (checks.load(Ordering::Relaxed), late.load(Ordering::SeqCst))
}

/// Requests racing a logout on one instance: none sent after the logout's answer is served.
#[tokio::test]
async fn no_request_after_a_logout_is_served_from_a_check_made_before_it() {
    let app = Arc::new(spawn_app_with(&[("SESSION_CACHE_MS", "60000")]).await);
    cache_in_use(&app).await;
    for round in 0..5 {
        let (_, tokens) = app.signed_up(&unique_email()).await;
        let (checks, late) = race_checks_with(&app, &tokens.access, async {
            assert_eq!(
                app.logout(&tokens.access, None).await.status(),
                StatusCode::NO_CONTENT
            );
        })
        .await;
        assert!(checks > 6, "round {round}: the race ran");
        assert_eq!(
            late, 0,
            "round {round}: a request sent after the logout was served"
        );
    }
}

/// The stated bound: another instance stops serving a revoked session when PostgreSQL's
/// notification reaches it (the entries are kept a minute here, so only the notification can
/// explain a quick refusal; allowed: 2 s on a loaded machine), and on SQLite within
/// SESSION_CACHE_MS of its last check.
#[tokio::test]
async fn another_instance_sees_a_revocation_within_the_bound() {
    let ttl = if on_postgres() { "60000" } else { "500" };
    let a = spawn_app_with(&[("SESSION_CACHE_MS", ttl)]).await;
    let b = a.another_instance().await;
    cache_in_use(&a).await;
    cache_in_use(&b).await;
    for scope in [None, Some("global")] {
        let (_, tokens) = a.signed_up(&unique_email()).await;
        let before = hits(&b);
        for _ in 0..3 {
            assert_eq!(b.me(&tokens.access).await.status(), StatusCode::OK);
        }
        assert!(hits(&b) >= before + 2, "b answers from its cache");
        assert_eq!(
            a.logout(&tokens.access, scope).await.status(),
            StatusCode::NO_CONTENT
        );
        let bound = if on_postgres() {
            Duration::from_secs(2)
        } else {
            Duration::from_millis(500 + 1000)
        };
        let took = until_refused(&b, &tokens.access, bound).await;
        println!("another instance refused the revoked session after {took:?} ({scope:?})");
    }
    // A superuser's deactivation through one instance, and a change made by SQL outside any
    // instance (PostgreSQL's trigger notifies it too).
    let (user, tokens) = a.signed_up(&unique_email()).await;
    assert_eq!(b.me(&tokens.access).await.status(), StatusCode::OK);
    let (_, admin) = a.superuser().await;
    let id = user["id"].as_str().unwrap();
    let response = a
        .client
        .patch(a.url(&format!("/users/{id}")))
        .bearer_auth(&admin.access)
        .json(&json!({"is_active": false}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    until_refused(&b, &tokens.access, Duration::from_secs(2)).await;
    if on_postgres() {
        let email = unique_email();
        let (_, tokens) = a.signed_up(&email).await;
        assert_eq!(b.me(&tokens.access).await.status(), StatusCode::OK);
        assert_eq!(a.me(&tokens.access).await.status(), StatusCode::OK);
        a.execute(
            "UPDATE sessions SET revoked_at = 1 \
             WHERE user_id = (SELECT id FROM users WHERE email = $1)",
            &email,
        )
        .await;
        until_refused(&a, &tokens.access, Duration::from_secs(2)).await;
        until_refused(&b, &tokens.access, Duration::from_secs(2)).await;
    }
}

/// With SESSION_CACHE_MS=0 nothing is kept: the other instance's very next request is refused.
#[tokio::test]
async fn with_the_bound_at_zero_every_request_checks_the_database() {
    let a = spawn_app_with(&[("SESSION_CACHE_MS", "0")]).await;
    let b = a.another_instance().await;
    let (_, tokens) = a.signed_up(&unique_email()).await;
    for _ in 0..3 {
        assert_eq!(b.me(&tokens.access).await.status(), StatusCode::OK);
    }
    assert_eq!(
        a.logout(&tokens.access, None).await.status(),
        StatusCode::NO_CONTENT
    );
    assert_problem(b.me(&tokens.access).await, 401, "UNAUTHORIZED").await;
    assert_eq!(hits(&b), 0, "nothing was answered from memory");
    assert!(!b.state.db.session_cache_stats().2);
}

/// PostgreSQL: while the listening connection is down, nothing is served from the cache, so a
/// revocation whose notification was lost with it is still seen; listening again, the cache is
/// used again.
#[tokio::test]
async fn an_interrupted_channel_drops_the_cache() {
    if !on_postgres() {
        println!("PostgreSQL only (LISTEN/NOTIFY); on SQLite there is no channel to interrupt");
        return;
    }
    let a = spawn_app_with(&[("SESSION_CACHE_MS", "60000")]).await;
    let b = a.another_instance().await;
    cache_in_use(&b).await;
    let (_, tokens) = a.signed_up(&unique_email()).await;
    for _ in 0..3 {
        assert_eq!(b.me(&tokens.access).await.status(), StatusCode::OK);
    }
    // Every instance's listening connection is cut, then the session is revoked at once: its
    // notification goes nowhere.
    let cut = a
        .count(
            "SELECT COUNT(pg_terminate_backend(pid)) FROM pg_stat_activity \
             WHERE datname = current_database() AND query LIKE $1",
            "LISTEN%",
        )
        .await;
    assert!(cut >= 2, "both instances listened ({cut})");
    assert_eq!(
        a.logout(&tokens.access, None).await.status(),
        StatusCode::NO_CONTENT
    );
    let took = until_refused(&b, &tokens.access, Duration::from_secs(3)).await;
    println!("refused {took:?} after the channel was cut");
    // It listens again, and answers from its cache again.
    cache_in_use(&b).await;
    let (_, tokens) = a.signed_up(&unique_email()).await;
    let before = hits(&b);
    for _ in 0..3 {
        assert_eq!(b.me(&tokens.access).await.status(), StatusCode::OK);
    }
    assert!(hits(&b) >= before + 2);
}
