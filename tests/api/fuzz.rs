//! Property-based requests to the live server, shaped like real traffic as well as noise:
//! whatever is sent, the answer is never a 5xx and every error is a problem document; and no
//! forged or guessed token ever works.
//!
//! Failing cases are kept in `proptest-regressions/tests/api/fuzz.txt` (committed), and tried
//! first on every run.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use proptest::prelude::*;
use proptest::test_runner::FileFailurePersistence;
use serde_json::{Value, json};

use crate::helpers::*;

/// The properties' configuration: `cases` cases, failures kept in the committed file.
fn config(cases: u32) -> ProptestConfig {
    ProptestConfig {
        cases,
        failure_persistence: Some(Box::new(FileFailurePersistence::Direct(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/proptest-regressions/tests/api/fuzz.txt"
        )))),
        ..ProptestConfig::default()
    }
}

/// Email addresses: well-formed (ASCII and internationalised, any case, spaces around) and one
/// slip away from it (no `@`, two, nothing on one side, a trailing dot, too long).
fn emails() -> impl Strategy<Value = String> {
    let address = (
        "[a-zA-Z0-9]([a-zA-Z0-9._+-]{0,20}[a-zA-Z0-9])?|[a-zA-Zéüñø]{1,10}",
        "[a-z0-9]{1,12}\\.(com|org|example)|(bücher|ñandú|пример)\\.example|\\[192\\.0\\.2\\.1\\]",
    )
        .prop_map(|(local, domain)| format!("{local}@{domain}"));
    prop_oneof![
        3 => address.clone(),
        1 => address.clone().prop_map(|a| format!("  {}\t", a.to_uppercase())),
        1 => address.clone().prop_map(|a| a.replacen('@', "", 1)),
        1 => address.clone().prop_map(|a| a.replacen('@', "@@", 1)),
        1 => address.clone().prop_map(|a| format!("{a}.")),
        1 => "[a-z]{1,10}@|@[a-z]{1,10}\\.example",
        1 => address.prop_map(|a| format!("{}{a}", "x".repeat(250))),
    ]
}

/// Passwords: passphrases with spaces, Unicode and emoji, spaces at either end, long ones.
fn passwords() -> impl Strategy<Value = String> {
    prop_oneof![
        2 => "([a-zäöüéñ]{2,9} ){1,6}[a-z]{2,9}",
        1 => "[ -~]{0,140}",
        1 => "\\PC{0,140}",
        1 => "[😀-🙏]{1,40}",
        1 => " {1,3}[a-zA-Z0-9 ]{4,20} {1,3}",
        1 => "\\PC{120,200}",
    ]
}

/// Tokens shaped like JWTs: three base64url parts, a header with any of the usual algorithms
/// (and `none`), claims of the server's shape, a signature of random bytes or none.
fn jwt_shaped() -> impl Strategy<Value = String> {
    let header = (
        prop::sample::select(&["none", "HS256", "HS512", "RS256", "ES256", "EdDSA", ""][..]),
        prop::sample::select(&["at+jwt", "refresh+jwt", "JWT", ""][..]),
        proptest::option::of("[a-zA-Z0-9./_-]{0,24}"),
    )
        .prop_map(|(alg, typ, kid)| json!({"alg": alg, "typ": typ, "kid": kid}).to_string());
    let claims = (
        "[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}",
        "[0-9a-f]{32}",
        any::<i64>(),
        prop::sample::select(&["auth-server", "someone-else", ""][..]),
    )
        .prop_map(|(sub, sid, exp, iss)| {
            json!({"sub": sub, "sid": sid, "exp": exp, "iat": 0, "iss": iss, "aud": iss})
                .to_string()
        });
    let signature = prop_oneof![
        Just(Vec::new()),
        proptest::collection::vec(any::<u8>(), 32..=64)
    ];
    (header, claims, signature).prop_map(|(header, claims, signature)| {
        format!(
            "{}.{}.{}",
            URL_SAFE_NO_PAD.encode(header),
            URL_SAFE_NO_PAD.encode(claims),
            URL_SAFE_NO_PAD.encode(signature)
        )
    })
}

/// Strings shaped like one-time (reset, verification) tokens: 43 base64url characters (256
/// bits), and near misses in length.
fn one_time_token_shaped() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => "[A-Za-z0-9_-]{43}",
        1 => "[A-Za-z0-9_-]{0,60}",
        1 => "[A-Za-z0-9_=+/-]{43,44}",
    ]
}

/// `X-Forwarded-For` lines: chains of real IPv4 and IPv6 addresses (with ports, in brackets,
/// IPv4-mapped), and noise.
fn forwarded_for_lines() -> impl Strategy<Value = Vec<String>> {
    let entry = prop_oneof![
        3 => any::<std::net::Ipv4Addr>().prop_map(|ip| ip.to_string()),
        2 => any::<std::net::Ipv6Addr>().prop_map(|ip| ip.to_string()),
        1 => (any::<std::net::Ipv4Addr>(), any::<u16>()).prop_map(|(ip, p)| format!("{ip}:{p}")),
        1 => (any::<std::net::Ipv6Addr>(), any::<u16>()).prop_map(|(ip, p)| format!("[{ip}]:{p}")),
        1 => any::<std::net::Ipv4Addr>().prop_map(|ip| ip.to_ipv6_mapped().to_string()),
        1 => "[0-9a-f.:\\[\\] ]{0,20}|unknown",
    ];
    proptest::collection::vec(
        proptest::collection::vec(entry, 1..5).prop_map(|entries| entries.join(", ")),
        0..3,
    )
}

fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(Value::from),
        ".{0,40}".prop_map(Value::String),
        emails().prop_map(Value::String),
        passwords().prop_map(Value::String),
        jwt_shaped().prop_map(Value::String),
        one_time_token_shaped().prop_map(Value::String),
        prop_oneof![
            Just("email"),
            Just("password"),
            Just("name"),
            Just("token"),
            Just("refresh_token")
        ]
        .prop_map(|s| Value::String(s.to_string())),
    ];
    leaf.prop_recursive(3, 24, 6, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            proptest::collection::btree_map(
                prop_oneof![
                    Just("email".to_string()),
                    Just("password".to_string()),
                    Just("name".to_string()),
                    Just("new_password".to_string()),
                    Just("current_password".to_string()),
                    Just("refresh_token".to_string()),
                    Just("token".to_string()),
                    Just("is_superuser".to_string()),
                    "[a-z_]{1,10}",
                ],
                inner,
                0..5
            )
            .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

#[derive(Debug, Clone)]
enum Body {
    Json(Value),
    Raw(Vec<u8>),
    Empty,
}

fn body() -> impl Strategy<Value = Body> {
    prop_oneof![
        4 => json_value().prop_map(Body::Json),
        1 => proptest::collection::vec(any::<u8>(), 0..200).prop_map(Body::Raw),
        1 => Just(Body::Empty),
    ]
}

/// The `Authorization` a request carries.
#[derive(Debug, Clone)]
enum Auth {
    None,
    /// The real access token of a signed-up user.
    Real,
    Bearer(String),
}

fn auth() -> impl Strategy<Value = Auth> {
    prop_oneof![
        1 => Just(Auth::None),
        2 => Just(Auth::Real),
        1 => jwt_shaped().prop_map(Auth::Bearer),
        1 => one_time_token_shaped().prop_map(Auth::Bearer),
    ]
}

const PATHS: &[&str] = &[
    "/register",
    "/login",
    "/refresh",
    "/logout",
    "/logout?scope=others",
    "/logout?scope=%00",
    "/me",
    "/me/password",
    "/me/sessions",
    "/me/sessions/x",
    "/password-reset/request",
    "/password-reset/confirm",
    "/verify/request",
    "/verify/confirm",
    "/users",
    "/users?limit=-5&offset=x",
    "/users/abc",
    "/health",
];

const CONTENT_TYPES: &[Option<&str>] = &[
    None,
    Some("application/json"),
    Some("application/x-www-form-urlencoded"),
    Some("text/plain"),
    Some("application/json; charset=utf-16"),
    Some("multipart/form-data; boundary=x"),
];

/// Rule: no request, however shaped (real-looking addresses, passwords, tokens and forwarded
/// chains as well as noise), makes the server fail: never a 5xx, and every error a problem
/// document.
#[test]
fn random_requests_never_get_a_5xx() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let (app, token) = rt.block_on(async {
        // Behind a trusted proxy (the test's own address), so the forwarded chains are read.
        let app = spawn_app_with(&[("TRUSTED_PROXIES", "127.0.0.1")]).await;
        let (_, tokens) = app.signed_up(&unique_email()).await;
        (app, tokens.access)
    });
    proptest!(config(300), |(
        path in proptest::sample::select(PATHS),
        method in proptest::sample::select(&["GET", "POST", "PUT", "PATCH", "DELETE"][..]),
        content_type in proptest::sample::select(CONTENT_TYPES),
        body in body(),
        auth in auth(),
        forwarded_for in forwarded_for_lines(),
    )| {
        let status_and_type = rt.block_on(async {
            let mut request = app.client.request(method.parse().unwrap(), app.url(path));
            request = match &auth {
                Auth::None => request,
                Auth::Real => request.bearer_auth(&token),
                Auth::Bearer(t) => request.bearer_auth(t),
            };
            for line in &forwarded_for {
                request = request.header("x-forwarded-for", line);
            }
            if let Some(ct) = content_type {
                request = request.header("content-type", ct);
            }
            request = match &body {
                Body::Json(v) => request.body(serde_json::to_vec(v).unwrap()),
                Body::Raw(bytes) => request.body(bytes.clone()),
                Body::Empty => request,
            };
            let response = request.send().await.unwrap();
            let content_type = response
                .headers()
                .get("content-type")
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_string();
            (response.status().as_u16(), content_type)
        });
        let content_type_sent = content_type;
        let (status, content_type) = status_and_type;
        prop_assert!(status < 500, "{method} {path} {content_type:?} {body:?} -> {status}");
        // A form posted to /register is the registration page's (HTML, see pages.rs).
        let page_form = method == "POST"
            && path == "/register"
            && content_type_sent == Some("application/x-www-form-urlencoded");
        if status >= 400 && path != "/health" && !page_form {
            prop_assert_eq!(content_type, "application/problem+json", "{} {} -> {}", method, path, status);
        }
    });
    drop(app);
}

