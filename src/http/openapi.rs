//! The OpenAPI document: paths come from the handlers themselves (utoipa-axum's router), this
//! adds the security schemes and the error responses every operation shares.

use utoipa::openapi::path::Operation;
use utoipa::openapi::schema::{
    AllOfBuilder, AnyOfBuilder, ArrayItems, Object, ObjectBuilder, Schema, SchemaType, Type,
};
use utoipa::openapi::security::{
    Flow, HttpAuthScheme, HttpBuilder, OAuth2, Password, Scopes, SecurityScheme,
};
use utoipa::openapi::{ContentBuilder, OpenApi, Ref, RefOr, ResponseBuilder};
use utoipa::{Modify, OpenApi as _};

use crate::config::Config;
use crate::domain::Name;

#[derive(utoipa::OpenApi)]
#[openapi(
    info(
        title = "auth-server",
        description = "Registration, login, JWT access and refresh tokens, sessions.\n\n\
            Every error is an RFC 9457 problem document (`application/problem+json`) with a stable `code`.\n\n\
            To try the protected endpoints here: **Authorize**, then log in under `oauth2` with your email as the username.",
    ),
    components(schemas(
        super::problem::Problem,
        crate::error::FieldError,
        crate::service::sessions::LogoutScope
    )),
    modifiers(&CommonResponses, &SecuritySchemes),
    tags(
        (name = "authentication", description = "Register, log in, refresh, log out"),
        (name = "current user", description = "The account of the access token's owner"),
        (name = "second factor", description = "TOTP, recovery codes and step-up (see POST /login/mfa)"),
        (name = "passkeys", description = "Passkeys (WebAuthn): register, list, rename, remove, prove one (step-up), drop the password; signing in with one is under authentication"),
        (name = "password reset and verification", description = "Links sent by mail"),
        (name = "administration", description = "Accounts, invitations, sessions, lockouts and security events, for superusers"),
        (name = "webhooks", description = "Security events sent to your endpoints, signed (Standard Webhooks), for superusers"),
        (name = "operations", description = "Health"),
    )
)]
struct ApiDoc;

pub fn base() -> OpenApi {
    ApiDoc::openapi()
}

/// Runs the modifiers again once the router has added the paths (they see no paths before).
pub fn finish(mut api: OpenApi) -> OpenApi {
    CommonResponses.modify(&mut api);
    SecuritySchemes.modify(&mut api);
    api
}

/// The request fields that take a new password: their `minLength` is the configured one.
const NEW_PASSWORDS: [(&str, &str); 3] = [
    ("RegisterRequest", "password"),
    ("ChangePasswordRequest", "new_password"),
    ("PasswordResetConfirm", "new_password"),
];

/// The request fields that take a display name (`domain::Name`), or a passkey's name (the same
/// rules, at most 64 characters).
const NAMES: [(&str, &str); 6] = [
    ("RegisterRequest", "name"),
    ("InvitationRequest", "name"),
    ("UpdateMeRequest", "name"),
    ("AdminUpdateRequest", "name"),
    ("RegisterPasskeyRequest", "name"),
    ("RenamePasskeyRequest", "name"),
];

/// What the document says that depends on more than the types: the configured
/// PASSWORD_MIN_LENGTH, and the names' pattern (which `#[schema]` takes only as a literal).
pub fn configure(mut api: OpenApi, config: &Config) -> OpenApi {
    for (schema, field) in NEW_PASSWORDS {
        if let Some(property) = property(&mut api, schema, field) {
            property.min_length = Some(config.accounts.password_min_length);
        }
    }
    for (schema, field) in NAMES {
        if let Some(property) = property(&mut api, schema, field) {
            property.pattern = Some(Name::PATTERN.to_string());
        }
    }
    email_change_needs_password(&mut api);
    for schema in AT_MOST_ONE_FACTOR {
        second_factor_rule(&mut api, schema, &FACTORS, false);
    }
    second_factor_rule(
        &mut api,
        "LoginMfaRequest",
        &[
            ("code", Type::String),
            ("recovery_code", Type::String),
            ("passkey", Type::Object),
        ],
        true,
    );
    event_types(&mut api);
    if !config.passkeys.enabled {
        without_passkeys(&mut api);
    }
    api
}

