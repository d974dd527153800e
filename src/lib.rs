//! workspaced: one code-server workspace per student, on Docker. See ARCHITECTURE.md for the map.

pub mod activity;
pub mod api;
pub mod app;
pub mod auth;
pub mod cli;
pub mod clock;
pub mod config;
pub mod course;
pub mod culler;
pub mod domain;
pub mod fswalk;
pub mod http;
pub mod lease;
pub mod lifecycle;
pub mod logging;
pub mod lti;
pub mod metrics;
pub mod notify;
pub mod ops;
pub mod proxy;
pub mod reconciler;
pub mod runtime;
pub mod storage;
pub mod store;
pub mod supervise;
pub mod usage;
