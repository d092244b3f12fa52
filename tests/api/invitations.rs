//! Registration modes (REGISTRATION = open | invite | closed) and invitations: each mode on the
//! API and on the registration page, the invitation's mail and its link, and the attacks (a
//! token used twice or by concurrent registrations, for another address, expired, revoked,
//! forged; a non-superuser managing invitations; telling accounts apart).

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::*;
use crate::pages::Browser;
use crate::smtp::{PUBLIC_URL, Received, SmtpSink, VERIFY, WAIT, app_with_mail};

/// The invitation mail's subject.
const INVITED: &str = "You are invited to create an account";
const HOUR: i64 = 3_600_000;

/// A superuser made as an operator makes one (`create-superuser`: no registration, whatever
/// REGISTRATION says), logged in.
async fn superuser(app: &TestApp) -> Tokens {
    let email = unique_email();
    auth_server::service::admin::create_superuser(
        &app.state,
        &auth_server::domain::Email::parse("email", &email).unwrap(),
        &auth_server::domain::Name::parse("name", "Admin").unwrap(),
        false,
        || Ok(PASSWORD.to_string()),
    )
    .await
    .expect("create-superuser works in every mode");
    app.login_ok(&email).await
}

async fn invite(app: &TestApp, admin: &Tokens, body: &Value) -> reqwest::Response {
    app.client
        .post(app.url("/invitations"))
        .bearer_auth(&admin.access)
        .json(body)
        .send()
        .await
        .unwrap()
}

/// Invites `email`, asserting 201: the invitation.
async fn invited(app: &TestApp, admin: &Tokens, email: &str) -> Value {
    let response = invite(app, admin, &json!({ "email": email })).await;
    assert_eq!(response.status(), StatusCode::CREATED);
    response.json().await.unwrap()
}

async fn pending(app: &TestApp, admin: &Tokens) -> Value {
    let response = app
        .client
        .get(app.url("/invitations"))
        .bearer_auth(&admin.access)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    response.json().await.unwrap()
}

async fn revoke(app: &TestApp, admin: &Tokens, id: &str) -> reqwest::Response {
    app.client
        .delete(app.url(&format!("/invitations/{id}")))
        .bearer_auth(&admin.access)
        .send()
        .await
        .unwrap()
}

async fn register_invited(app: &TestApp, email: &str, invitation: &str) -> reqwest::Response {
    app.post_json(
        "/register",
        &json!({"email": email, "password": PASSWORD, "name": "Invitee", "invitation": invitation}),
    )
    .await
}

/// The token of the invitation link in `mail`.
fn link_token(mail: &Received) -> String {
    let body = mail.body();
    let marker = format!("{PUBLIC_URL}/register?invitation=");
    let start = body.find(&marker).expect("the invitation link") + marker.len();
    body[start..]
        .chars()
        .take_while(|c| c.is_ascii_alphanumeric() || *c == '-' || *c == '_')
        .collect()
}

/// Waits for the `n`th invitation mail to `email`: its token.
async fn mailed_token(sink: &SmtpSink, email: &str, n: usize) -> String {
    let mails = sink.wait_for(email, INVITED, n, WAIT).await;
    link_token(&mails[n - 1])
}

/// The account of `email`, as it signs in.
async fn me(app: &TestApp, email: &str) -> Value {
    let tokens = app.login_ok(email).await;
    app.me(&tokens.access).await.json().await.unwrap()
}

async fn accounts_of(app: &TestApp, email: &str) -> i64 {
    app.count("SELECT COUNT(*) FROM users WHERE email = $1", email)
        .await
}

/// How many security events of `kind` have `column` = `value` (the audit trail).
async fn events(app: &TestApp, kind: &str, column: &str, value: &str) -> i64 {
    let sql = match column {
        "actor_id" => "SELECT COUNT(*) FROM security_events WHERE type || ' ' || actor_id = $1",
        "user_id" => "SELECT COUNT(*) FROM security_events WHERE type || ' ' || user_id = $1",
        _ => "SELECT COUNT(*) FROM security_events WHERE type || ' ' || detail LIKE $1",
    };
    let bind = if column == "detail" {
        format!("{kind} %{value}%")
    } else {
        format!("{kind} {value}")
    };
    app.count(sql, &bind).await
}

/// No event anywhere holds `secret`.
async fn no_event_holds(app: &TestApp, secret: &str) {
    let n = app
        .count(
            "SELECT COUNT(*) FROM security_events WHERE detail LIKE '%' || $1 || '%'",
            secret,
        )
        .await;
    assert_eq!(n, 0, "an event holds a secret");
}

