//! A database made by an older version is migrated forward at start, its data intact.

use argon2::{Algorithm, Argon2, Params, PasswordHasher, Version};
use reqwest::StatusCode;
use serde_json::json;

use crate::helpers::*;

/// Applies only the first migration, as the first release did, and writes a user the way it did.
async fn first_release(db: &TestPool, email: &str) {
    let backend = db.backend();
    let dir = std::env::temp_dir().join(format!(
        "auth-server-migrations-{}",
        uuid::Uuid::new_v4().simple()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    let first = std::fs::read_dir(format!(
        "{}/migrations/{backend}",
        env!("CARGO_MANIFEST_DIR")
    ))
    .unwrap()
    .map(|e| e.unwrap().path())
    .min()
    .unwrap();
    std::fs::copy(&first, dir.join(first.file_name().unwrap())).unwrap();
    let migrator = sqlx::migrate::Migrator::new(dir.as_path()).await.unwrap();
    let hash = Argon2::new(
        Algorithm::Argon2id,
        Version::V0x13,
        Params::new(256, 1, 1, None).unwrap(),
    )
    .hash_password(PASSWORD.as_bytes())
    .unwrap()
    .to_string();
    let insert = "INSERT INTO users (id, email, name, password_hash, is_active, is_verified, is_superuser, created_at, updated_at) \
                  VALUES ($1, $2, 'Old Timer', $3, TRUE, TRUE, FALSE, 0, 0)";
    db.migrate(&migrator).await;
    db.execute3(insert, &uuid::Uuid::new_v4().to_string(), email, &hash)
        .await;
    std::fs::remove_dir_all(&dir).unwrap();
}

#[tokio::test]
async fn a_database_of_the_first_release_is_migrated_forward() {
    let email = unique_email();
    let prepared = email.clone();
    let app = spawn_app_after(async move |db: &TestPool| first_release(db, &prepared).await).await;
    // The old account logs in, and what later migrations added works.
    let tokens = app.login_ok(&email).await;
    assert_eq!(app.me(&tokens.access).await.status(), StatusCode::OK);
    let response = app
        .post_json("/password-reset/request", &json!({"email": email}))
        .await;
    assert_eq!(response.status(), StatusCode::ACCEPTED);
    assert_eq!(
        app.register(&unique_email(), PASSWORD, "New")
            .await
            .status(),
        StatusCode::CREATED
    );
    assert_eq!(
        app.count(
            "SELECT COUNT(*) FROM one_time_tokens WHERE purpose = $1",
            "verify_email"
        )
        .await,
        1
    );
}

/// Older versions stored an internationalised address as typed; the upgrade brings it to the
/// normalised form, so its owner is found by what they type, in any form, and the address
/// cannot be registered a second time.
#[tokio::test]
async fn older_unicode_addresses_are_normalised_at_the_upgrade() {
    let local = format!("old{}", uuid::Uuid::new_v4().simple());
    let decomposed = format!("{local}@BU\u{308}CHER.example");
    let stored = decomposed.to_lowercase();
    let app = spawn_app_after(async move |db: &TestPool| first_release(db, &stored).await).await;
    let composed = format!("{local}@b\u{fc}cher.example");
    let tokens = app.login_ok(&composed).await;
    let me: serde_json::Value = app.me(&tokens.access).await.json().await.unwrap();
    assert_eq!(me["email"], format!("{local}@xn--bcher-kva.example"));
    assert_eq!(
        app.register(&composed, PASSWORD, "Twin").await.status(),
        StatusCode::CONFLICT
    );
}
