//! Ended sessions, spent tokens and old mail are purged on a schedule.

use std::time::Duration;

use serde_json::json;

use crate::helpers::*;

#[tokio::test]
async fn old_rows_are_purged_and_live_ones_kept() {
    let app = spawn_app_with(&[("PURGE_INTERVAL_SECONDS", "1")]).await;
    let email = unique_email();
    let (user, live) = app.signed_up(&email).await;
    let id = user["id"].as_str().unwrap().to_string();
    let revoked = app.login_ok(&email).await;
    let expired = app.login_ok(&email).await;
    app.logout(&revoked.access, None).await;
    app.post_json("/password-reset/request", &json!({"email": email}))
        .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        app.count("SELECT COUNT(*) FROM sessions WHERE user_id = $1", &id)
            .await,
        3
    );
    assert_eq!(
        app.count(
            "SELECT COUNT(*) FROM one_time_tokens WHERE user_id = $1",
            &id
        )
        .await,
        2
    );

    // Age the ended rows by a year (timestamps are milliseconds since the epoch).
    let year_ago = (chrono::Utc::now().timestamp_millis() - 365 * 86_400_000).to_string();
    let sid = |t: &Tokens| {
        use base64::Engine as _;
        let payload = t.access.split('.').nth(1).unwrap();
        let claims: serde_json::Value = serde_json::from_slice(
            &base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(payload)
                .unwrap(),
        )
        .unwrap();
        claims["sid"].as_str().unwrap().to_string()
    };
    app.execute2(
        "UPDATE sessions SET revoked_at = CAST($1 AS BIGINT) WHERE id = $2",
        &year_ago,
        &sid(&revoked),
    )
    .await;
    app.execute2("UPDATE sessions SET refresh_expires_at = CAST($1 AS BIGINT), expires_at = CAST($1 AS BIGINT) WHERE id = $2", &year_ago, &sid(&expired)).await;
    app.execute2("UPDATE one_time_tokens SET used_at = CAST($1 AS BIGINT), expires_at = CAST($1 AS BIGINT) WHERE user_id = $2", &year_ago, &id).await;
    app.execute2(
        "UPDATE mail_outbox SET sent_at = CAST($1 AS BIGINT) WHERE recipient = $2",
        &year_ago,
        &email,
    )
    .await;

    let mut purged = false;
    for _ in 0..50 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        if app
            .count("SELECT COUNT(*) FROM sessions WHERE user_id = $1", &id)
            .await
            == 1
            && app
                .count(
                    "SELECT COUNT(*) FROM one_time_tokens WHERE user_id = $1",
                    &id,
                )
                .await
                == 0
            && app
                .count(
                    "SELECT COUNT(*) FROM mail_outbox WHERE recipient = $1",
                    &email,
                )
                .await
                == 0
        {
            purged = true;
            break;
        }
    }
    assert!(purged, "the ended rows were not purged");
    // The live session is untouched and works.
    assert_eq!(
        app.count("SELECT COUNT(*) FROM sessions WHERE id = $1", &sid(&live))
            .await,
        1
    );
    assert_eq!(app.me(&live.access).await.status(), reqwest::StatusCode::OK);
    assert_eq!(
        app.refresh(&live.refresh).await.status(),
        reqwest::StatusCode::OK
    );
}