/// A forged token: the shape of a real one, no invitation's.
const FORGED: &str = "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA";

#[tokio::test]
async fn open_registration_is_unchanged_and_an_invitation_makes_the_account_verified() {
    let sink = SmtpSink::start().await;
    let app = app_with_mail(&sink, &[]).await;
    // Today's registration: anyone, unverified, a verification mail.
    let stranger = unique_email();
    let response = app.register(&stranger, PASSWORD, "Stranger").await;
    assert_eq!(response.status(), StatusCode::CREATED);
    assert_eq!(me(&app, &stranger).await["is_verified"], false);
    sink.wait_for(&stranger, VERIFY, 1, WAIT).await;

    // An invitation is honoured: the account is verified, and no verification mail goes out.
    let admin = superuser(&app).await;
    let email = unique_email();
    invited(&app, &admin, &email).await;
    let token = mailed_token(&sink, &email, 1).await;
    let response = register_invited(&app, &email, &token).await;
    assert_eq!(response.status(), StatusCode::CREATED);
    let user: Value = response.json().await.unwrap();
    assert_eq!(user["is_verified"], true);
    assert_eq!(me(&app, &email).await["is_verified"], true);
    assert_eq!(
        app.count(
            "SELECT COUNT(*) FROM mail_outbox WHERE recipient = $1 AND subject = 'Confirm your email address'",
            &email
        )
        .await,
        0
    );
    // A bad one is refused, not ignored: the client meant it to count.
    assert_problem(
        register_invited(&app, &unique_email(), FORGED).await,
        400,
        "INVITATION_INVALID",
    )
    .await;
    assert_problem(
        register_invited(&app, &unique_email(), &token).await,
        400,
        "INVITATION_INVALID",
    )
    .await;
    // An empty one is no token.
    let body = assert_problem(
        register_invited(&app, &unique_email(), "").await,
        422,
        "VALIDATION_FAILED",
    )
    .await;
    assert_eq!(error_fields(&body), ["invitation"]);
    // Null is none.
    let response = app
        .post_json(
            "/register",
            &json!({"email": unique_email(), "password": PASSWORD, "name": "N", "invitation": null}),
        )
        .await;
    assert_eq!(response.status(), StatusCode::CREATED);
}

