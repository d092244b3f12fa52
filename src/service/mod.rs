//! The account rules. Called by the HTTP layer; calls `db` for storage and `auth` for credentials.

pub mod accounts;
pub mod admin;
pub mod import;
pub mod maintenance;
pub mod policy;
pub mod recovery;
pub mod sessions;
