//! Black-box tests of the service through its HTTP API, against the real Docker engine and a real SQLite file.
//! One binary, so it is compiled once; each test gets its own app, base path, database and instance label.

mod helpers;
#[path = "../support/mod.rs"]
mod support;

mod auth;
mod bad_input;
mod cli;
mod courses;
mod coursework;
mod culling;
mod erase_quota;
mod ide_protocol;
mod ide_state;
mod jupyter;
mod lifecycle;
mod lti;
mod openapi;
mod persistence;
mod proxy;
mod reconcile;
mod storage_ops;
