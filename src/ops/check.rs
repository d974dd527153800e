//! One result of an operator check (`doctor`, the mount-table checks): pass, warn or fail, why, and what to do.
//! Its own module so that each kind of check can make one without depending on the doctor that runs them all.

use serde::Serialize;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum CheckStatus {
    Pass,
    Warn,
    Fail,
}

impl CheckStatus {
    pub fn word(self) -> &'static str {
        match self {
            CheckStatus::Pass => "PASS",
            CheckStatus::Warn => "WARN",
            CheckStatus::Fail => "FAIL",
        }
    }
}

/// One check: a stable name, its status, a one-line reason and what to do (empty when nothing).
#[derive(Debug, Clone, Serialize)]
pub struct Check {
    pub name: String,
    pub status: CheckStatus,
    pub reason: String,
    pub advice: String,
    /// Measurements (timings in ms, the mount found, ...), for machines.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub details: Option<serde_json::Value>,
}

impl Check {
    fn new(name: impl Into<String>, status: CheckStatus, reason: impl Into<String>, advice: impl Into<String>) -> Self {
        Self { name: name.into(), status, reason: reason.into(), advice: advice.into(), details: None }
    }

    pub fn pass(name: impl Into<String>, reason: impl Into<String>) -> Self {
        Self::new(name, CheckStatus::Pass, reason, "")
    }

    pub fn warn(name: impl Into<String>, reason: impl Into<String>, advice: impl Into<String>) -> Self {
        Self::new(name, CheckStatus::Warn, reason, advice)
    }

    pub fn fail(name: impl Into<String>, reason: impl Into<String>, advice: impl Into<String>) -> Self {
        Self::new(name, CheckStatus::Fail, reason, advice)
    }

    pub(crate) fn with_details(mut self, details: serde_json::Value) -> Self {
        self.details = Some(details);
        self
    }
}
