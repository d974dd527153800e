//! What people see, in real Chromium (Debian's, through chromedriver) against the real service and real
//! code-server. A test binary of its own, so the other suites' load does not skew the short timeouts here; and one
//! browser test at a time (each takes the browser before it starts its service).

#[path = "../api/helpers.rs"]
#[allow(dead_code)]
mod helpers;
#[path = "../support/mod.rs"]
mod support;

mod a11y;
mod browser;
mod ide;
mod ide_state;
mod jupyter;
mod lti;
mod lti_platform;
mod pages;
