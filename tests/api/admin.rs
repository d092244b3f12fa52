//! The /users endpoints: superusers only.

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::*;

impl TestApp {
    async fn admin_get(&self, token: &str, path: &str) -> reqwest::Response {
        self.client
            .get(self.url(path))
            .bearer_auth(token)
            .send()
            .await
            .unwrap()
    }

    async fn admin_patch(&self, token: &str, id: &str, body: &Value) -> reqwest::Response {
        self.client
            .patch(self.url(&format!("/users/{id}")))
            .bearer_auth(token)
            .json(body)
            .send()
            .await
            .unwrap()
    }

    async fn admin_delete(&self, token: &str, id: &str) -> reqwest::Response {
        self.client
            .delete(self.url(&format!("/users/{id}")))
            .bearer_auth(token)
            .send()
            .await
            .unwrap()
    }
}

#[tokio::test]
async fn normal_users_get_403_on_every_admin_endpoint() {
    let app = spawn_app().await;
    let (user, tokens) = app.signed_up(&unique_email()).await;
    let id = user["id"].as_str().unwrap();
    assert_problem(
        app.admin_get(&tokens.access, "/users").await,
        403,
        "FORBIDDEN",
    )
    .await;
    assert_problem(
        app.admin_get(&tokens.access, &format!("/users/{id}")).await,
        403,
        "FORBIDDEN",
    )
    .await;
    assert_problem(
        app.admin_patch(&tokens.access, id, &json!({"is_superuser": true}))
            .await,
        403,
        "FORBIDDEN",
    )
    .await;
    assert_problem(app.admin_delete(&tokens.access, id).await, 403, "FORBIDDEN").await;
    let me: Value = app.me(&tokens.access).await.json().await.unwrap();
    assert_eq!(me["is_superuser"], false);
    // Without a token: 401.
    let response = app.client.get(app.url("/users")).send().await.unwrap();
    assert_problem(response, 401, "UNAUTHORIZED").await;
}

#[tokio::test]
async fn listing_pages_and_searches() {
    let app = spawn_app().await;
    let (_, admin) = app.superuser().await;
    for i in 0..5 {
        app.register(
            &format!("zeta{i}-{}@example.com", uuid::Uuid::new_v4().simple()),
            PASSWORD,
            &format!("Zeta Person {i}"),
        )
        .await;
    }
    app.register(&unique_email(), PASSWORD, "Percent%Under_score")
        .await;

    let page: Value = app
        .admin_get(&admin.access, "/users?limit=2&offset=1")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(page["total"], 7);
    assert_eq!(page["limit"], 2);
    assert_eq!(page["offset"], 1);
    assert_eq!(page["items"].as_array().unwrap().len(), 2);
    let all: Value = app
        .admin_get(&admin.access, "/users")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(all["limit"], 50);
    let items = all["items"].as_array().unwrap();
    assert_eq!(items.len(), 7);
    // Newest first, and the page is a window on the same order.
    assert_eq!(page["items"][0]["id"], items[1]["id"]);
    assert_eq!(items[0]["name"], "Percent%Under_score");

    // Search over email and name, ignoring case; % and _ are literal.
    let found: Value = app
        .admin_get(&admin.access, "/users?q=ZETA%20person")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(found["total"], 5);
    let found: Value = app
        .admin_get(&admin.access, "/users?q=zeta3-")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(found["total"], 1);
    let found: Value = app
        .admin_get(&admin.access, "/users?q=%25")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(found["total"], 1);
    let found: Value = app
        .admin_get(&admin.access, "/users?q=_")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(found["total"], 1);
    let found: Value = app
        .admin_get(&admin.access, "/users?q=nobody-at-all")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(found["total"], 0);
    assert_eq!(found["items"], json!([]));

    for (query, field) in [
        ("limit=0", "limit"),
        ("limit=101", "limit"),
        ("limit=abc", "limit"),
        ("offset=-1", "offset"),
    ] {
        let body = assert_problem(
            app.admin_get(&admin.access, &format!("/users?{query}"))
                .await,
            422,
            "VALIDATION_FAILED",
        )
        .await;
        assert_eq!(error_fields(&body), [field], "{query}");
    }
}

/// `db::users::insert_many` (bulk loads: the benchmark, imports) writes every column, over more
/// than one statement: the accounts log in, and the search finds them by their folded name.
#[tokio::test]
async fn accounts_loaded_in_bulk_log_in_and_are_found() {
    use argon2::{Algorithm, Argon2, Params, PasswordHasher, Version};
    use auth_server::db::users::{self, User};

    let tag = uuid::Uuid::new_v4().simple().to_string();
    let prepared = tag.clone();
    let app = spawn_app().await;
    {
        let db = &app.state.db;
        let hash = Argon2::new(
            Algorithm::Argon2id,
            Version::V0x13,
            Params::new(256, 1, 1, None).unwrap(),
        )
        .hash_password(PASSWORD.as_bytes())
        .unwrap()
        .to_string();
        let bulk: Vec<User> = (0..2001)
            .map(|i| User {
                id: uuid::Uuid::new_v4().to_string(),
                email: format!("bulk{i}-{prepared}@example.com"),
                name: format!("Bulk Ünïcode {i}"),
                password_hash: hash.clone(),
                is_active: true,
                is_verified: true,
                is_superuser: false,
                created_at: i,
                updated_at: i,
                security_stamp: 0,
            })
            .collect();
        assert_eq!(users::insert_many(db, &bulk).await.unwrap(), 2001);
    }
    app.login_ok(&format!("bulk2000-{tag}@example.com")).await;
    let (_, admin) = app.superuser().await;
    let found: Value = app
        .admin_get(&admin.access, "/users?q=bulk%20%C3%9CN%C3%8FCODE%202000")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(found["total"], 1);
    assert_eq!(found["items"][0]["name"], "Bulk Ünïcode 2000");
}

