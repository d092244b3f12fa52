//! The integration suite: one test binary, the real server over real HTTP.

mod helpers;
mod smtp;

mod errors;
mod instances;
mod login;
mod logout;
mod mail;
mod me;
mod migrations;
mod operations;
mod refresh;
mod register;
mod tokens;
