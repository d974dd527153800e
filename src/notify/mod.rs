//! Notifications: every warning and stop is an event in the store; this module delivers them to the LMS webhook.
//! (SSE streaming of the same events lives in `http/events.rs`.)

pub mod webhook;
