//! Extractors whose rejections are the crate's own problem documents, one file per concern:
//! the request body (`body`: JSON and forms, and the login's credentials in either), the
//! authenticated caller (`caller`: bearer token, session, user), and the client (`client`: its
//! address through trusted proxies, its user agent, the per-client limits).

mod body;
mod caller;
pub mod client;

pub use body::is_form;
pub use body::{
    Credentials, JsonBody, OptionalJsonBody, caller_password, required, required_token,
};
pub use caller::{Authenticated, Enrolling, Superuser};
pub use client::{
    Client, ClientLimits, LimitGroup, Limited, LoginLimit, MailLimit, RefreshLimit, RegisterLimit,
};