/// The event types (`service::audit::EventType::ALL`) as the `enum` of GET /events's `type`
/// and of `EventResponse.type`.
fn event_types(api: &mut OpenApi) {
    let names: Vec<serde_json::Value> = crate::service::audit::EventType::ALL
        .iter()
        .map(|k| serde_json::Value::from(k.as_str()))
        .collect();
    if let Some(property) = property(api, "EventResponse", "type") {
        property.enum_values = Some(names.clone());
    }
    let Some(get) = api
        .paths
        .paths
        .get_mut("/events")
        .and_then(|item| item.get.as_mut())
    else {
        return;
    };
    for parameter in get.parameters.iter_mut().flatten() {
        let RefOr::T(parameter) = parameter else {
            continue;
        };
        if parameter.name != "type" {
            continue;
        }
        if let Some(RefOr::T(Schema::Array(array))) = parameter.schema.as_mut()
            && let ArrayItems::RefOrSchema(items) = &mut array.items
            && let RefOr::T(Schema::Object(item)) = items.as_mut()
        {
            item.enum_values = Some(names.clone());
        }
    }
}

/// The request bodies that take an optional second factor: `code` or `recovery_code`, not both.
const AT_MOST_ONE_FACTOR: [&str; 6] = [
    "UpdateMeRequest",
    "DeleteMeRequest",
    "ChangePasswordRequest",
    "SecondFactorRequest",
    "StepUpRequest",
    "PasskeyChangeRequest",
];

const FACTORS: [(&str, Type); 2] = [("code", Type::String), ("recovery_code", Type::String)];

/// The fields of a second factor (`service::mfa::SecondFactor`: `code`, `recovery_code`, and at
/// POST /login/mfa `passkey`): never more than one, and, where `required`, exactly one. Null
/// counts as absent, as the server reads it. One alternative per field, in the order given: it
/// is there (where required), the others are null or absent.
fn second_factor_rule(api: &mut OpenApi, schema: &str, fields: &[(&str, Type)], required: bool) {
    let names: Vec<String> = fields.iter().map(|(f, _)| format!("`{f}`")).collect();
    let names = match names.split_last() {
        Some((last, [])) => last.clone(),
        Some((last, rest)) => format!("{} and {last}", rest.join(", ")),
        None => return,
    };
    let mut rule = AnyOfBuilder::new().description(Some(if required {
        format!("Exactly one of {names}.")
    } else {
        format!("At most one of {names}.")
    }));
    for (present, kind) in fields {
        let mut only = ObjectBuilder::new().schema_type(SchemaType::AnyValue);
        for (absent, _) in fields.iter().filter(|(f, _)| f != present) {
            only = only.property(*absent, ObjectBuilder::new().schema_type(Type::Null));
        }
        if required {
            only = only
                .property(*present, ObjectBuilder::new().schema_type(kind.clone()))
                .required(*present);
        }
        rule = rule.item(only);
    }
    add_rule(api, schema, rule.into());
}

/// PASSKEYS=false: the passkey routes are not served, so the document does not list them.
fn without_passkeys(api: &mut OpenApi) {
    let paths = &mut api.paths.paths;
    paths.retain(|path, _| {
        !(path.starts_with("/me/passkeys")
            || path.starts_with("/login/passkey")
            || path.starts_with("/login/mfa/passkey/"))
    });
    if let Some(item) = paths.get_mut("/me/password") {
        item.delete = None;
    }
}

/// `UpdateMeRequest`: a new `email` needs `current_password` (`service::accounts`), which
/// JSON Schema states as: `email` is null or absent, or `current_password` is a string. (The
/// server does not ask for it when the address is the account's own: no shape can tell.)
fn email_change_needs_password(api: &mut OpenApi) {
    let Some(schemas) = api.components.as_mut().map(|c| &mut c.schemas) else {
        return;
    };
    let Some(fields) = schemas.remove("UpdateMeRequest") else {
        return;
    };
    let no_new_email = ObjectBuilder::new()
        .schema_type(SchemaType::AnyValue)
        .property("email", ObjectBuilder::new().schema_type(Type::Null));
    let with_password = ObjectBuilder::new()
        .schema_type(SchemaType::AnyValue)
        .property(
            "current_password",
            ObjectBuilder::new().schema_type(Type::String),
        )
        .required("current_password");
    let rule = AnyOfBuilder::new()
        .description(Some("A new `email` needs `current_password`."))
        .item(no_new_email)
        .item(with_password);
    schemas.insert("UpdateMeRequest".to_string(), fields);
    add_rule(api, "UpdateMeRequest", rule.into());
}

