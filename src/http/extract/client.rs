//! The client: its address (the peer, or through `TRUSTED_PROXIES` only, X-Forwarded-For), its
//! user agent, and the per-client-address limits checked against that address.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use axum::extract::{ConnectInfo, FromRef, FromRequestParts};
use axum::http::header::USER_AGENT;
use axum::http::request::Parts;
use axum::http::{HeaderName, HeaderValue};

use crate::error::Error;
use crate::metrics::LoginMethod;
use crate::service::sessions::ClientInfo;
use crate::state::AppState;

const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");

/// The request's client as the middleware (`http::edge`) puts it in the request's extensions
/// (`Arc<RequestOrigin>`) and in the audit trail's task-local: the address, and the user agent
/// header as it came (a reference-counted copy); the strings are made only when something asks.
#[derive(Debug)]
pub struct RequestOrigin {
    ip: Option<IpAddr>,
    user_agent: Option<HeaderValue>,
}

impl RequestOrigin {
    pub(in crate::http) fn of(request: &axum::extract::Request, state: &AppState) -> Self {
        Self {
            ip: client_addr_of(request.extensions(), request.headers(), state),
            user_agent: request.headers().get(USER_AGENT).cloned(),
        }
    }

    fn client_info(&self) -> ClientInfo {
        ClientInfo {
            ip: self.ip.map(|ip| ip.to_string()),
            user_agent: self.user_agent.as_ref().and_then(user_agent_text),
        }
    }
}

impl crate::service::audit::OriginSource for RequestOrigin {
    fn origin(&self) -> crate::service::audit::Origin {
        let ClientInfo { ip, user_agent } = self.client_info();
        crate::service::audit::Origin { ip, user_agent }
    }
}

/// The client's address: the peer, or through `TRUSTED_PROXIES` only, X-Forwarded-For (all of
/// its lines, in order, as one list). The middleware's [`RequestOrigin`] when there is one.
fn client_addr(parts: &Parts, state: &AppState) -> Option<IpAddr> {
    match parts.extensions.get::<Arc<RequestOrigin>>() {
        Some(origin) => origin.ip,
        None => client_addr_of(&parts.extensions, &parts.headers, state),
    }
}

fn client_addr_of(
    extensions: &axum::http::Extensions,
    headers: &axum::http::HeaderMap,
    state: &AppState,
) -> Option<IpAddr> {
    extensions
        .get::<ConnectInfo<SocketAddr>>()
        .map(|ConnectInfo(peer)| {
            let trusted = &state.config.server.trusted_proxies;
            if trusted.is_empty() {
                // X-Forwarded-For is not read at all.
                return crate::net::client_ip(peer.ip(), std::iter::empty(), trusted);
            }
            // Bytes that are not text (a client may send them, and a proxy that appends its own
            // entry to the same line keeps them) spoil only the entry they are in: the walk from
            // the right reaches the proxy's entry first.
            let lines: Vec<String> = headers
                .get_all(X_FORWARDED_FOR)
                .iter()
                .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
                .collect();
            let forwarded = lines.iter().map(|l| Some(l.as_str()));
            crate::net::client_ip(peer.ip(), forwarded, trusted)
        })
}

/// A per-client-address limit on an endpoint group; over it, 429 with Retry-After.
pub struct Limited<G>(std::marker::PhantomData<G>);

pub trait LimitGroup {
    const GROUP: crate::ratelimit::Group;
}

macro_rules! limit_group {
    ($name:ident, $group:ident) => {
        pub struct $name;
        impl LimitGroup for $name {
            const GROUP: crate::ratelimit::Group = crate::ratelimit::Group::$group;
        }
    };
}
limit_group!(LoginLimit, Login);
limit_group!(RegisterLimit, Register);
limit_group!(RefreshLimit, Refresh);
limit_group!(MailLimit, Mail);

impl<S, G: LimitGroup> FromRequestParts<S> for Limited<G>
where
    AppState: FromRef<S>,
    S: Send + Sync,
{
    type Rejection = Error;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let state = AppState::from_ref(state);
        if let Some(ip) = client_addr(parts, &state)
            && let Err(retry_after) = state.limiter.check(G::GROUP, ip).await
        {
            if let crate::ratelimit::Group::Login = G::GROUP
                && let Some(method) = LoginMethod::of_api_path(parts.uri.path())
            {
                state.metrics.login_rate_limited(method);
            }
            return Err(Error::TooManyRequests { retry_after });
        }
        Ok(Self(std::marker::PhantomData))
    }
}

/// The client's address, for the per-client limits a handler checks itself: the pages, which
/// answer a limit with their form again and the wait, not with a problem document.
pub struct ClientLimits(Option<IpAddr>);

impl ClientLimits {
    /// A login's allowance of the login limit: [`ClientLimits::check`], the refusal counted as
    /// the login's outcome (`rate_limited`).
    pub async fn check_login(&self, state: &AppState, method: LoginMethod) -> Result<(), Error> {
        self.check::<LoginLimit>(state).await.inspect_err(|_| {
            state.metrics.login_rate_limited(method);
        })
    }

    /// Takes one request's allowance of `G`'s limit; over it, 429 TooManyRequests.
    pub async fn check<G: LimitGroup>(&self, state: &AppState) -> Result<(), Error> {
        match self.0 {
            Some(ip) => state
                .limiter
                .check(G::GROUP, ip)
                .await
                .map_err(|retry_after| Error::TooManyRequests { retry_after }),
            None => Ok(()),
        }
    }
}

impl<S> FromRequestParts<S> for ClientLimits
where
    AppState: FromRef<S>,
    S: Send + Sync,
{
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        Ok(Self(client_addr(parts, &AppState::from_ref(state))))
    }
}

/// The client's address (through trusted proxies only) and user agent.
pub struct Client(pub ClientInfo);

const USER_AGENT_MAX: usize = 512;

impl<S> FromRequestParts<S> for Client
where
    AppState: FromRef<S>,
    S: Send + Sync,
{
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        if let Some(origin) = parts.extensions.get::<Arc<RequestOrigin>>() {
            return Ok(Self(origin.client_info()));
        }
        let state = AppState::from_ref(state);
        let ip = client_addr(parts, &state).map(|ip| ip.to_string());
        Ok(Self(ClientInfo {
            ip,
            user_agent: parts.headers.get(USER_AGENT).and_then(user_agent_text),
        }))
    }
}

fn user_agent_text(value: &HeaderValue) -> Option<String> {
    value
        .to_str()
        .ok()
        .map(|ua| ua.chars().take(USER_AGENT_MAX).collect())
}
