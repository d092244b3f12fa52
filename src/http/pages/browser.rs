//! The browser: its session cookie, the tokens its forms carry, where its posts come from, and
//! where it may be sent after signing in.
//!
//! - **The session cookie** holds the refresh token of a session opened by the sign-in (a
//!   normal session row: listed, revoked and ended like any other).
//!   `service::refresh::browser_session` checks it on every page as /refresh would, without
//!   rotating it. `__Host-auth_session` with `Secure` when this server's own address (API_URL,
//!   else PUBLIC_URL) is https, `auth_session` otherwise; always HttpOnly, SameSite=Lax,
//!   Path=/, no Domain; it lasts as long as the refresh token.
//! - **Form tokens** (`csrf`): `auth::csrf` over `session:{id}` on the signed-in forms (the
//!   account page's, sign-out), and over `anonymous:{value}` on the others (sign-in,
//!   registration, reset, verification), the value a random one kept in a pre-session cookie
//!   (`__Host-auth_csrf` / `auth_csrf`) that the pages with such forms set. The signed-out forms
//!   are bound to that cookie even for a browser that is signed in, so that a session ending
//!   between showing a form and posting it does not spoil a form that needs no session.
//! - **Where a post comes from**: one with `Sec-Fetch-Site: cross-site`, or with an `Origin`
//!   that is not this server's (the request's own Host, or the origin of API_URL or
//!   PUBLIC_URL), is refused with the tokens' 403, whatever it carries.

use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::de::DeserializeOwned;

use super::Pages;
use super::render::{self, Message};
use crate::auth::tokens::random_token;
use crate::config::Config;
use crate::error::Error;
use crate::service::refresh;
use crate::service::sessions::Caller;

/// Whether the cookies are `__Host-` and `Secure`: this server's own address is https.
fn secure(config: &Config) -> bool {
    config.server.api_url().starts_with("https://")
}

fn session_cookie_name(config: &Config) -> &'static str {
    if secure(config) {
        "__Host-auth_session"
    } else {
        "auth_session"
    }
}

fn csrf_cookie_name(config: &Config) -> &'static str {
    if secure(config) {
        "__Host-auth_csrf"
    } else {
        "auth_csrf"
    }
}

/// A `Set-Cookie` value with the pages' attributes; `max_age` in seconds (`None`: until the
/// browser closes).
fn set_cookie(config: &Config, name: &str, value: &str, max_age: Option<u64>) -> String {
    let mut cookie = format!("{name}={value}; Path=/; HttpOnly; SameSite=Lax");
    if secure(config) {
        cookie.push_str("; Secure");
    }
    if let Some(seconds) = max_age {
        cookie.push_str(&format!("; Max-Age={seconds}"));
    }
    cookie
}

/// The cookie of a new browser session: its refresh token, for as long as the token lives
/// (REFRESH_TOKEN_EXPIRE_DAYS, capped by SESSION_MAX_AGE_DAYS, as `login::open_session` sets it).
pub(super) fn session_cookie(config: &Config, refresh_token: &str) -> String {
    let lifetime = config
        .tokens
        .refresh_token_ttl
        .min(config.tokens.session_max_age);
    set_cookie(
        config,
        session_cookie_name(config),
        refresh_token,
        Some(lifetime.as_secs()),
    )
}

/// The session cookie, expired: what sign-out and a deleted account leave.
pub(super) fn cleared_session_cookie(config: &Config) -> String {
    set_cookie(config, session_cookie_name(config), "", Some(0))
}

/// The value of the first cookie called `name`.
fn cookie(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|line| line.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(n, _)| *n == name)
        .map(|(_, value)| value.trim_matches('"').to_string())
        .filter(|value| !value.is_empty())
}

