//! GET /.well-known/jwks.json and /.well-known/openid-configuration: what resource servers
//! need to verify access tokens without holding any secret. Cacheable, unlike the rest of the API.

use axum::Json;
use axum::extract::State;
use serde::Serialize;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::state::AppState;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(jwks))
        .routes(routes!(openid_configuration))
}

/// A JWK Set (RFC 7517).
#[derive(Debug, Serialize, ToSchema)]
pub struct JwkSet {
    /// The public keys that verify access tokens: the current one first, then the retired ones
    /// that still verify. Each has `kty`, `kid` (its RFC 7638 thumbprint), `use: sig` and `alg`.
    #[schema(value_type = Vec<Object>)]
    pub keys: Vec<serde_json::Value>,
}

/// The public signing keys: empty with an HS algorithm (a shared secret is never published).
#[utoipa::path(
    get, path = "/.well-known/jwks.json", tag = "operations",
    responses((status = 200, description = "The key set; cacheable for 5 minutes", body = JwkSet))
)]
async fn jwks(State(state): State<AppState>) -> Json<JwkSet> {
    Json(JwkSet {
        keys: state.tokens.public_keys().iter().map(|k| k.jwk()).collect(),
    })
}

/// OpenID Connect discovery metadata (the fields that apply to this server).
#[derive(Debug, Serialize, ToSchema)]
pub struct Discovery {
    /// The `iss` of every access token (JWT_ISSUER).
    pub issuer: String,
    pub jwks_uri: String,
    /// Where to log in (the OAuth2 password grant, or JSON).
    pub token_endpoint: String,
    pub grant_types_supported: Vec<&'static str>,
    pub token_endpoint_auth_methods_supported: Vec<&'static str>,
    pub response_types_supported: Vec<&'static str>,
    pub subject_types_supported: Vec<&'static str>,
    /// The algorithms of the access tokens (the current key's, and the retired keys').
    pub id_token_signing_alg_values_supported: Vec<&'static str>,
    pub token_endpoint_auth_signing_alg_values_supported: Vec<&'static str>,
    pub claims_supported: Vec<&'static str>,
}

/// Discovery metadata, so that off-the-shelf JWT middleware can find the keys.
#[utoipa::path(
    get, path = "/.well-known/openid-configuration", tag = "operations",
    responses((status = 200, description = "The metadata; cacheable for 5 minutes", body = Discovery))
)]
async fn openid_configuration(State(state): State<AppState>) -> Json<Discovery> {
    let config = &state.config;
    // The configured algorithm, then those of the retired keys that still verify.
    let mut algorithms = vec![config.tokens.algorithm.name()];
    for key in state.tokens.public_keys() {
        let name = match key.algorithm() {
            jsonwebtoken::Algorithm::RS256 => "RS256",
            jsonwebtoken::Algorithm::ES256 => "ES256",
            _ => "EdDSA",
        };
        if !algorithms.contains(&name) {
            algorithms.push(name);
        }
    }
    let api_url = config.server.api_url();
    Json(Discovery {
        issuer: config.tokens.jwt_issuer.clone(),
        jwks_uri: format!("{api_url}/.well-known/jwks.json"),
        token_endpoint: format!("{api_url}/login"),
        grant_types_supported: vec!["password", "refresh_token"],
        token_endpoint_auth_methods_supported: vec!["none"],
        response_types_supported: vec!["token"],
        subject_types_supported: vec!["public"],
        id_token_signing_alg_values_supported: algorithms.clone(),
        token_endpoint_auth_signing_alg_values_supported: algorithms,
        claims_supported: vec!["sub", "sid", "iss", "aud", "exp", "iat", "jti"],
    })
}
