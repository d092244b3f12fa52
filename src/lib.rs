//! auth-server: an asynchronous authentication server.
//!
//! Layers, one direction only: [`http`] (routing, extractors, request and response types) calls
//! [`service`] (the account rules), which calls [`db`] (SQL only) and [`auth`] (tokens and
//! password hashing).

pub mod app;
pub mod auth;
pub mod clock;
pub mod config;
pub mod db;
pub mod domain;
pub mod error;
pub mod http;
pub mod mail;
pub mod metrics;
pub mod net;
pub mod ratelimit;
pub mod serve;
pub mod service;
pub mod state;
pub mod telemetry;

pub use app::Application;
pub use clock::Clock;
pub use config::Config;
pub use error::{Error, Result};