/// Whether a request comes from another site: `Sec-Fetch-Site: cross-site`, or an `Origin`
/// that is neither the request's own Host nor the origin of API_URL or PUBLIC_URL.
fn from_elsewhere(headers: &HeaderMap, config: &Config) -> bool {
    let fetch_site = headers.get("sec-fetch-site").and_then(|v| v.to_str().ok());
    if fetch_site.is_some_and(|site| site.eq_ignore_ascii_case("cross-site")) {
        return true;
    }
    let Some(origin) = headers.get(header::ORIGIN) else {
        return false;
    };
    let Ok(origin) = origin.to_str() else {
        return true;
    };
    let host = headers.get(header::HOST).and_then(|v| v.to_str().ok());
    let own_host = origin
        .strip_prefix("https://")
        .or_else(|| origin.strip_prefix("http://"))
        .is_some_and(|authority| host.is_some_and(|h| authority.eq_ignore_ascii_case(h)));
    let own_address = [config.server.api_url(), config.server.public_url.as_str()]
        .into_iter()
        .filter_map(|url| url::Url::parse(url).ok())
        .any(|url| url.origin().ascii_serialization() == origin);
    !(own_host || own_address)
}

/// Where `next` may send the browser after signing in: a path on this server (`/…`, not `//…`,
/// no backslash, no control character or space), or an absolute http(s) URL whose origin is in
/// PAGES_REDIRECT_ALLOWLIST. `None` for anything else (the caller then uses /account).
pub(super) fn safe_next(next: &str, allowlist: &[String]) -> Option<String> {
    let harmless = |c: char| !c.is_control() && !c.is_whitespace() && c != '\\';
    if !next.chars().all(harmless) {
        return None;
    }
    if next.starts_with('/') {
        return (!next.starts_with("//")).then(|| next.to_string());
    }
    let url = url::Url::parse(next).ok()?;
    let allowed = matches!(url.scheme(), "http" | "https")
        && url.username().is_empty()
        && url.password().is_none()
        && allowlist.contains(&url.origin().ascii_serialization());
    allowed.then(|| url.to_string())
}

/// The browser, as the pages see it: its session (if the cookie holds a live one), its
/// cookies, and whether the request comes from another site.
pub(super) struct Browser {
    /// The caller of the session cookie, while its session is live.
    pub caller: Option<Caller>,
    /// The session cookie's token as sent, live or not (a new sign-in revokes its session).
    pub session_token: Option<String>,
    anonymous: Option<String>,
    from_elsewhere: bool,
}

impl FromRequestParts<Pages> for Browser {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, pages: &Pages) -> Result<Self, Response> {
        let config = &pages.app.config;
        let session_token = cookie(&parts.headers, session_cookie_name(config));
        let caller = match &session_token {
            None => None,
            Some(token) => match refresh::browser_session(&pages.app, token).await {
                Ok(caller) => Some(caller),
                Err(Error::InvalidRefreshToken(_) | Error::Unauthorized(_)) => None,
                Err(e) => return Err(render::error_page(e)),
            },
        };
        Ok(Self {
            caller,
            session_token,
            anonymous: cookie(&parts.headers, csrf_cookie_name(config)),
            from_elsewhere: from_elsewhere(&parts.headers, config),
        })
    }
}

/// The form token of the signed-out forms, and the pre-session cookie to set if the browser
/// has none yet.
pub(super) struct AnonymousToken {
    pub csrf: String,
    pub set_cookie: Option<String>,
}

impl Browser {
    /// The token for the signed-out forms of a page being shown.
    pub fn anonymous_token(&self, pages: &Pages) -> AnonymousToken {
        match &self.anonymous {
            Some(value) => AnonymousToken {
                csrf: pages.csrf.token(&format!("anonymous:{value}")),
                set_cookie: None,
            },
            None => {
                let value = random_token();
                let config = &pages.app.config;
                AnonymousToken {
                    csrf: pages.csrf.token(&format!("anonymous:{value}")),
                    set_cookie: Some(set_cookie(config, csrf_cookie_name(config), &value, None)),
                }
            }
        }
    }

