//! The integration suite: one test binary, the real server over real HTTP.

mod fuzz;
mod hardening;
mod harness;
mod helpers;
mod smtp;
#[allow(dead_code)] // shared with wt-pk-tests, which uses all of it
mod soft_passkey;

mod admin;
mod browser;
mod cli;
mod durability;
mod edge;
mod errors;
mod faults;
mod hashing;
mod instances;
mod login;
mod logout;
mod mail;
mod me;
mod mfa;
mod mfa_attacks;
mod mfa_policy;
mod migrations;
mod model;
mod openapi;
mod operations;
mod pages;
mod passkey_review;
mod refresh;
mod register;
mod sessions;
mod signing;
mod time;
mod tokens;
mod trust;
