//! The integration suite: one test binary, the real server over real HTTP.

mod fuzz;
mod hardening;
mod helpers;
mod smtp;

mod admin;
mod cli;
mod durability;
mod edge;
mod errors;
mod hashing;
mod instances;
mod login;
mod logout;
mod mail;
mod me;
mod migrations;
mod model;
mod operations;
mod purge;
mod refresh;
mod register;
mod sessions;
mod signing;
mod tokens;
mod trust;