    /// The token for the forms of a signed-in caller's pages.
    pub fn session_token_for(pages: &Pages, caller: &Caller) -> String {
        pages.csrf.token(&format!("session:{}", caller.session_id))
    }

    /// Checks a signed-out form's post: from this site, with the token of the browser's
    /// pre-session cookie.
    pub fn check_anonymous(&self, pages: &Pages, csrf: Option<&str>) -> Result<(), Refused> {
        let valid = !self.from_elsewhere
            && match (&self.anonymous, csrf) {
                (Some(value), Some(token)) => {
                    pages.csrf.verify(&format!("anonymous:{value}"), token)
                }
                _ => false,
            };
        if valid { Ok(()) } else { Err(Refused::Forged) }
    }

    /// Checks a signed-in form's post: from this site, from a browser whose session is live,
    /// with that session's token.
    pub fn check_signed_in(self, pages: &Pages, csrf: Option<&str>) -> Result<Caller, Refused> {
        if self.from_elsewhere {
            return Err(Refused::Forged);
        }
        let Some(caller) = self.caller else {
            return Err(Refused::SignedOut);
        };
        let binding = format!("session:{}", caller.session_id);
        match csrf {
            Some(token) if pages.csrf.verify(&binding, token) => Ok(caller),
            _ => Err(Refused::Forged),
        }
    }
}

/// Why a form's post is turned away before anything is done.
#[derive(Debug)]
pub(super) enum Refused {
    /// No form token, a wrong one, or a post from another site: 403.
    Forged,
    /// A signed-in form from a browser whose session has ended: to the sign-in page, and back
    /// to the account page.
    SignedOut,
    /// A form other than the enrolment's, from a session that MFA_REQUIRED_FOR keeps to
    /// enrolment: 403.
    MustEnrol,
}

impl IntoResponse for Refused {
    fn into_response(self) -> Response {
        match self {
            Refused::Forged => render::message(
                StatusCode::FORBIDDEN,
                Message {
                    title: "This form has expired",
                    text: vec![
                        "Sorry: this form has expired or came from another site; go back and try \
                         again."
                            .into(),
                    ],
                    link: None,
                },
            ),
            Refused::SignedOut => render::redirect("/sign-in?next=/account"),
            Refused::MustEnrol => render::message(
                StatusCode::FORBIDDEN,
                Message {
                    title: "Set up an authenticator app first",
                    text: vec![
                        "Your account must have two-step verification before anything else can \
                         be changed."
                            .into(),
                    ],
                    link: Some(("/account", "Set it up on your account page")),
                },
            ),
        }
    }
}

/// A form post's fields, read as `application/x-www-form-urlencoded`. Anything else, a body
/// too large or one that is not a form is answered with an HTML page of its status.
pub(super) struct PageForm<T>(pub T);

impl<T: DeserializeOwned> FromRequest<Pages> for PageForm<T> {
    type Rejection = Response;

