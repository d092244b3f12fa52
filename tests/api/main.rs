//! The integration suite: one test binary, the real server over real HTTP.

mod helpers;

mod errors;
mod instances;
mod login;
mod logout;
mod me;
mod operations;
mod refresh;
mod register;
mod tokens;