/// Adds a rule to a component schema: it becomes (or stays) `allOf` its fields and its rules.
fn add_rule(api: &mut OpenApi, schema: &str, rule: RefOr<Schema>) {
    let Some(schemas) = api.components.as_mut().map(|c| &mut c.schemas) else {
        return;
    };
    let Some(existing) = schemas.remove(schema) else {
        return;
    };
    let combined = match existing {
        RefOr::T(Schema::AllOf(mut all)) => {
            all.items.push(rule);
            RefOr::T(Schema::AllOf(all))
        }
        fields => AllOfBuilder::new().item(fields).item(rule).into(),
    };
    schemas.insert(schema.to_string(), combined);
}

/// A property of a component schema, where both are inline objects.
fn property<'a>(api: &'a mut OpenApi, schema: &str, field: &str) -> Option<&'a mut Object> {
    let components = api.components.as_mut()?;
    let RefOr::T(Schema::Object(object)) = components.schemas.get_mut(schema)? else {
        return None;
    };
    match object.properties.get_mut(field)? {
        RefOr::T(Schema::Object(property)) => Some(property),
        _ => None,
    }
}

struct SecuritySchemes;

impl Modify for SecuritySchemes {
    fn modify(&self, api: &mut OpenApi) {
        let components = api.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("JWT")
                    .description(Some("An access token from /login or /refresh"))
                    .build(),
            ),
        );
        components.add_security_scheme(
            "oauth2",
            SecurityScheme::OAuth2(OAuth2::with_description(
                [Flow::Password(Password::new("/login", Scopes::new()))],
                "Log in with your email as the username",
            )),
        );
    }
}

struct CommonResponses;

fn problem_response(description: &str) -> utoipa::openapi::RefOr<utoipa::openapi::Response> {
    ResponseBuilder::new()
        .description(description)
        .content(
            "application/problem+json",
            ContentBuilder::new()
                .schema(Some(Ref::from_schema_name("Problem")))
                .build(),
        )
        .build()
        .into()
}

fn add_if_missing(op: &mut Operation, status: &str, description: &str) {
    op.responses
        .responses
        .entry(status.to_string())
        .or_insert_with(|| problem_response(description));
}

impl Modify for CommonResponses {
    fn modify(&self, api: &mut OpenApi) {
        for (path, item) in api.paths.paths.iter_mut() {
            let limited = [
                "/login",
                "/register",
                "/refresh",
                "/password-reset/",
                "/verify/",
            ]
            .iter()
            .any(|p| path.starts_with(p));
            for op in [
                &mut item.get,
                &mut item.put,
                &mut item.post,
                &mut item.patch,
                &mut item.delete,
            ]
            .into_iter()
            .flatten()
            {
                if op.request_body.is_some() {
                    add_if_missing(
                        op,
                        "413",
                        "PAYLOAD_TOO_LARGE: the body is over the size limit",
                    );
                    add_if_missing(op, "415", "UNSUPPORTED_MEDIA_TYPE: the body is not JSON");
                    add_if_missing(
                        op,
                        "422",
                        "VALIDATION_FAILED: the body or a field is invalid; `errors` names each field",
                    );
                }
                let secured = op.security.as_ref().is_some_and(|s| !s.is_empty());
                if secured {
                    add_if_missing(
                        op,
                        "401",
                        "UNAUTHORIZED: missing, malformed, expired or revoked access token",
                    );
                }
                if limited {
                    add_if_missing(
                        op,
                        "429",
                        "TOO_MANY_REQUESTS: over the per-client limit, or (login) the address is locked after failed attempts; see Retry-After",
                    );
                }
                add_if_missing(op, "500", "INTERNAL: an unexpected error");
                add_if_missing(
                    op,
                    "503",
                    "SERVICE_UNAVAILABLE: the database does not answer, or the server is busy",
                );
            }
        }
    }
}
