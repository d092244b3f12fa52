use std::time::Duration;

use super::*;

fn config(vars: &[(&str, &str)]) -> Result<Config, ConfigError> {
    Config::from_vars(vars.iter().map(|(k, v)| (k.to_string(), v.to_string())))
}

#[test]
fn defaults_are_the_contracts() {
    let c = config(&[]).unwrap();
    assert_eq!(
        c.database.url,
        DatabaseUrl::Sqlite("sqlite://sqlite.db".into())
    );
    assert!(c.tokens.secret_key_generated);
    assert_eq!(c.tokens.secret_key().len(), 64);
    assert_eq!(c.server.port, 8000);
    assert_eq!(c.server.api_url(), "http://localhost:8000");
    assert_eq!(c.tokens.access_token_ttl, Duration::from_secs(1800));
    assert_eq!(c.tokens.refresh_token_ttl, Duration::from_secs(7 * 86_400));
    assert_eq!(c.argon2.memory_kib, 19_456);
    assert_eq!(c.connections.body_limit_bytes, 65_536);
    assert_eq!(c.hashing.max_wait, Duration::from_secs(5));
    assert_eq!(c.hashing.queue_limit, 1024);
    assert_eq!(c.argon2.max_memory_kib, 262_144);
    assert_eq!(c.database.sqlite_synchronous, SqliteSynchronous::Normal);
    assert_eq!(c.rate_limits.ipv6_prefix, 64);
    assert_eq!(c.rate_limits.max_clients, 100_000);
    assert_eq!(c.connections.header_read_timeout, Duration::from_secs(10));
    assert_eq!(c.connections.keep_alive_timeout, Duration::from_secs(75));
    assert_eq!(c.connections.max_connections, None);
    assert_eq!(c.mail.from(), "auth-server <no-reply@localhost>");
    assert_eq!(c.mail.smtp_timeout, Duration::from_secs(20));
    assert!(c.server.cors_origins.is_empty() && c.server.trusted_proxies.is_empty());
    assert!(c.pages.enabled && c.pages.redirect_allowlist.is_empty());
    assert!(!c.server.hsts && !c.accounts.require_verified_email);
    let c = config(&[("RATE_LIMIT_IPV6_PREFIX", "48"), ("MAX_CONNECTIONS", "500")]).unwrap();
    assert_eq!(c.rate_limits.ipv6_prefix, 48);
    assert_eq!(c.connections.max_connections, Some(500));
}

#[test]
fn the_last_value_wins_and_empty_means_unset() {
    let c = config(&[("PORT", "9000"), ("PORT", "9001")]).unwrap();
    assert_eq!(c.server.port, 9001);
    let c = config(&[("PORT", "9000"), ("PORT", " ")]).unwrap();
    assert_eq!(c.server.port, 8000);
}

#[test]
fn the_accepted_forms() {
    let c = config(&[
        ("DATABASE_URL", "sqlite+aiosqlite:///./sqlite.db"),
        ("HSTS", "Yes"),
        ("REQUIRE_VERIFIED_EMAIL", "1"),
        (
            "CORS_ORIGINS",
            " https://a.example.com/, ,https://b.example.com",
        ),
        ("TRUSTED_PROXIES", "10.0.0.0/8, ::1"),
        ("PREVIOUS_PUBLIC_KEY_FILES", "old.pem,"),
        ("SECRET_KEY", "-a key that starts like a flag, 32+"),
        ("PUBLIC_URL", " https://app.example.com/ "),
        ("LOGIN_LOCKOUT_FIRST_SECONDS", "5000"),
        ("HASH_QUEUE_LIMIT", "5000000"),
        ("LOG_FORMAT", "JSON"),
        ("NOT_A_SETTING", "ignored"),
    ])
    .unwrap();
    assert_eq!(
        c.database.url,
        DatabaseUrl::Sqlite("sqlite://./sqlite.db".into())
    );
    assert!(c.server.hsts && c.accounts.require_verified_email);
    assert_eq!(
        c.server.cors_origins,
        ["https://a.example.com", "https://b.example.com"]
    );
    assert_eq!(c.server.trusted_proxies.len(), 2);
    assert_eq!(c.tokens.previous_public_key_files.len(), 1);
    assert_eq!(
        c.tokens.secret_key(),
        b"-a key that starts like a flag, 32+"
    );
    assert!(!c.tokens.secret_key_generated);
    assert_eq!(c.server.api_url(), "https://app.example.com");
    // Bounds applied silently, as they always were.
    assert_eq!(c.lockout.first, c.lockout.max);
    assert_eq!(c.hashing.queue_limit, 1_000_000);
    assert_eq!(c.logging.format, LogFormat::Json);
}

