//! The security audit trail: each event written by the action that causes it, in its
//! transaction, with the request's origin.

use crate::helpers::{spawn_app, unique_email};

#[tokio::test]
async fn registration_records_user_created_with_the_clients_address() {
    let app = spawn_app().await;
    let email = unique_email();
    let response = app.register(&email, "correct horse battery", "Ada").await;
    assert_eq!(response.status(), 201);
    let user_id = app
        .sql
        .text("SELECT id FROM users WHERE email = $1", &email)
        .await;
    let created = app
        .sql
        .count(
            "SELECT COUNT(*) FROM security_events WHERE type = 'user.created' \
             AND user_id = $1 AND ip = '127.0.0.1' AND detail LIKE '%registration%'",
            &user_id,
        )
        .await;
    assert_eq!(created, 1);
}
