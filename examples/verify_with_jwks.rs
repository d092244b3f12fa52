//! A resource server's view: verify an access token from auth-server with nothing but its
//! public keys, found through discovery, as any JWT middleware would.
//!
//! ```sh
//! cargo run --example verify_with_jwks -- http://127.0.0.1:8000 "$ACCESS_TOKEN"
//! ```
//!
//! The server must sign with an asymmetric algorithm (ALGORITHM=RS256, ES256 or EdDSA); with an
//! HS algorithm its key set is empty and tokens are verified with the shared SECRET_KEY instead.

use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{DecodingKey, Validation, decode, decode_header};
use serde::Deserialize;

/// The claims auth-server puts in an access token.
#[derive(Debug, Deserialize)]
pub struct AccessClaims {
    pub sub: String,
    pub sid: String,
    pub exp: i64,
    pub iat: i64,
    pub iss: String,
    pub aud: String,
    pub jti: String,
}

#[derive(Deserialize)]
struct Discovery {
    issuer: String,
    jwks_uri: String,
}

/// Verifies `token` with the key set published by the server at `base_url`, expecting
/// `audience`. In a real service, cache the key set (the server allows five minutes) and fetch
/// it again when a token names a `kid` you do not have.
pub async fn verify(
    base_url: &str,
    token: &str,
    audience: &str,
) -> Result<AccessClaims, Box<dyn std::error::Error>> {
    let client = reqwest::Client::new();
    let discovery: Discovery = client
        .get(format!("{base_url}/.well-known/openid-configuration"))
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?;
    let keys: JwkSet = client
        .get(&discovery.jwks_uri)
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?;

    // The key the token names; the algorithm comes from the key, never from the token.
    let header = decode_header(token)?;
    if header.typ.as_deref() != Some("at+jwt") {
        return Err("not an access token".into());
    }
    let kid = header.kid.ok_or("the token names no key")?;
    let jwk = keys
        .find(&kid)
        .ok_or("unknown key: fetch the key set again")?;
    let algorithm = jwk.common.key_algorithm.ok_or("the key has no alg")?;
    let algorithm = algorithm.to_string().parse()?;
    let mut validation = Validation::new(algorithm);
    validation.set_issuer(&[&discovery.issuer]);
    validation.set_audience(&[audience]);
    validation.set_required_spec_claims(&["exp", "iat", "iss", "aud", "sub"]);
    let data = decode::<AccessClaims>(token, &DecodingKey::from_jwk(jwk)?, &validation)?;
    Ok(data.claims)
}

#[tokio::main]
async fn main() {
    let mut args = std::env::args().skip(1);
    let (Some(base_url), Some(token)) = (args.next(), args.next()) else {
        eprintln!("usage: verify_with_jwks <auth-server URL> <access token> [audience]");
        std::process::exit(2);
    };
    let audience = args.next().unwrap_or_else(|| "auth-server".to_string());
    match verify(&base_url, &token, &audience).await {
        Ok(claims) => println!(
            "valid: user {} (session {}), expires at {}",
            claims.sub, claims.sid, claims.exp
        ),
        Err(e) => {
            eprintln!("invalid: {e}");
            std::process::exit(1);
        }
    }
}