#[test]
fn bad_values_name_the_variable() {
    let e = config(&[("PORT", "eighty")]).unwrap_err();
    assert_eq!(e.var, "PORT");
    assert_eq!(
        e.to_string(),
        "invalid PORT: `eighty`: invalid digit found in string"
    );
    let e = config(&[("SECRET_KEY", "short")]).unwrap_err();
    assert_eq!(e.var, "SECRET_KEY");
    let e = config(&[("PASSWORD_MIN_LENGTH", "6")]).unwrap_err();
    assert_eq!(e.var, "PASSWORD_MIN_LENGTH");
    let e = config(&[("CORS_ORIGINS", "*")]).unwrap_err();
    assert_eq!(e.var, "CORS_ORIGINS");
    let e = config(&[("SQLITE_SYNCHRONOUS", "sometimes")]).unwrap_err();
    assert_eq!(e.var, "SQLITE_SYNCHRONOUS");
    assert_eq!(
        config(&[("SQLITE_SYNCHRONOUS", "Normal")])
            .unwrap()
            .database
            .sqlite_synchronous,
        SqliteSynchronous::Normal
    );
    let e = config(&[("HASH_MAX_WAIT_MILLISECONDS", "0")]).unwrap_err();
    assert_eq!(e.var, "HASH_MAX_WAIT_MILLISECONDS");
    let e = config(&[
        ("ARGON2_MEMORY_KIB", "65536"),
        ("ARGON2_MAX_MEMORY_KIB", "32768"),
    ])
    .unwrap_err();
    assert_eq!(e.var, "ARGON2_MAX_MEMORY_KIB");
    for (var, value) in [
        ("RATE_LIMIT_IPV6_PREFIX", "0"),
        ("RATE_LIMIT_IPV6_PREFIX", "129"),
        ("RATE_LIMIT_MAX_CLIENTS", "0"),
        ("HEADER_READ_TIMEOUT_SECONDS", "0"),
        ("KEEP_ALIVE_TIMEOUT_SECONDS", "0"),
        ("MAX_CONNECTIONS", "0"),
        ("MAX_CONNECTIONS", "many"),
        ("ACCESS_TOKEN_EXPIRE_MINUTES", "0"),
        ("SESSION_MAX_AGE_DAYS", "3661"),
        ("ARGON2_MEMORY_KIB", "1"),
        ("MAIL_SMTP_TIMEOUT_SECONDS", "0"),
        ("MAIL_SMTP_TIMEOUT_SECONDS", "61"),
        ("HSTS", "maybe"),
        ("LOG_FORMAT", "xml"),
        ("TRUSTED_PROXIES", "10.0.0.0/8, nonsense"),
        ("PUBLIC_URL", "app.example.com"),
        ("SMTP_URL", "http://mail.example.com"),
        ("PRIVATE_KEY_FILE", "key.pem"),
    ] {
        let e = config(&[(var, value)]).unwrap_err();
        assert_eq!(e.var, var, "{value}");
        assert_eq!(e.to_string().lines().count(), 1, "{e}");
    }
    let e = config(&[("ALGORITHM", "none")]).unwrap_err();
    assert_eq!(e.var, "ALGORITHM");
    assert!(e.to_string().starts_with("invalid ALGORITHM"));
    let e = config(&[("ALGORITHM", "EdDSA")]).unwrap_err();
    assert_eq!(e.var, "PRIVATE_KEY_FILE");
    let e = config(&[("SMTP_URL", "smtp://mail.example.com")]).unwrap_err();
    assert_eq!(e.var, "MAIL_FROM");
    // An SMTP URL carries a password: no error repeats it.
    let e = config(&[("SMTP_URL", "smtp://u:hunter2@")]).unwrap_err();
    assert!(!e.to_string().contains("hunter2"), "{e}");
}

#[test]
fn every_setting_is_a_flag_named_after_its_variable() {
    let cmd = Config::command();
    cmd.clone().debug_assert();
    let mut vars = Vec::new();
    for arg in cmd.get_arguments().filter(|a| a.get_id() != "help") {
        let var = arg.get_env().expect("every setting has a variable");
        let var = var.to_str().unwrap();
        assert_eq!(
            arg.get_long(),
            Some(var.to_ascii_lowercase().replace('_', "-").as_str())
        );
        vars.push(var.to_string());
    }
    // Every variable the README documents.
    assert_eq!(vars.len(), 90, "{vars:?}");
    let help = cmd.clone().render_long_help().to_string();
    for var in &vars {
        assert!(
            help.contains(&format!("[env: {var}")),
            "{var} is not in --help"
        );
    }
    for default in [
        "[default: 8000]",
        "[default: sqlite://sqlite.db]",
        "[default: HS256]",
    ] {
        assert!(help.contains(default), "{default}");
    }
}