/// Tokens made from a real one: its claims with a random signature, with `alg: none` and no
/// signature, with one character of its signature changed, with its claims changed under its
/// signature; and JWT-shaped tokens from nowhere.
fn forged_from(real: String) -> impl Strategy<Value = String> {
    let parts: Vec<String> = real.split('.').map(str::to_string).collect();
    let (header, claims, signature) = (parts[0].clone(), parts[1].clone(), parts[2].clone());
    let decoded: Value = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(&claims).unwrap()).unwrap();
    let typ =
        serde_json::from_slice::<Value>(&URL_SAFE_NO_PAD.decode(&header).unwrap()).unwrap()["typ"]
            .clone();
    prop_oneof![
        proptest::collection::vec(any::<u8>(), 32..=64).prop_map({
            let (header, claims) = (header.clone(), claims.clone());
            move |bytes| format!("{header}.{claims}.{}", URL_SAFE_NO_PAD.encode(bytes))
        }),
        Just(format!(
            "{}.{claims}.",
            URL_SAFE_NO_PAD.encode(json!({"alg": "none", "typ": typ}).to_string())
        )),
        (any::<prop::sample::Index>(), "[A-Za-z0-9_-]").prop_filter_map("a different character", {
            let real = real.clone();
            let start = header.len() + claims.len() + 2;
            let length = signature.len();
            move |(at, c)| {
                // Not the last character: its low bits are padding.
                let i = start + at.index(length - 1);
                let c = c.chars().next().unwrap();
                (real.as_bytes()[i] != c as u8).then(|| {
                    let mut forged = real.clone().into_bytes();
                    forged[i] = c as u8;
                    String::from_utf8(forged).unwrap()
                })
            }
        }),
        (1i64..1_000_000, any::<bool>()).prop_map({
            let (header, signature) = (header.clone(), signature.clone());
            move |(later, other_user)| {
                let mut changed = decoded.clone();
                changed["exp"] = json!(changed["exp"].as_i64().unwrap() + later);
                if other_user {
                    changed["sub"] = json!(uuid::Uuid::new_v4().to_string());
                }
                format!(
                    "{header}.{}.{signature}",
                    URL_SAFE_NO_PAD.encode(changed.to_string())
                )
            }
        }),
        jwt_shaped(),
    ]
}

/// Rule: a token the server did not issue never works, however close to a real one: an access
/// token forged from a real one (its claims re-signed, `alg: none`, its signature or claims
/// changed) is refused at `/me` (401 UNAUTHORIZED), a refresh token likewise at `/refresh`
/// (401 INVALID_TOKEN), and a guessed one-time token at the reset and verification
/// confirmations (400 INVALID_TOKEN; an empty one 422).
#[test]
fn forged_and_guessed_tokens_never_work() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let (app, tokens) = rt.block_on(async {
        let app = spawn_app().await;
        let (_, tokens) = app.signed_up(&unique_email()).await;
        (app, tokens)
    });
    proptest!(config(150), |(
        access in forged_from(tokens.access.clone()),
        refresh in forged_from(tokens.refresh.clone()),
        one_time in one_time_token_shaped(),
    )| {
        let answers = rt.block_on(async {
            let me = app.me(&access).await;
            let refreshed = app.refresh(&refresh).await;
            let reset = app.confirm_reset(&one_time, "a new passphrase for nobody").await;
            let verified = app.post_json("/verify/confirm", &json!({"token": one_time})).await;
            let mut answers = Vec::new();
            for response in [me, refreshed, reset, verified] {
                let status = response.status().as_u16();
                let body: Value = response.json().await.unwrap_or_default();
                answers.push((status, body["code"].as_str().unwrap_or_default().to_string()));
            }
            answers
        });
        prop_assert_eq!(&answers[0], &(401, "UNAUTHORIZED".to_string()), "access {}", access);
        prop_assert_eq!(&answers[1], &(401, "INVALID_TOKEN".to_string()), "refresh {}", refresh);
        // (An empty token is no token: 422, the field required.)
        let refused = if one_time.is_empty() {
            (422, "VALIDATION_FAILED".to_string())
        } else {
            (400, "INVALID_TOKEN".to_string())
        };
        prop_assert_eq!(&answers[2], &refused, "reset {:?}", one_time);
        prop_assert_eq!(&answers[3], &refused, "verify {:?}", one_time);
    });
    // The real tokens still work: what was refused was refused for being forged.
    rt.block_on(async {
        assert_eq!(app.me(&tokens.access).await.status(), 200);
        assert_eq!(app.refresh(&tokens.refresh).await.status(), 200);
    });
    drop(app);
}
