//! Property-based requests to the live server: whatever is sent, the answer is never a 5xx and
//! every error is a problem document.

use proptest::prelude::*;
use serde_json::Value;

use crate::helpers::*;

fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(Value::from),
        ".{0,40}".prop_map(Value::String),
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

#[test]
fn random_requests_never_get_a_5xx() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let (app, token) = rt.block_on(async {
        let app = spawn_app().await;
        let (_, tokens) = app.signed_up(&unique_email()).await;
        (app, tokens.access)
    });
    let config = ProptestConfig {
        cases: 300,
        failure_persistence: None,
        ..ProptestConfig::default()
    };
    proptest!(config, |(
        path in proptest::sample::select(PATHS),
        method in proptest::sample::select(&["GET", "POST", "PUT", "PATCH", "DELETE"][..]),
        content_type in proptest::sample::select(CONTENT_TYPES),
        body in body(),
        authenticated in any::<bool>(),
    )| {
        let status_and_type = rt.block_on(async {
            let mut request = app.client.request(method.parse().unwrap(), app.url(path));
            if authenticated {
                request = request.bearer_auth(&token);
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
        let (status, content_type) = status_and_type;
        prop_assert!(status < 500, "{method} {path} {content_type:?} {body:?} -> {status}");
        if status >= 400 && path != "/health" {
            prop_assert_eq!(content_type, "application/problem+json", "{} {} -> {}", method, path, status);
        }
    });
    drop(app);
}