#[test]
fn registration_settings() {
    let c = config(&[]).unwrap();
    assert_eq!(c.accounts.registration, RegistrationMode::Open);
    assert_eq!(c.accounts.invitation_ttl, Duration::from_secs(72 * 3600));
    let c = config(&[
        ("REGISTRATION", "Invite"),
        ("INVITATION_EXPIRE_HOURS", "8760"),
    ])
    .unwrap();
    assert_eq!(c.accounts.registration, RegistrationMode::Invite);
    assert_eq!(c.accounts.invitation_ttl, Duration::from_secs(8760 * 3600));
    assert_eq!(
        config(&[("REGISTRATION", "closed")])
            .unwrap()
            .accounts
            .registration,
        RegistrationMode::Closed
    );
    for (var, bad) in [
        ("REGISTRATION", "invitation"),
        ("INVITATION_EXPIRE_HOURS", "0"),
        ("INVITATION_EXPIRE_HOURS", "8761"),
    ] {
        let e = config(&[(var, bad)]).unwrap_err();
        assert_eq!(e.var, var, "{bad}");
        assert_eq!(e.to_string().lines().count(), 1, "{e}");
    }
}

#[test]
fn pages_settings() {
    let c = config(&[
        ("PAGES", "false"),
        (
            "PAGES_REDIRECT_ALLOWLIST",
            "https://App.example.com/, http://localhost:3000",
        ),
    ])
    .unwrap();
    assert!(!c.pages.enabled);
    assert_eq!(
        c.pages.redirect_allowlist,
        ["https://app.example.com", "http://localhost:3000"]
    );
    for bad in ["https://app.example.com/next", "app.example.com", "*"] {
        let e = config(&[("PAGES_REDIRECT_ALLOWLIST", bad)]).unwrap_err();
        assert_eq!(e.var, "PAGES_REDIRECT_ALLOWLIST", "{bad}");
        assert_eq!(e.to_string().lines().count(), 1, "{e}");
    }
    assert_eq!(config(&[("PAGES", "perhaps")]).unwrap_err().var, "PAGES");
}

#[test]
fn secrets_are_never_shown() {
    let cmd = Config::command();
    for var in ["SECRET_KEY", "SMTP_URL", "DATABASE_URL"] {
        let arg = cmd
            .get_arguments()
            .find(|a| a.get_env().is_some_and(|e| e == var))
            .unwrap();
        assert!(arg.is_hide_env_values_set(), "{var}");
    }
    let c = config(&[
        ("SECRET_KEY", "a-very-secret-key-of-32-bytes-or-more"),
        ("SMTP_URL", "smtp://user:hunter2@mail.example.com"),
        ("MAIL_FROM", "Example <no-reply@example.com>"),
        ("DATABASE_URL", "postgres://app:pg-password@db/auth"),
    ])
    .unwrap();
    let shown = format!("{c:?}");
    for secret in ["a-very-secret-key", "hunter2", "pg-password"] {
        assert!(!shown.contains(secret), "{secret} in {shown}");
    }
}

#[test]
fn per_client_cap_and_shutdown_grace() {
    let c = config(&[]).unwrap();
    assert_eq!(c.connections.max_connections_per_client, 256);
    assert_eq!(c.connections.shutdown_grace(), Duration::from_secs(35));
    let c = config(&[("REQUEST_TIMEOUT_SECONDS", "10")]).unwrap();
    assert_eq!(c.connections.shutdown_grace(), Duration::from_secs(15));
    let c = config(&[("SHUTDOWN_GRACE_SECONDS", "5")]).unwrap();
    assert_eq!(c.connections.shutdown_grace(), Duration::from_secs(5));
    for (var, value) in [
        ("MAX_CONNECTIONS_PER_CLIENT", "0"),
        ("SHUTDOWN_GRACE_SECONDS", "0"),
    ] {
        assert_eq!(config(&[(var, value)]).unwrap_err().var, var);
    }
}

