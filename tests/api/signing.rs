//! Asymmetric signing: tokens verified by the JWKS alone, algorithm confusion refused, key
//! rotation without logging anyone out.

use std::path::{Path, PathBuf};
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use reqwest::StatusCode;
use serde_json::Value;

use crate::helpers::*;

#[allow(dead_code)]
#[path = "../../examples/verify_with_jwks.rs"]
mod example;

struct KeyDir(PathBuf);

impl KeyDir {
    fn new() -> Self {
        let dir = std::env::temp_dir().join(format!(
            "auth-server-keys-{}",
            uuid::Uuid::new_v4().simple()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        Self(dir)
    }

    /// A new private key, made by `auth-server generate-key`.
    fn generate(&self, algorithm: &str) -> PathBuf {
        let path = self
            .0
            .join(format!("{algorithm}-{}.pem", uuid::Uuid::new_v4().simple()));
        let mut command = server_command();
        command
            .args(["generate-key", "--algorithm", algorithm, "--out"])
            .arg(&path);
        let output = run_to_end(command, Duration::from_secs(60));
        assert!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o600
        );
        path
    }

    fn write(&self, name: &str, contents: &str) -> PathBuf {
        let path = self.0.join(name);
        std::fs::write(&path, contents).unwrap();
        path
    }
}

impl Drop for KeyDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn header_of(token: &str) -> Value {
    serde_json::from_slice(
        &URL_SAFE_NO_PAD
            .decode(token.split('.').next().unwrap())
            .unwrap(),
    )
    .unwrap()
}

async fn jwks(app: &TestApp) -> (JwkSet, String) {
    let response = app
        .client
        .get(app.url("/.well-known/jwks.json"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let cache = response.headers()["cache-control"]
        .to_str()
        .unwrap()
        .to_string();
    (response.json().await.unwrap(), cache)
}

/// The SubjectPublicKeyInfo PEM of the key a JWK describes: what an attacker would MAC with.
fn public_pem(path: &Path) -> String {
    use ed25519_dalek::pkcs8::{DecodePrivateKey, EncodePublicKey};
    let text = std::fs::read_to_string(path).unwrap();
    let lf = ed25519_dalek::pkcs8::spki::der::pem::LineEnding::LF;
    if let Ok(k) = ed25519_dalek::SigningKey::from_pkcs8_pem(&text) {
        return k.verifying_key().to_public_key_pem(lf).unwrap();
    }
    if let Ok(k) = p256::SecretKey::from_pkcs8_pem(&text) {
        return k.public_key().to_public_key_pem(lf).unwrap();
    }
    let k = rsa::RsaPrivateKey::from_pkcs8_pem(&text).unwrap();
    rsa::RsaPublicKey::from(&k).to_public_key_pem(lf).unwrap()
}

#[tokio::test]
async fn each_algorithm_signs_tokens_that_the_jwks_alone_verifies() {
    let keys = KeyDir::new();
    for (name, algorithm) in [
        ("EdDSA", Algorithm::EdDSA),
        ("ES256", Algorithm::ES256),
        ("RS256", Algorithm::RS256),
    ] {
        let key = keys.generate(name);
        let app = spawn_app_with(&[
            ("ALGORITHM", name),
            ("PRIVATE_KEY_FILE", key.to_str().unwrap()),
            ("API_URL", "http://127.0.0.1:1"),
        ])
        .await;
        let (user, tokens) = app.signed_up(&unique_email()).await;
        let header = header_of(&tokens.access);
        assert_eq!(header["alg"], name);
        assert_eq!(header["typ"], "at+jwt");

        let (set, cache) = jwks(&app).await;
        assert!(cache.contains("max-age="), "{cache}");
        assert_eq!(set.keys.len(), 1);
        let jwk = &set.keys[0];
        assert_eq!(
            jwk.common.key_id.as_deref(),
            header["kid"].as_str(),
            "{name}"
        );
        let raw: Value = app
            .client
            .get(app.url("/.well-known/jwks.json"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(raw["keys"][0]["use"], "sig");
        assert_eq!(raw["keys"][0]["alg"], name);
        assert!(
            raw["keys"][0].get("d").is_none(),
            "a private member is published"
        );

        // As a resource server: the JWK, the algorithm pinned, iss and aud checked.
        let mut validation = Validation::new(algorithm);
        validation.set_issuer(&["auth-server"]);
        validation.set_audience(&["auth-server"]);
        let data = jsonwebtoken::decode::<Value>(
            &tokens.access,
            &DecodingKey::from_jwk(jwk).unwrap(),
            &validation,
        )
        .unwrap();
        assert_eq!(data.claims["sub"], user["id"]);
        assert_eq!(app.me(&tokens.access).await.status(), StatusCode::OK);
        assert_eq!(app.refresh(&tokens.refresh).await.status(), StatusCode::OK);

        // Algorithm confusion: HS256 "signed" with the public key's bytes.
        let claims = claims_of(&tokens.access);
        let mut hs = Header::new(Algorithm::HS256);
        hs.typ = Some("at+jwt".into());
        hs.kid = header["kid"].as_str().map(str::to_string);
        for secret in [
            public_pem(&key).into_bytes(),
            serde_json::to_vec(&raw["keys"][0]).unwrap(),
        ] {
            let confused =
                jsonwebtoken::encode(&hs, &claims, &EncodingKey::from_secret(&secret)).unwrap();
            assert_problem(app.me(&confused).await, 401, "UNAUTHORIZED").await;
        }
    }
}

#[tokio::test]
async fn the_readme_example_verifies_a_token_through_discovery() {
    let keys = KeyDir::new();
    let key = keys.generate("EdDSA");
    // Discovery names this server's own address: the port the server took (port 0) is read
    // back, and the server started again on it with API_URL naming it.
    let app = spawn_app_with(&[
        ("ALGORITHM", "EdDSA"),
        ("PRIVATE_KEY_FILE", key.to_str().unwrap()),
    ])
    .await;
    let port = app.address.rsplit(':').next().unwrap().to_string();
    let api_url = app.address.clone();
    let app = app
        .restart(&[("PORT", port.as_str()), ("API_URL", api_url.as_str())])
        .await;
    let (user, tokens) = app.signed_up(&unique_email()).await;
    let discovery: Value = app
        .client
        .get(app.url("/.well-known/openid-configuration"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(discovery["issuer"], "auth-server");
    assert_eq!(
        discovery["jwks_uri"],
        format!("{}/.well-known/jwks.json", app.address)
    );
    assert_eq!(
        discovery["token_endpoint"],
        format!("{}/login", app.address)
    );
    assert_eq!(
        discovery["id_token_signing_alg_values_supported"],
        serde_json::json!(["EdDSA"])
    );

    let claims = example::verify(&app.address, &tokens.access, "auth-server")
        .await
        .unwrap();
    assert_eq!(claims.sub, user["id"].as_str().unwrap());
    assert!(
        example::verify(&app.address, &tokens.access, "another-service")
            .await
            .is_err()
    );
    assert!(
        example::verify(&app.address, &tokens.refresh, "auth-server")
            .await
            .is_err()
    );
}

#[tokio::test]
async fn a_rotation_keeps_old_tokens_working_until_the_old_key_is_removed() {
    let keys = KeyDir::new();
    let old = keys.generate("EdDSA");
    let new = keys.generate("ES256");
    let app = spawn_app_with(&[
        ("ALGORITHM", "EdDSA"),
        ("PRIVATE_KEY_FILE", old.to_str().unwrap()),
    ])
    .await;
    let (_, before) = app.signed_up(&unique_email()).await;
    let old_kid = header_of(&before.access)["kid"]
        .as_str()
        .unwrap()
        .to_string();

    // Step 2: the new key signs; the old one, as a public key file, still verifies.
    let old_public = keys.write("old.pub.pem", &public_pem(&old));
    let app = app
        .restart(&[
            ("ALGORITHM", "ES256"),
            ("PRIVATE_KEY_FILE", new.to_str().unwrap()),
            ("PREVIOUS_PUBLIC_KEY_FILES", old_public.to_str().unwrap()),
        ])
        .await;
    assert_eq!(app.me(&before.access).await.status(), StatusCode::OK);
    let (set, _) = jwks(&app).await;
    let kids: Vec<_> = set
        .keys
        .iter()
        .map(|k| k.common.key_id.clone().unwrap())
        .collect();
    assert_eq!(kids.len(), 2);
    assert_eq!(kids[1], old_kid);
    let after = Tokens::from(
        app.refresh(&before.refresh)
            .await
            .json::<Value>()
            .await
            .unwrap(),
    );
    assert_eq!(header_of(&after.access)["alg"], "ES256");
    assert_eq!(header_of(&after.access)["kid"], kids[0].as_str());
    let discovery: Value = app
        .client
        .get(app.url("/.well-known/openid-configuration"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        discovery["id_token_signing_alg_values_supported"],
        serde_json::json!(["ES256", "EdDSA"])
    );

    // Step 3: the old key is removed; its tokens stop working, the new ones go on.
    let app = app.restart(&[("PREVIOUS_PUBLIC_KEY_FILES", "")]).await;
    assert_problem(app.me(&before.access).await, 401, "UNAUTHORIZED").await;
    assert_eq!(app.me(&after.access).await.status(), StatusCode::OK);
    assert_eq!(jwks(&app).await.0.keys.len(), 1);
}

#[tokio::test]
async fn with_an_hs_algorithm_the_key_set_is_empty() {
    let app = spawn_app().await;
    let (set, cache) = jwks(&app).await;
    assert!(set.keys.is_empty());
    assert!(cache.contains("max-age"));
    let discovery: Value = app
        .client
        .get(app.url("/.well-known/openid-configuration"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        discovery["id_token_signing_alg_values_supported"],
        serde_json::json!(["HS256"])
    );
}

#[test]
fn missing_unreadable_or_mismatched_keys_stop_the_server() {
    let keys = KeyDir::new();
    let rsa = keys.generate("RS256");
    let garbage = keys.write(
        "garbage.pem",
        "-----BEGIN PRIVATE KEY-----\nnot a key\n-----END PRIVATE KEY-----\n",
    );
    for (algorithm, file, var) in [
        ("ES256", Some(rsa.to_str().unwrap()), "PRIVATE_KEY_FILE"),
        ("EdDSA", Some("/nonexistent/key.pem"), "PRIVATE_KEY_FILE"),
        ("RS256", None, "PRIVATE_KEY_FILE"),
        ("EdDSA", Some(garbage.to_str().unwrap()), "PRIVATE_KEY_FILE"),
        ("HS256", Some(rsa.to_str().unwrap()), "PRIVATE_KEY_FILE"),
    ] {
        let mut command = server_command();
        command
            .env("ALGORITHM", algorithm)
            .env("DATABASE_URL", "sqlite::memory:")
            .env_remove("PRIVATE_KEY_FILE");
        if let Some(f) = file {
            command.env("PRIVATE_KEY_FILE", f);
        }
        let output = run_to_end(command, Duration::from_secs(30));
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(!output.status.success(), "{algorithm} {file:?}");
        assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
        assert!(stderr.contains(var), "{stderr}");
    }
    let mut command = server_command();
    command
        .env("PREVIOUS_PUBLIC_KEY_FILES", garbage.to_str().unwrap())
        .env("DATABASE_URL", "sqlite::memory:");
    let output = run_to_end(command, Duration::from_secs(30));
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("PREVIOUS_PUBLIC_KEY_FILES"));
}
