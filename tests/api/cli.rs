//! The command line, run as a real process against the test's database.

use std::process::Output;

use reqwest::StatusCode;
use serde_json::Value;

use crate::helpers::*;

fn auth_server(app: &TestApp, args: &[&str], stdin: Option<&str>, env: &[(&str, &str)]) -> Output {
    let mut command = server_command();
    command
        .args(args)
        .env("DATABASE_URL", app.var("DATABASE_URL"))
        .env("SECRET_KEY", SECRET)
        .env("ARGON2_MEMORY_KIB", "256")
        .env("ARGON2_ITERATIONS", "1")
        .env_remove("AUTH_SERVER_PASSWORD");
    for (k, v) in env {
        command.env(k, v);
    }
    // An empty input rather than none: the commands that read a password see its end.
    run_with_input(
        command,
        Some(stdin.unwrap_or("")),
        std::time::Duration::from_secs(60),
    )
}

#[tokio::test]
async fn create_superuser_then_log_in_and_list_users() {
    let app = spawn_app().await;
    let email = unique_email();
    let output = auth_server(
        &app,
        &["create-superuser", "--email", &email, "--name", "Root"],
        Some("a sturdy root passphrase\n"),
        &[],
    );
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(String::from_utf8_lossy(&output.stdout).contains("created superuser"));

    let tokens = app.login_ok_with(&email, "a sturdy root passphrase").await;
    let me: Value = app.me(&tokens.access).await.json().await.unwrap();
    assert_eq!(me["is_superuser"], true);
    assert_eq!(me["is_verified"], true);
    assert_eq!(me["name"], "Root");
    let response = app
        .client
        .get(app.url("/users"))
        .bearer_auth(&tokens.access)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let page: Value = response.json().await.unwrap();
    assert_eq!(page["total"], 1);
}

#[tokio::test]
async fn create_superuser_promotes_an_existing_account_and_refuses_weak_passwords() {
    let app = spawn_app().await;
    let email = unique_email();
    let (_, tokens) = app.signed_up(&email).await;
    // Its owner has proved the address.
    app.execute(
        "UPDATE users SET is_verified = TRUE WHERE email = $1",
        &email,
    )
    .await;
    let output = auth_server(
        &app,
        &[
            "create-superuser",
            "--email",
            &email.to_uppercase(),
            "--promote-existing",
        ],
        None,
        &[],
    );
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(String::from_utf8_lossy(&output.stdout).contains("is now a superuser"));
    let me: Value = app.me(&tokens.access).await.json().await.unwrap();
    assert_eq!(me["is_superuser"], true);
    // The password stays as it was.
    assert_eq!(app.login(&email, PASSWORD).await.status(), StatusCode::OK);

    let weak = auth_server(
        &app,
        &["create-superuser", "--email", &unique_email()],
        Some("short\n"),
        &[],
    );
    assert!(!weak.status.success());
    let stderr = String::from_utf8_lossy(&weak.stderr);
    assert!(stderr.contains("password"), "{stderr}");
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");

    let none = auth_server(
        &app,
        &["create-superuser", "--email", &unique_email()],
        None,
        &[],
    );
    assert!(!none.status.success());

    // From the environment instead of standard input.
    let from_env = unique_email();
    let output = auth_server(
        &app,
        &["create-superuser", "--email", &from_env],
        None,
        &[("AUTH_SERVER_PASSWORD", "an environmental passphrase")],
    );
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert_eq!(
        app.login(&from_env, "an environmental passphrase")
            .await
            .status(),
        StatusCode::OK
    );

    let bad = auth_server(
        &app,
        &["create-superuser", "--email", "not-an-email"],
        None,
        &[],
    );
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("--email"));
}

#[tokio::test]
async fn create_superuser_refuses_an_existing_email_without_promote_existing() {
    let app = spawn_app().await;
    let email = unique_email();
    let (user, tokens) = app.signed_up(&email).await;
    // Whatever the password given, in whatever case the email is written: refused, unchanged.
    for (address, stdin) in [
        (email.clone(), Some("a sturdy takeover passphrase\n")),
        (email.to_uppercase(), None),
    ] {
        let output = auth_server(
            &app,
            &["create-superuser", "--email", &address],
            stdin,
            &[("AUTH_SERVER_PASSWORD", "a sturdy takeover passphrase")],
        );
        assert!(!output.status.success());
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
        assert!(
            stderr.contains("already exists") && stderr.contains("--promote-existing"),
            "{stderr}"
        );
        assert!(stderr.contains(user["id"].as_str().unwrap()), "{stderr}");
        assert!(output.stdout.is_empty());
    }
    let me: Value = app.me(&tokens.access).await.json().await.unwrap();
    assert_eq!(me["is_superuser"], false);
    assert_eq!(app.login(&email, PASSWORD).await.status(), StatusCode::OK);
    assert_eq!(
        app.login(&email, "a sturdy takeover passphrase")
            .await
            .status(),
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        app.count(
            "SELECT COUNT(*) FROM users WHERE is_superuser AND email = $1",
            &email
        )
        .await,
        0
    );
    let help = auth_server(&app, &["create-superuser", "--help"], None, &[]);
    assert!(String::from_utf8_lossy(&help.stdout).contains("--promote-existing"));
}

/// An address squatted before the operator bootstraps (registered by anyone, never verified) is
/// not promoted, even with --promote-existing; nor is a deactivated account.
#[tokio::test]
async fn create_superuser_never_promotes_an_unverified_or_deactivated_account() {
    let app = spawn_app().await;
    let email = unique_email();
    let (_, squatter) = app.signed_up(&email).await;
    let refused = auth_server(
        &app,
        &["create-superuser", "--email", &email, "--promote-existing"],
        None,
        &[],
    );
    assert!(!refused.status.success());
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
    assert!(stderr.contains("not verified"), "{stderr}");
    let me: Value = app.me(&squatter.access).await.json().await.unwrap();
    assert_eq!(me["is_superuser"], false);
    app.execute(
        "UPDATE users SET is_verified = TRUE, is_active = FALSE WHERE email = $1",
        &email,
    )
    .await;
    let refused = auth_server(
        &app,
        &["create-superuser", "--email", &email, "--promote-existing"],
        None,
        &[],
    );
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("deactivated"));
    assert_eq!(
        app.count(
            "SELECT COUNT(*) FROM users WHERE is_superuser AND email = $1",
            &email
        )
        .await,
        0
    );
}

#[tokio::test]
async fn migrate_and_help() {
    let app = spawn_app().await;
    let output = auth_server(&app, &["migrate"], None, &[]);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let help = auth_server(&app, &["--help"], None, &[]);
    assert!(help.status.success());
    let text = String::from_utf8_lossy(&help.stdout);
    for command in ["serve", "migrate", "create-superuser"] {
        assert!(text.contains(command), "{text}");
    }
    let unknown = auth_server(&app, &["frobnicate"], None, &[]);
    assert!(!unknown.status.success());
}