    async fn from_request(request: Request, pages: &Pages) -> Result<Self, Response> {
        let unreadable = |status| {
            render::message(
                status,
                Message {
                    title: "This form could not be read",
                    text: vec!["Go back, reload the page and try again.".into()],
                    link: None,
                },
            )
        };
        if !super::super::extract::is_form(request.headers()) {
            return Err(unreadable(StatusCode::UNSUPPORTED_MEDIA_TYPE));
        }
        let bytes =
            Bytes::from_request(request, pages)
                .await
                .map_err(|rejection| match rejection.status() {
                    StatusCode::PAYLOAD_TOO_LARGE => unreadable(StatusCode::PAYLOAD_TOO_LARGE),
                    _ => unreadable(StatusCode::BAD_REQUEST),
                })?;
        serde_urlencoded::from_bytes(&bytes)
            .map(Self)
            .map_err(|_| unreadable(StatusCode::BAD_REQUEST))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    #[test]
    fn next_is_a_path_here_or_an_allowed_origin() {
        let allow = vec!["https://app.example.com".to_string()];
        for (next, kept) in [
            ("/account", Some("/account")),
            ("/account?tab=mfa#x", Some("/account?tab=mfa#x")),
            ("/", Some("/")),
            (
                "https://app.example.com/welcome",
                Some("https://app.example.com/welcome"),
            ),
            ("https://APP.example.com", Some("https://app.example.com/")),
            ("//evil.example", None),
            ("//evil.example/account", None),
            ("/\\evil.example", None),
            ("\\\\evil.example", None),
            ("/ /evil.example", None),
            ("/\t/evil.example", None),
            ("/account\r\nSet-Cookie: x=y", None),
            ("https://evil.example", None),
            ("https://app.example.com.evil.example/", None),
            ("https://user@app.example.com/", None),
            ("http://app.example.com/", None),
            ("javascript:alert(1)", None),
            ("account", None),
            ("", None),
        ] {
            assert_eq!(safe_next(next, &allow).as_deref(), kept, "{next:?}");
        }
        assert_eq!(safe_next("https://app.example.com/", &[]), None);
    }

    #[test]
    fn cookies_are_read_by_exact_name() {
        let mut headers = HeaderMap::new();
        headers.append(
            header::COOKIE,
            HeaderValue::from_static("xauth_session=no; auth_session=yes; other=1"),
        );
        headers.append(header::COOKIE, HeaderValue::from_static("auth_csrf=\"q\""));
        assert_eq!(cookie(&headers, "auth_session").as_deref(), Some("yes"));
        assert_eq!(cookie(&headers, "auth_csrf").as_deref(), Some("q"));
        assert_eq!(cookie(&headers, "missing"), None);
    }

    fn config(vars: &[(&str, &str)]) -> Config {
        Config::from_vars(vars.iter().copied()).unwrap()
    }

    #[test]
    fn posts_from_elsewhere_are_recognised() {
        let config = config(&[("PUBLIC_URL", "https://app.example.com")]);
        let headers = |pairs: &[(&'static str, &'static str)]| {
            let mut h = HeaderMap::new();
            h.insert(header::HOST, HeaderValue::from_static("auth.example.com"));
            for (name, value) in pairs {
                h.insert(*name, HeaderValue::from_static(value));
            }
            h
        };
        assert!(!from_elsewhere(&headers(&[]), &config));
        for own in [
            "https://auth.example.com",
            "http://auth.example.com",
            "https://app.example.com",
        ] {
            let h = headers(&[("origin", own)]);
            assert!(!from_elsewhere(&h, &config), "{own}");
        }
        for other in [
            "https://evil.example",
            "null",
            "https://auth.example.com.evil.example",
        ] {
            assert!(
                from_elsewhere(&headers(&[("origin", other)]), &config),
                "{other}"
            );
        }
        assert!(from_elsewhere(
            &headers(&[("sec-fetch-site", "cross-site")]),
            &config
        ));
        assert!(!from_elsewhere(
            &headers(&[("sec-fetch-site", "same-origin")]),
            &config
        ));
    }

    #[test]
    fn cookie_names_and_attributes_follow_the_servers_own_address() {
        let plain = config(&[]);
        assert_eq!(
            session_cookie(&plain, "t"),
            "auth_session=t; Path=/; HttpOnly; SameSite=Lax; Max-Age=604800"
        );
        let tls = config(&[
            ("PUBLIC_URL", "http://localhost:3000"),
            ("API_URL", "https://auth.example.com"),
        ]);
        assert_eq!(
            session_cookie(&tls, "t"),
            "__Host-auth_session=t; Path=/; HttpOnly; SameSite=Lax; Secure; Max-Age=604800"
        );
        assert_eq!(
            cleared_session_cookie(&tls),
            "__Host-auth_session=; Path=/; HttpOnly; SameSite=Lax; Secure; Max-Age=0"
        );
    }
}
