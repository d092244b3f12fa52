//! Credentials: password hashing and tokens. Nothing here knows about HTTP or SQL.

pub mod csrf;
pub mod keys;
pub mod password;
pub mod seal;
pub mod tokens;
pub mod totp;
pub mod webauthn;