#[test]
fn passkey_settings() {
    // The defaults follow PUBLIC_URL and MFA_ISSUER.
    let c = config(&[]).unwrap();
    assert!(c.passkeys.enabled);
    assert_eq!(c.passkeys.rp_id(), "localhost");
    assert_eq!(c.passkeys.origins(), ["http://localhost:8000"]);
    assert_eq!(c.passkeys.rp_name(), "auth-server");
    assert_eq!(c.passkeys.challenge_ttl, Duration::from_secs(300));
    assert_eq!(
        c.passkeys.counter_policy,
        crate::config::CounterPolicy::Refuse
    );
    let c = config(&[
        ("PUBLIC_URL", "https://app.example.com/base"),
        ("API_URL", "https://auth.example.com"),
        ("MFA_ISSUER", "Example"),
    ])
    .unwrap();
    assert_eq!(c.passkeys.rp_id(), "app.example.com");
    // API_URL is not under app.example.com: only PUBLIC_URL's origin.
    assert_eq!(c.passkeys.origins(), ["https://app.example.com"]);
    assert_eq!(c.passkeys.rp_name(), "Example");
    let c = config(&[
        ("PUBLIC_URL", "https://app.example.com"),
        ("API_URL", "https://auth.example.com"),
        ("WEBAUTHN_RP_ID", "Example.com"),
    ])
    .unwrap();
    assert_eq!(
        c.passkeys.origins(),
        ["https://app.example.com", "https://auth.example.com"]
    );
    // Explicit settings need not match PUBLIC_URL.
    let c = config(&[
        ("WEBAUTHN_RP_ID", "example.test"),
        (
            "WEBAUTHN_ORIGINS",
            "https://app.example.test, https://example.test:8443",
        ),
        ("WEBAUTHN_RP_NAME", "Tests"),
        ("WEBAUTHN_COUNTER_POLICY", "report"),
    ])
    .unwrap();
    assert_eq!(c.passkeys.rp_id(), "example.test");
    assert_eq!(
        c.passkeys.origins(),
        ["https://app.example.test", "https://example.test:8443"]
    );
    assert_eq!(c.passkeys.rp_name(), "Tests");
    for (vars, var) in [
        (vec![("WEBAUTHN_RP_ID", "192.168.1.1")], "WEBAUTHN_RP_ID"),
        (
            vec![("PUBLIC_URL", "http://127.0.0.1:8000")],
            "WEBAUTHN_RP_ID",
        ),
        (
            vec![
                ("WEBAUTHN_RP_ID", "example.com"),
                ("WEBAUTHN_ORIGINS", "https://evil.com"),
            ],
            "WEBAUTHN_ORIGINS",
        ),
        (
            vec![
                ("WEBAUTHN_RP_ID", "example.com"),
                ("WEBAUTHN_ORIGINS", "https://badexample.com"),
            ],
            "WEBAUTHN_ORIGINS",
        ),
        (vec![("WEBAUTHN_RP_ID", "example.com")], "WEBAUTHN_ORIGINS"),
        (
            vec![("WEBAUTHN_CHALLENGE_SECONDS", "5")],
            "WEBAUTHN_CHALLENGE_SECONDS",
        ),
        (
            vec![("WEBAUTHN_COUNTER_POLICY", "ignore")],
            "WEBAUTHN_COUNTER_POLICY",
        ),
    ] {
        let e = config(&vars).unwrap_err();
        assert_eq!(e.var, var, "{vars:?}: {e}");
        assert_eq!(e.to_string().lines().count(), 1, "{e}");
    }
    // Off, nothing about them is checked.
    let c = config(&[
        ("PASSKEYS", "false"),
        ("PUBLIC_URL", "http://127.0.0.1:8000"),
    ])
    .unwrap();
    assert!(!c.passkeys.enabled);
}

#[test]
fn webhook_settings() {
    let c = config(&[]).unwrap();
    assert!(!c.webhooks.allow_private_networks);
    assert_eq!(c.webhooks.timeout, Duration::from_secs(10));
    assert_eq!(c.webhooks.retry_base, Duration::from_secs(10));
    assert_eq!(c.webhooks.max_attempts, 12);
    assert_eq!(c.webhooks.log_retention, Duration::from_secs(30 * 86_400));
    let c = config(&[
        ("WEBHOOK_ALLOW_PRIVATE_NETWORKS", "true"),
        ("WEBHOOK_TIMEOUT_SECONDS", "60"),
        ("WEBHOOK_RETRY_BASE_SECONDS", "1"),
        ("WEBHOOK_MAX_ATTEMPTS", "50"),
        ("WEBHOOK_LOG_RETENTION_DAYS", "1"),
    ])
    .unwrap();
    assert!(c.webhooks.allow_private_networks);
    assert_eq!(c.webhooks.timeout, Duration::from_secs(60));
    assert_eq!(c.webhooks.retry_base, Duration::from_secs(1));
    assert_eq!(c.webhooks.max_attempts, 50);
    assert_eq!(c.webhooks.log_retention, Duration::from_secs(86_400));
    for (var, bad) in [
        ("WEBHOOK_ALLOW_PRIVATE_NETWORKS", "maybe"),
        ("WEBHOOK_TIMEOUT_SECONDS", "0"),
        ("WEBHOOK_TIMEOUT_SECONDS", "61"),
        ("WEBHOOK_RETRY_BASE_SECONDS", "0"),
        ("WEBHOOK_RETRY_BASE_SECONDS", "3601"),
        ("WEBHOOK_MAX_ATTEMPTS", "0"),
        ("WEBHOOK_MAX_ATTEMPTS", "51"),
        ("WEBHOOK_LOG_RETENTION_DAYS", "0"),
        ("WEBHOOK_LOG_RETENTION_DAYS", "366"),
    ] {
        assert_eq!(config(&[(var, bad)]).unwrap_err().var, var, "{var}={bad}");
    }
}