#[tokio::test]
async fn get_patch_and_delete_a_user() {
    let app = spawn_app().await;
    let (_, admin) = app.superuser().await;
    let email = unique_email();
    let (user, victim) = app.signed_up(&email).await;
    let id = user["id"].as_str().unwrap();

    let got: Value = app
        .admin_get(&admin.access, &format!("/users/{id}"))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(got, user);
    assert_problem(
        app.admin_get(&admin.access, "/users/00000000-0000-0000-0000-000000000000")
            .await,
        404,
        "NOT_FOUND",
    )
    .await;

    let response = app
        .admin_patch(
            &admin.access,
            id,
            &json!({"name": "Renamed", "is_verified": true}),
        )
        .await;
    assert_eq!(response.status(), StatusCode::OK);
    let patched: Value = response.json().await.unwrap();
    assert_eq!(patched["name"], "Renamed");
    assert_eq!(patched["is_verified"], true);

    // Deactivation ends every session and refuses logins.
    let patched: Value = app
        .admin_patch(&admin.access, id, &json!({"is_active": false}))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(patched["is_active"], false);
    assert_problem(app.me(&victim.access).await, 401, "UNAUTHORIZED").await;
    assert_problem(app.refresh(&victim.refresh).await, 401, "INVALID_TOKEN").await;
    assert_problem(app.login(&email, PASSWORD).await, 403, "ACCOUNT_DISABLED").await;
    app.admin_patch(&admin.access, id, &json!({"is_active": true}))
        .await;
    assert_eq!(app.login(&email, PASSWORD).await.status(), StatusCode::OK);

    // Promotion works both ways for others.
    let promoted: Value = app
        .admin_patch(&admin.access, id, &json!({"is_superuser": true}))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(promoted["is_superuser"], true);
    let demoted: Value = app
        .admin_patch(&admin.access, id, &json!({"is_superuser": false}))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(demoted["is_superuser"], false);

    // A new email is unverified; a taken one conflicts; bad fields are named.
    let new_email = unique_email();
    let changed: Value = app
        .admin_patch(&admin.access, id, &json!({"email": new_email}))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(changed["email"], new_email);
    assert_eq!(changed["is_verified"], false);
    let taken = unique_email();
    app.register(&taken, PASSWORD, "Taken").await;
    assert_problem(
        app.admin_patch(&admin.access, id, &json!({"email": taken}))
            .await,
        409,
        "EMAIL_TAKEN",
    )
    .await;
    let body = assert_problem(
        app.admin_patch(&admin.access, id, &json!({"email": "bad", "name": ""}))
            .await,
        422,
        "VALIDATION_FAILED",
    )
    .await;
    let mut fields = error_fields(&body);
    fields.sort();
    assert_eq!(fields, ["email", "name"]);
    let body = assert_problem(
        app.admin_patch(&admin.access, id, &json!({"password_hash": "x"}))
            .await,
        422,
        "VALIDATION_FAILED",
    )
    .await;
    assert_eq!(error_fields(&body), ["password_hash"]);
    assert_problem(
        app.admin_patch(
            &admin.access,
            "00000000-0000-0000-0000-000000000000",
            &json!({"name": "x"}),
        )
        .await,
        404,
        "NOT_FOUND",
    )
    .await;

    assert_eq!(
        app.admin_delete(&admin.access, id).await.status(),
        StatusCode::NO_CONTENT
    );
    assert_eq!(
        app.count("SELECT COUNT(*) FROM sessions WHERE user_id = $1", id)
            .await,
        0
    );
    assert_problem(app.admin_delete(&admin.access, id).await, 404, "NOT_FOUND").await;
    assert_problem(
        app.admin_get(&admin.access, &format!("/users/{id}")).await,
        404,
        "NOT_FOUND",
    )
    .await;
}

#[tokio::test]
async fn a_superuser_cannot_lock_itself_out() {
    let app = spawn_app().await;
    let (admin_user, admin) = app.superuser().await;
    let id = admin_user["id"].as_str().unwrap();
    assert_problem(
        app.admin_patch(&admin.access, id, &json!({"is_superuser": false}))
            .await,
        403,
        "FORBIDDEN",
    )
    .await;
    assert_problem(
        app.admin_patch(&admin.access, id, &json!({"is_active": false}))
            .await,
        403,
        "FORBIDDEN",
    )
    .await;
    assert_problem(app.admin_delete(&admin.access, id).await, 403, "FORBIDDEN").await;
    let me: Value = app.me(&admin.access).await.json().await.unwrap();
    assert_eq!(me["is_superuser"], true);
    assert_eq!(me["is_active"], true);
    // Harmless changes to oneself are fine.
    let response = app
        .admin_patch(
            &admin.access,
            id,
            &json!({"name": "Chief", "is_superuser": true}),
        )
        .await;
    assert_eq!(response.status(), StatusCode::OK);
}