#[tokio::test]
async fn invite_mode_needs_an_invitation_and_the_mailed_link_registers_once() {
    let sink = SmtpSink::start().await;
    let app = app_with_mail(&sink, &[("REGISTRATION", "invite")]).await;
    let t = freeze_clock(&app);

    // No invitation: refused before the body is looked at.
    let email = unique_email();
    assert_problem(
        app.register(&email, PASSWORD, "Bob").await,
        403,
        "INVITATION_REQUIRED",
    )
    .await;
    assert_problem(
        app.post_json("/register", &json!({})).await,
        403,
        "INVITATION_REQUIRED",
    )
    .await;
    assert_problem(
        register_invited(&app, &email, FORGED).await,
        400,
        "INVITATION_INVALID",
    )
    .await;
    assert_eq!(accounts_of(&app, &email).await, 0);

    // The superuser invites: 201, the invitation without its token.
    let admin = superuser(&app).await;
    let response = invite(
        &app,
        &admin,
        &json!({"email": format!("  {}", email.to_uppercase()), "name": "Bob Invited"}),
    )
    .await;
    assert_eq!(response.status(), StatusCode::CREATED);
    let text = response.text().await.unwrap();
    let invitation: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(invitation["email"], email, "normalised");
    assert_eq!(invitation["name"], "Bob Invited");
    let admin_me: Value = app.me(&admin.access).await.json().await.unwrap();
    assert_eq!(invitation["invited_by"], admin_me["id"]);
    assert_eq!(
        invitation["created_at"],
        auth_server::clock::rfc3339(t),
        "{invitation}"
    );
    assert_eq!(
        invitation["expires_at"],
        auth_server::clock::rfc3339(t + 72 * HOUR),
        "INVITATION_EXPIRE_HOURS defaults to 72"
    );
    let id = invitation["id"].as_str().unwrap().to_string();
    // Audited: the superuser as the actor, the invitation and its address in the detail.
    let admin_id = admin_me["id"].as_str().unwrap();
    assert_eq!(
        events(&app, "invitation.created", "actor_id", admin_id).await,
        1
    );
    assert_eq!(events(&app, "invitation.created", "detail", &id).await, 1);
    assert_eq!(
        events(&app, "invitation.created", "detail", &email).await,
        1
    );
    let listed = pending(&app, &admin).await;
    assert_eq!(listed["total"], 1);
    assert_eq!(listed["items"][0], invitation);

    // The mail: a link to the registration page, greeting by name; the token only there.
    let mail = sink.wait_for(&email, INVITED, 1, WAIT).await.remove(0);
    assert!(mail.body().contains("Hello Bob Invited"), "{}", mail.body());
    assert!(mail.body().contains("within 72 hours"), "{}", mail.body());
    let token = link_token(&mail);
    assert_eq!(token.len(), 43, "256 bits, base64url");
    assert!(!text.contains(&token));
    assert!(!pending(&app, &admin).await.to_string().contains(&token));
    for column in ["id", "email", "name", "token_hash", "invited_by"] {
        let sql = match column {
            "id" => "SELECT COUNT(*) FROM invitations WHERE id = $1",
            "email" => "SELECT COUNT(*) FROM invitations WHERE email = $1",
            "name" => "SELECT COUNT(*) FROM invitations WHERE name = $1",
            "token_hash" => "SELECT COUNT(*) FROM invitations WHERE token_hash = $1",
            _ => "SELECT COUNT(*) FROM invitations WHERE invited_by = $1",
        };
        assert_eq!(app.count(sql, &token).await, 0, "the token is in {column}");
    }

    // Someone else with the link: another address is refused, and the invitation is not spent.
    let other = unique_email();
    let body = assert_problem(
        register_invited(&app, &other, &token).await,
        400,
        "INVITATION_INVALID",
    )
    .await;
    assert!(
        !body["detail"].as_str().unwrap().contains(&email),
        "never the invited address: {body}"
    );
    assert_eq!(accounts_of(&app, &other).await, 0);
    assert_eq!(pending(&app, &admin).await["total"], 1);

    // The invitee registers (the address in any case): verified, and signs in.
    let response = register_invited(&app, &email.to_uppercase(), &token).await;
    assert_eq!(response.status(), StatusCode::CREATED);
    let user: Value = response.json().await.unwrap();
    assert_eq!(
        (&user["email"], &user["is_verified"]),
        (&json!(email), &json!(true))
    );
    assert_eq!(me(&app, &email).await["id"], user["id"]);
    assert_eq!(
        app.sql
            .text(
                "SELECT accepted_user_id FROM invitations WHERE id = $1",
                &id
            )
            .await,
        user["id"].as_str().unwrap()
    );
    assert!(sink.mails_to(&email, VERIFY).is_empty());
    // Audited as an account made by an invitation.
    let user_id = user["id"].as_str().unwrap();
    assert_eq!(events(&app, "user.created", "user_id", user_id).await, 1);
    assert_eq!(
        events(&app, "user.created", "detail", r#""via":"invitation""#).await,
        1
    );
    no_event_holds(&app, &token).await;

    // Once: again (with the same address or another) is refused; it is no longer pending.
    for address in [&email, &other] {
        assert_problem(
            register_invited(&app, address, &token).await,
            400,
            "INVITATION_INVALID",
        )
        .await;
    }
    assert_eq!(pending(&app, &admin).await["total"], 0);
    assert_eq!(accounts_of(&app, &email).await, 1);
    assert_problem(revoke(&app, &admin, &id).await, 404, "NOT_FOUND").await;

    // The invitee's address now has an account: inviting it again is 409 (a superuser may
    // know; GET /users tells as much), and mails nothing.
    assert_problem(
        invite(&app, &admin, &json!({ "email": email })).await,
        409,
        "EMAIL_TAKEN",
    )
    .await;
    assert_eq!(
        app.count(
            "SELECT COUNT(*) FROM mail_outbox WHERE recipient = $1",
            &email
        )
        .await,
        1
    );
}

#[tokio::test]
async fn closed_mode_refuses_every_registration_but_superusers_still_make_accounts() {
    let app = spawn_app_with(&[("REGISTRATION", "closed")]).await;
    let email = unique_email();
    for body in [
        json!({"email": email, "password": PASSWORD, "name": "No"}),
        json!({"email": email, "password": PASSWORD, "name": "No", "invitation": FORGED}),
        json!({}),
    ] {
        let body = assert_problem(
            app.post_json("/register", &body).await,
            403,
            "REGISTRATION_CLOSED",
        )
        .await;
        assert!(body["detail"].as_str().unwrap().contains("closed"));
    }
    assert_eq!(accounts_of(&app, &email).await, 0);
    // create-superuser is not a registration, nor is import-users.
    let admin = superuser(&app).await;
    let dir = std::env::temp_dir().join(format!(
        "auth-server-import-{}",
        uuid::Uuid::new_v4().simple()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    let old = dir.join("sqlite.db");
    let imported = unique_email();
    let hash = bcrypt::hash(PASSWORD, 4).unwrap();
    crate::hardening::original_database(&old, &[(&imported, "Imported", &hash)]);
    let report = auth_server::service::import::import_users(
        &app.state.db,
        app.clock.now_ms(),
        &format!("sqlite://{}", old.display()),
        &auth_server::auth::password::HashLimits::from_config(&app.state.config.argon2),
    )
    .await
    .unwrap();
    std::fs::remove_dir_all(&dir).unwrap();
    assert_eq!(report.imported, 1);
    assert_eq!(me(&app, &imported).await["name"], "Imported");
    // Nobody could use an invitation: none is made, nothing is mailed.
    assert_problem(
        invite(&app, &admin, &json!({ "email": email })).await,
        403,
        "REGISTRATION_CLOSED",
    )
    .await;
    assert_eq!(
        app.count(
            "SELECT COUNT(*) FROM mail_outbox WHERE recipient = $1",
            &email
        )
        .await,
        0
    );
    assert_eq!(pending(&app, &admin).await["total"], 0);
}

/// The pending invitations of invite mode outlive a switch to closed (refused meanwhile) and
/// work again when invitations are back.
#[tokio::test]
async fn closing_registration_holds_pending_invitations_back() {
    let sink = SmtpSink::start().await;
    let app = app_with_mail(&sink, &[("REGISTRATION", "invite")]).await;
    let admin = superuser(&app).await;
    let email = unique_email();
    invited(&app, &admin, &email).await;
    let token = mailed_token(&sink, &email, 1).await;
    let app = app.restart(&[("REGISTRATION", "closed")]).await;
    assert_problem(
        register_invited(&app, &email, &token).await,
        403,
        "REGISTRATION_CLOSED",
    )
    .await;
    let app = app.restart(&[("REGISTRATION", "invite")]).await;
    assert_eq!(
        register_invited(&app, &email, &token).await.status(),
        StatusCode::CREATED
    );
}

#[tokio::test]
async fn concurrent_uses_of_one_invitation_make_exactly_one_account() {
    let sink = SmtpSink::start().await;
    let app = app_with_mail(&sink, &[("REGISTRATION", "invite")]).await;
    let second = app.another_instance().await;
    let admin = superuser(&app).await;
    let email = unique_email();
    invited(&app, &admin, &email).await;
    let token = mailed_token(&sink, &email, 1).await;

    let attempts = (0..6)
        .map(|i| {
            let (client, url) = if i % 2 == 0 {
                (app.client.clone(), app.url("/register"))
            } else {
                (second.client.clone(), second.url("/register"))
            };
            let body = json!({"email": email, "password": PASSWORD, "name": format!("Racer {i}"), "invitation": token});
            async move {
                let response = client.post(url).json(&body).send().await.unwrap();
                let status = response.status().as_u16();
                let body: Value = response.json().await.unwrap();
                (status, body["code"].as_str().map(str::to_string))
            }
        })
        .collect();
    let outcomes = concurrently(attempts).await;
    let created = outcomes.iter().filter(|(s, _)| *s == 201).count();
    assert_eq!(created, 1, "{outcomes:?}");
    for (status, code) in outcomes.iter().filter(|(s, _)| *s != 201) {
        assert_eq!(
            (*status, code.as_deref()),
            (400, Some("INVITATION_INVALID")),
            "{outcomes:?}"
        );
    }
    assert_eq!(accounts_of(&app, &email).await, 1);
    assert_eq!(
        app.count(
            "SELECT COUNT(*) FROM invitations WHERE email = $1 AND accepted_at IS NOT NULL",
            &email
        )
        .await,
        1
    );
}

/// INVITATION_EXPIRE_HOURS: the link registers up to the last millisecond before `expires_at`
/// and not at it; the list shows it as long.
#[tokio::test]
async fn an_invitation_expires_to_the_millisecond() {
    let sink = SmtpSink::start().await;
    let app = app_with_mail(
        &sink,
        &[
            ("REGISTRATION", "invite"),
            ("INVITATION_EXPIRE_HOURS", "2"),
            // The superuser's access token outlives the invitation.
            ("ACCESS_TOKEN_EXPIRE_MINUTES", "1440"),
        ],
    )
    .await;
    let t = freeze_clock(&app);
    let admin = superuser(&app).await;
    let (early, late) = (unique_email(), unique_email());
    for email in [&early, &late] {
        let invitation = invited(&app, &admin, email).await;
        assert_eq!(
            invitation["expires_at"],
            auth_server::clock::rfc3339(t + 2 * HOUR)
        );
    }
    let early_token = mailed_token(&sink, &early, 1).await;
    let late_token = mailed_token(&sink, &late, 1).await;
    assert!(
        sink.wait_for(&early, INVITED, 1, WAIT).await[0]
            .body()
            .contains("within 2 hours")
    );

    app.clock.set_ms(t + 2 * HOUR - 1);
    assert_eq!(pending(&app, &admin).await["total"], 2);
    assert_eq!(
        register_invited(&app, &early, &early_token).await.status(),
        StatusCode::CREATED
    );
    app.clock.set_ms(t + 2 * HOUR);
    assert_eq!(pending(&app, &admin).await["total"], 0);
    assert_problem(
        register_invited(&app, &late, &late_token).await,
        400,
        "INVITATION_INVALID",
    )
    .await;
    assert_eq!(accounts_of(&app, &late).await, 0);
}

#[tokio::test]
async fn a_revoked_or_replaced_invitation_no_longer_registers() {
    let sink = SmtpSink::start().await;
    let app = app_with_mail(&sink, &[("REGISTRATION", "invite")]).await;
    let admin = superuser(&app).await;

    // Revoked: its link stops working at once; once only; unknown ids are 404.
    let email = unique_email();
    let id = invited(&app, &admin, &email).await["id"]
        .as_str()
        .unwrap()
        .to_string();
    let token = mailed_token(&sink, &email, 1).await;
    assert_eq!(
        revoke(&app, &admin, &id).await.status(),
        StatusCode::NO_CONTENT
    );
    assert_eq!(events(&app, "invitation.revoked", "detail", &id).await, 1);
    let admin_id = app.me(&admin.access).await.json::<Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(
        events(&app, "invitation.revoked", "actor_id", &admin_id).await,
        1
    );
    assert_problem(
        register_invited(&app, &email, &token).await,
        400,
        "INVITATION_INVALID",
    )
    .await;
    assert_eq!(accounts_of(&app, &email).await, 0);
    assert_eq!(pending(&app, &admin).await["total"], 0);
    for id in [
        id.as_str(),
        "00000000-0000-4000-8000-000000000000",
        "not-a-uuid",
    ] {
        assert_problem(revoke(&app, &admin, id).await, 404, "NOT_FOUND").await;
    }
    // A refused revocation records nothing.
    assert_eq!(
        events(&app, "invitation.revoked", "actor_id", &admin_id).await,
        1
    );
    no_event_holds(&app, &token).await;

    // Invited again: the new link replaces the old one.
    let again = unique_email();
    let first = invited(&app, &admin, &again).await;
    let second = invited(&app, &admin, &again).await;
    assert_ne!(first["id"], second["id"]);
    let old = mailed_token(&sink, &again, 1).await;
    let new = mailed_token(&sink, &again, 2).await;
    let listed = pending(&app, &admin).await;
    assert_eq!(listed["total"], 1);
    assert_eq!(listed["items"][0]["id"], second["id"]);
    assert_problem(
        register_invited(&app, &again, &old).await,
        400,
        "INVITATION_INVALID",
    )
    .await;
    assert_eq!(
        register_invited(&app, &again, &new).await.status(),
        StatusCode::CREATED
    );
}

#[tokio::test]
async fn only_superusers_manage_invitations() {
    let app = spawn_app_with(&[("REGISTRATION", "invite")]).await;
    let admin = superuser(&app).await;
    let id = invited(&app, &admin, &unique_email()).await["id"]
        .as_str()
        .unwrap()
        .to_string();
    // An ordinary account (made by hand, as registration is by invitation here).
    let user = superuser(&app).await;
    let user_me: Value = app.me(&user.access).await.json().await.unwrap();
    app.execute(
        "UPDATE users SET is_superuser = FALSE WHERE id = $1",
        user_me["id"].as_str().unwrap(),
    )
    .await;
    assert_eq!(
        me(&app, user_me["email"].as_str().unwrap()).await["is_superuser"],
        false
    );
    // A change by SQL outside the server is seen by its sessions within SESSION_CACHE_MS on
    // SQLite (on PostgreSQL a trigger tells the server): a new session sees it at once.
    let user = app.login_ok(user_me["email"].as_str().unwrap()).await;

    let attempts = [
        app.client
            .post(app.url("/invitations"))
            .json(&json!({"email": unique_email()})),
        app.client.get(app.url("/invitations")),
        app.client.delete(app.url(&format!("/invitations/{id}"))),
    ];
    for request in attempts {
        let as_user = request.try_clone().unwrap().bearer_auth(&user.access);
        assert_problem(as_user.send().await.unwrap(), 403, "FORBIDDEN").await;
        assert_problem(request.send().await.unwrap(), 401, "UNAUTHORIZED").await;
    }
    // Nothing changed: the invitation is still pending, no other was made.
    let listed = pending(&app, &admin).await;
    assert_eq!(listed["total"], 1);
    assert_eq!(listed["items"][0]["id"], id);
}

/// No answer tells a stranger whether an address has an account, beyond what registration in
/// the mode already says: without a valid invitation, every refusal is the same for an address
/// with an account and one without.
#[tokio::test]
async fn refusals_do_not_tell_accounts_apart() {
    for mode in ["invite", "closed"] {
        let app = spawn_app_with(&[("REGISTRATION", mode)]).await;
        let admin = superuser(&app).await;
        let admin_email = app.me(&admin.access).await.json::<Value>().await.unwrap()["email"]
            .as_str()
            .unwrap()
            .to_string();
        let unknown = unique_email();
        for invitation in [None, Some(FORGED)] {
            let mut answers = Vec::new();
            for email in [&admin_email, &unknown] {
                let mut body = json!({"email": email, "password": PASSWORD, "name": "Probe"});
                if let Some(token) = invitation {
                    body["invitation"] = json!(token);
                }
                let response = app.post_json("/register", &body).await;
                answers.push((response.status(), response.text().await.unwrap()));
            }
            assert_eq!(answers[0], answers[1], "{mode} {invitation:?}");
            assert_ne!(answers[0].0, StatusCode::CONFLICT);
        }
    }
}

/// The registration limit counts registrations with invitations as any other (a token cannot
/// be guessed faster than RATE_LIMIT_REGISTER_PER_MINUTE).
#[tokio::test]
async fn invitation_attempts_count_toward_the_registration_limit() {
    let app = spawn_app_with(&[
        ("REGISTRATION", "invite"),
        ("RATE_LIMIT_REGISTER_PER_MINUTE", "2"),
    ])
    .await;
    freeze_clock(&app);
    for _ in 0..2 {
        assert_problem(
            register_invited(&app, &unique_email(), FORGED).await,
            400,
            "INVITATION_INVALID",
        )
        .await;
    }
    assert_problem(
        register_invited(&app, &unique_email(), FORGED).await,
        429,
        "TOO_MANY_REQUESTS",
    )
    .await;
}

/// The purge deletes an invitation a day after it was accepted, revoked or expired, to the
/// millisecond, and never a pending one.
#[tokio::test]
async fn ended_invitations_are_purged_after_a_day() {
    let app = spawn_app_with(&[("REGISTRATION", "invite")]).await;
    let t = freeze_clock(&app);
    let admin = superuser(&app).await;
    let mut ids = Vec::new();
    for _ in 0..7 {
        ids.push(
            invited(&app, &admin, &unique_email()).await["id"]
                .as_str()
                .unwrap()
                .to_string(),
        );
    }
    let now = t + 30 * 24 * HOUR;
    let cut = (now - 24 * HOUR).to_string();
    let before = (now - 24 * HOUR - 1).to_string();
    let far = (now + HOUR).to_string();
    // Each end at the cut (kept) and 1 ms before it (purged); one pending (kept).
    for (id, set, at) in [
        (
            &ids[0],
            "UPDATE invitations SET accepted_at = CAST($1 AS BIGINT), expires_at = CAST($1 AS BIGINT) + 1 WHERE id = $2",
            &cut,
        ),
        (
            &ids[1],
            "UPDATE invitations SET accepted_at = CAST($1 AS BIGINT), expires_at = CAST($1 AS BIGINT) + 1 WHERE id = $2",
            &before,
        ),
        (
            &ids[2],
            "UPDATE invitations SET revoked_at = CAST($1 AS BIGINT), expires_at = CAST($1 AS BIGINT) + 1 WHERE id = $2",
            &cut,
        ),
        (
            &ids[3],
            "UPDATE invitations SET revoked_at = CAST($1 AS BIGINT), expires_at = CAST($1 AS BIGINT) + 1 WHERE id = $2",
            &before,
        ),
        (
            &ids[4],
            "UPDATE invitations SET expires_at = CAST($1 AS BIGINT) WHERE id = $2",
            &cut,
        ),
        (
            &ids[5],
            "UPDATE invitations SET expires_at = CAST($1 AS BIGINT) WHERE id = $2",
            &before,
        ),
        (
            &ids[6],
            "UPDATE invitations SET expires_at = CAST($1 AS BIGINT) WHERE id = $2",
            &far,
        ),
    ] {
        app.execute2(set, at, id).await;
    }
    let keep_the_rest = auth_server::service::maintenance::Retention {
        audit_ms: i64::MAX,
        webhook_log_ms: i64::MAX,
    };
    let purged = auth_server::service::maintenance::purge(&app.state.db, now, keep_the_rest)
        .await
        .unwrap();
    assert_eq!(purged.invitations, 3);
    for (i, id) in ids.iter().enumerate() {
        let kept = app
            .count("SELECT COUNT(*) FROM invitations WHERE id = $1", id)
            .await;
        assert_eq!(kept, i64::from(!matches!(i, 1 | 3 | 5)), "invitation {i}");
    }
}

#[tokio::test]
async fn the_document_states_the_invitation_rules() {
    let app = spawn_app().await;
    let doc = app.get_json("/openapi.json").await;
    let schemas = &doc["components"]["schemas"];
    let invitation = &schemas["RegisterRequest"]["properties"]["invitation"];
    assert_eq!(invitation["minLength"], 1, "{invitation}");
    assert!(
        !schemas["RegisterRequest"]["required"]
            .as_array()
            .unwrap()
            .contains(&json!("invitation"))
    );
    let request = &schemas["InvitationRequest"];
    assert_eq!(request["additionalProperties"], false);
    assert_eq!(request["required"], json!(["email"]));
    assert_eq!(request["properties"]["email"]["format"], "email");
    assert_eq!(
        request["properties"]["name"]["pattern"],
        auth_server::domain::Name::PATTERN
    );
    let response = &schemas["InvitationResponse"]["properties"];
    assert!(response.get("token").is_none(), "{response}");
    for (method, status) in [("post", "201"), ("get", "200")] {
        let operation = &doc["paths"]["/invitations"][method];
        assert!(operation["responses"][status].is_object(), "{method}");
        assert!(operation["responses"]["403"].is_object(), "{method}");
        assert!(operation["security"].is_array(), "{method}");
    }
    let delete = &doc["paths"]["/invitations/{id}"]["delete"];
    assert_eq!(delete["parameters"][0]["schema"]["format"], "uuid");
    let register = &doc["paths"]["/register"]["post"]["responses"];
    for status in ["400", "403", "409"] {
        assert!(register[status].is_object(), "{status}");
    }
}

// --- The registration page in each mode ---

#[tokio::test]
async fn the_registration_page_in_open_mode_offers_the_form_and_honours_an_invitation() {
    let sink = SmtpSink::start().await;
    let app = app_with_mail(&sink, &[]).await;
    let mut browser = Browser::new(&app);
    let page = browser.get("/sign-in").await;
    assert!(page.body.contains(r#"<a href="/register">"#));
    let page = browser.get("/register").await;
    page.assert_page(StatusCode::OK, "Create an account");
    assert!(!page.tag("register-email").unwrap().contains("readonly"));

    let admin = superuser(&app).await;
    let email = unique_email();
    invited(&app, &admin, &email).await;
    let token = mailed_token(&sink, &email, 1).await;
    let page = browser.get(&format!("/register?invitation={token}")).await;
    page.assert_page(StatusCode::OK, "Create an account");
    assert_eq!(page.value("register", "email"), email);
    let page = browser
        .submit(
            &format!("/register?invitation={token}"),
            "register",
            "/register",
            &[
                ("email", email.as_str()),
                ("name", "Page Invitee"),
                ("password", PASSWORD),
                ("password2", PASSWORD),
                ("invitation", token.as_str()),
            ],
        )
        .await;
    page.assert_page(StatusCode::OK, "Your account is ready");
    assert_eq!(me(&app, &email).await["is_verified"], true);
}

#[tokio::test]
async fn the_registration_page_in_closed_mode_says_so_and_has_no_form() {
    let app = spawn_app_with(&[("REGISTRATION", "closed")]).await;
    let mut browser = Browser::new(&app);
    let sign_in = browser.get("/sign-in").await;
    assert!(!sign_in.body.contains(r#"href="/register""#));
    let page = browser.get("/register").await;
    page.assert_page(StatusCode::FORBIDDEN, "Registration is closed");
    assert!(page.tag("register").is_none(), "no form: {}", page.body);
    let page = browser.get(&format!("/register?invitation={FORGED}")).await;
    page.assert_page(StatusCode::FORBIDDEN, "Registration is closed");

    // A form posted anyway (with a good form token): the same page, and no account.
    let csrf = sign_in.value("sign-in", "csrf");
    let email = unique_email();
    let page = browser
        .post(
            "/register",
            &[
                ("csrf", &csrf),
                ("email", &email),
                ("name", "Closed"),
                ("password", PASSWORD),
                ("password2", PASSWORD),
            ],
        )
        .await;
    page.assert_page(StatusCode::FORBIDDEN, "Registration is closed");
    assert!(page.tag("register").is_none());
    assert_eq!(accounts_of(&app, &email).await, 0);
}

#[tokio::test]
async fn the_registration_page_in_invite_mode_takes_the_mailed_link_once() {
    let sink = SmtpSink::start().await;
    // PUBLIC_URL is the front end's in the mail; the link's path and query are the page's.
    let app = app_with_mail(&sink, &[("REGISTRATION", "invite")]).await;
    let mut browser = Browser::new(&app);
    let sign_in = browser.get("/sign-in").await;
    assert!(!sign_in.body.contains(r#"href="/register""#));

    // Without an invitation: no form.
    let page = browser.get("/register").await;
    page.assert_page(StatusCode::FORBIDDEN, "Registration is by invitation only");
    assert!(page.tag("register").is_none());
    let csrf = sign_in.value("sign-in", "csrf");
    let stranger = unique_email();
    let page = browser
        .post(
            "/register",
            &[
                ("csrf", &csrf),
                ("email", &stranger),
                ("name", "Stranger"),
                ("password", PASSWORD),
                ("password2", PASSWORD),
            ],
        )
        .await;
    page.assert_page(StatusCode::FORBIDDEN, "Registration is by invitation only");
    // A forged link.
    let page = browser.get(&format!("/register?invitation={FORGED}")).await;
    page.assert_page(StatusCode::BAD_REQUEST, "This invitation cannot be used");
    assert!(page.tag("register").is_none());

    // The mailed link: the invited address filled in, read-only; the name suggested.
    let admin = superuser(&app).await;
    let email = unique_email();
    let response = invite(
        &app,
        &admin,
        &json!({"email": email, "name": "Ada Invited"}),
    )
    .await;
    assert_eq!(response.status(), StatusCode::CREATED);
    let token = mailed_token(&sink, &email, 1).await;
    let link = format!("/register?invitation={token}");
    let page = browser.get(&link).await;
    page.assert_page(StatusCode::OK, "Create an account");
    assert_eq!(page.value("register", "email"), email);
    assert!(page.tag("register-email").unwrap().contains("readonly"));
    assert_eq!(page.value("register", "name"), "Ada Invited");
    assert_eq!(page.value("register", "invitation"), token);

    // Another address posted with the link's token: refused, nothing spent.
    let csrf = page.value("register", "csrf");
    let other = unique_email();
    let post = |address: String, password2: &'static str| {
        let (csrf, token) = (csrf.clone(), token.clone());
        vec![
            ("csrf".to_string(), csrf),
            ("email".to_string(), address),
            ("name".to_string(), "Ada Invited".to_string()),
            ("password".to_string(), PASSWORD.to_string()),
            ("password2".to_string(), password2.to_string()),
            ("invitation".to_string(), token),
        ]
    };
    let fields = post(other.clone(), PASSWORD);
    let fields: Vec<(&str, &str)> = fields
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    let page = browser.post("/register", &fields).await;
    page.assert_page(StatusCode::BAD_REQUEST, "This invitation cannot be used");
    assert_eq!(accounts_of(&app, &other).await, 0);

    // A mistake in the form keeps the invitation and the read-only address.
    let fields = post(email.clone(), "not the same passphrase");
    let fields: Vec<(&str, &str)> = fields
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    let page = browser.post("/register", &fields).await;
    page.assert_page(StatusCode::UNPROCESSABLE_ENTITY, "Create an account");
    assert_eq!(page.value("register", "invitation"), token);
    assert!(page.tag("register-email").unwrap().contains("readonly"));

    // The invitee's form: the account, verified, signs in.
    let fields = post(email.clone(), PASSWORD);
    let fields: Vec<(&str, &str)> = fields
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    let page = browser.post("/register", &fields).await;
    page.assert_page(StatusCode::OK, "Your account is ready");
    assert_eq!(me(&app, &email).await["is_verified"], true);

    // The link works once.
    let page = browser.get(&link).await;
    page.assert_page(StatusCode::BAD_REQUEST, "This invitation cannot be used");
    let page = browser.post("/register", &fields).await;
    page.assert_page(StatusCode::BAD_REQUEST, "This invitation cannot be used");
    assert_eq!(accounts_of(&app, &email).await, 1);
}