#[test]
fn redis_settings() {
    let c = config(&[]).unwrap();
    assert!(c.redis.url.is_none());
    assert_eq!(c.redis.key_prefix, "auth:");
    assert_eq!(c.redis.timeout, Duration::from_millis(250));
    let c = config(&[
        ("REDIS_URL", "redis://:pw@cache.internal:6380/2"),
        ("REDIS_KEY_PREFIX", "eu-1:auth:"),
        ("REDIS_TIMEOUT_MS", "50"),
    ])
    .unwrap();
    assert_eq!(
        c.redis.url.as_ref().unwrap().expose(),
        "redis://:pw@cache.internal:6380/2"
    );
    assert!(
        !format!("{c:?}").contains("pw@"),
        "Debug shows the password"
    );
    assert_eq!(c.redis.key_prefix, "eu-1:auth:");
    assert_eq!(c.redis.timeout, Duration::from_millis(50));
    for (var, value) in [
        ("REDIS_URL", "http://cache:6379"),
        ("REDIS_URL", "redis://:hunter2@cache:port"),
        ("REDIS_KEY_PREFIX", "a b"),
        ("REDIS_KEY_PREFIX", &"x".repeat(65)),
        ("REDIS_TIMEOUT_MS", "0"),
        ("REDIS_TIMEOUT_MS", "10001"),
    ] {
        let e = config(&[(var, value)]).unwrap_err();
        assert_eq!(e.var, var, "{value}: {e}");
        assert!(!e.to_string().contains("hunter2"), "{e}");
    }
}

#[test]
fn metrics_settings() {
    let c = config(&[]).unwrap();
    assert_eq!(c.metrics.exposure(), MetricsExposure::MainListener);
    assert!(c.metrics.token.is_none());
    let c = config(&[("METRICS", "false"), ("METRICS_ADDRESS", "127.0.0.1:9100")]).unwrap();
    assert_eq!(c.metrics.exposure(), MetricsExposure::Off);
    let c = config(&[
        ("METRICS_ADDRESS", "[::1]:9100"),
        ("METRICS_TOKEN", "0123456789abcdef0123"),
    ])
    .unwrap();
    assert_eq!(
        c.metrics.exposure(),
        MetricsExposure::Separate("[::1]:9100".parse().unwrap())
    );
    assert_eq!(c.metrics.token.unwrap().expose(), "0123456789abcdef0123");
    // Port 0 twice is two free ports.
    assert!(config(&[("PORT", "0"), ("METRICS_ADDRESS", "127.0.0.1:0")]).is_ok());
    for (var, value) in [
        ("METRICS", "maybe"),
        ("METRICS_ADDRESS", "localhost"),
        ("METRICS_ADDRESS", "127.0.0.1"),
        ("METRICS_ADDRESS", "127.0.0.1:8000"),
        ("METRICS_ADDRESS", "0.0.0.0:8000"),
        ("METRICS_TOKEN", "short"),
        ("METRICS_TOKEN", "a token with spaces in it"),
    ] {
        let e = config(&[(var, value)]).unwrap_err();
        assert_eq!(e.var, var, "{value}");
    }
    // The token is a secret: no error repeats it, Debug never shows it.
    let e = config(&[("METRICS_TOKEN", "hunter2")]).unwrap_err();
    assert!(!e.to_string().contains("hunter2"), "{e}");
    let c = config(&[("METRICS_TOKEN", "0123456789abcdef-secret")]).unwrap();
    assert!(!format!("{c:?}").contains("0123456789abcdef-secret"));
}
