//! LTI 1.3: launching workspaces from a stock LMS (Canvas, Moodle, Blackboard, Open edX, Brightspace).
//!
//! - [`Platform`]: an LMS an operator registered (`workspaced lti add`, `POST /api/lti/platforms`).
//! - [`token`]: the tool's own signing keys (`GET /lti/jwks`), the platforms' key sets (cached, fetched again on
//!   an unknown `kid`), checking an `id_token`, and signing what the tool sends (deep linking responses, the client
//!   assertion of the token request).
//! - [`nrps`]: the course roster from the platform (Names and Role Provisioning Services).
//! - Who is who: [`student_id_for`] and [`course_id_for`] map a platform's user and context to a workspace id and
//!   a course id that are stable, valid and reveal nothing of the LMS's ids.
//!
//! The HTTP side (login, launch, the pages) is `http/lti.rs`; every write goes through `lifecycle/lti.rs`.

pub mod nrps;
pub mod token;

use axum::http::StatusCode;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::domain::{CourseId, StudentId};

/// An LMS registered with this tool.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Platform {
    /// Made at registration (8 hex digits); names the platform in the CLI and the API.
    pub id: String,
    /// The platform's issuer (`iss`), e.g. `https://canvas.instructure.com`.
    pub issuer: String,
    /// The client id the platform gave this tool.
    pub client_id: String,
    /// The deployments of the tool on the platform that may launch.
    pub deployment_ids: Vec<String>,
    /// The platform's OIDC authorization endpoint.
    pub auth_url: String,
    /// The platform's OAuth 2 token endpoint (for the roster).
    pub token_url: String,
    /// The platform's key set URL; or `jwks`.
    pub jwks_url: Option<String>,
    /// The platform's keys themselves (a JWK set), for closed networks where the tool cannot fetch them.
    #[schema(value_type = Option<Object>)]
    pub jwks: Option<serde_json::Value>,
    pub created_at: DateTime<Utc>,
}

/// The body of `POST /api/lti/platforms`. Its schema (below) has the patterns [`NewPlatform::check`] checks.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewPlatform {
    pub issuer: String,
    pub client_id: String,
    pub deployment_ids: Vec<String>,
    pub auth_url: String,
    pub token_url: String,
    /// The platform's key set URL. At least one of `jwks_url` and `jwks`; with both, the keys given are tried first.
    #[serde(default)]
    pub jwks_url: Option<String>,
    #[serde(default)]
    pub jwks: Option<serde_json::Value>,
}

/// An `https://` URL, or `http://` on a loopback host (development and tests).
pub const URL_PATTERN: &str =
    r"^(https://[A-Za-z0-9.-]+|http://(localhost|127\.0\.0\.1|\[::1\]))(:[0-9]{1,5})?(/[!-~]*)?$";

impl utoipa::PartialSchema for NewPlatform {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        use utoipa::openapi::schema::{AdditionalProperties, ArrayBuilder, ObjectBuilder, Type};
        let text = |min: usize, max: usize| {
            ObjectBuilder::new().schema_type(Type::String).min_length(Some(min)).max_length(Some(max))
        };
        let url = |what: &str| text(8, MAX_FIELD).pattern(Some(URL_PATTERN)).description(Some(what));
        let b64 = |max: usize| text(1, max).pattern(Some("^[A-Za-z0-9_-]+$"));
        let jwk = ObjectBuilder::new()
            .property("kty", ObjectBuilder::new().schema_type(Type::String).enum_values(Some(["RSA"])))
            .required("kty")
            .property("n", b64(1024))
            .required("n")
            .property("e", b64(16))
            .required("e")
            .property("kid", text(1, 256))
            .additional_properties(Some(AdditionalProperties::FreeForm(false)));
        let key_set = ObjectBuilder::new()
            .property("keys", ArrayBuilder::new().items(jwk).min_items(Some(1)).max_items(Some(16)))
            .required("keys")
            .additional_properties(Some(AdditionalProperties::FreeForm(false)))
            .description(Some("The platform's public keys (a JWK set of RSA keys), for closed networks"));
        ObjectBuilder::new()
            .property("issuer", url("The platform's issuer (`iss`)"))
            .required("issuer")
            .property("client_id", text(1, MAX_FIELD).description(Some("The client id the platform gave this tool")))
            .required("client_id")
            .property(
                "deployment_ids",
                ArrayBuilder::new().items(text(1, MAX_FIELD)).min_items(Some(1)).max_items(Some(MAX_DEPLOYMENTS)),
            )
            .required("deployment_ids")
            .property("auth_url", url("The platform's OIDC authorization endpoint"))
            .required("auth_url")
            .property("token_url", url("The platform's OAuth 2 token endpoint"))
            .required("token_url")
            .property("jwks_url", url("The platform's key set URL; this or `jwks`, or both"))
            .property("jwks", key_set)
            .additional_properties(Some(AdditionalProperties::FreeForm(false)))
            .into()
    }
}
impl utoipa::ToSchema for NewPlatform {}

/// Longest URL, issuer, client id or deployment id accepted in a registration or a login request.
pub const MAX_FIELD: usize = 2048;
/// Most deployments of one platform.
pub const MAX_DEPLOYMENTS: usize = 64;
/// Largest key set accepted (given inline or fetched).
pub const MAX_KEY_SET: usize = 256 * 1024;

impl NewPlatform {
    /// Checks a registration; the message says which field is wrong.
    pub fn check(&self) -> Result<(), String> {
        check_url("issuer", &self.issuer)?;
        check_text("client_id", &self.client_id)?;
        if self.deployment_ids.is_empty() || self.deployment_ids.len() > MAX_DEPLOYMENTS {
            return Err(format!("deployment_ids: give 1 to {MAX_DEPLOYMENTS} deployment ids"));
        }
        for d in &self.deployment_ids {
            check_text("deployment_ids", d)?;
        }
        check_url("auth_url", &self.auth_url)?;
        check_url("token_url", &self.token_url)?;
        if self.jwks_url.is_none() && self.jwks.is_none() {
            return Err("give jwks_url (the platform's key set URL) or jwks (the keys themselves)".into());
        }
        if let Some(u) = &self.jwks_url {
            check_url("jwks_url", u)?;
        }
        if let Some(set) = &self.jwks {
            if serde_json::to_vec(set).map(|v| v.len()).unwrap_or(usize::MAX) > MAX_KEY_SET {
                return Err("jwks: the key set is larger than 256 KiB".into());
            }
            token::parse_key_set(set.clone()).map_err(|e| format!("jwks: {e}"))?;
        }
        Ok(())
    }
}

/// 1 to [`MAX_FIELD`] bytes. Any characters: a client or deployment id is the platform's opaque string, compared,
/// escaped wherever it is shown and logged.
fn check_text(field: &str, v: &str) -> Result<(), String> {
    if v.is_empty() || v.len() > MAX_FIELD {
        return Err(format!("{field}: 1 to {MAX_FIELD} bytes"));
    }
    Ok(())
}

/// An absolute `https://` URL with a host name or IPv4 address (and a port and path); `http://` only for a
/// loopback host (development and tests). What [`URL_PATTERN`] says.
fn check_url(field: &str, v: &str) -> Result<(), String> {
    check_text(field, v)?;
    if v.chars().any(|c| !c.is_ascii_graphic()) {
        return Err(format!("{field}: a URL of printable ASCII, no spaces"));
    }
    let (https, rest) = match (v.strip_prefix("https://"), v.strip_prefix("http://")) {
        (Some(r), _) => (true, r),
        (None, Some(r)) => (false, r),
        _ => return Err(format!("{field}: must be an https:// URL")),
    };
    let authority = rest.split('/').next().unwrap_or_default();
    // A port follows the last `:`, but not inside `[::1]`.
    let (host, port) = match authority.rsplit_once(':') {
        Some((h, p)) if !h.ends_with(':') && !h.is_empty() => (h, Some(p)),
        _ => (authority, None),
    };
    if port.is_some_and(|p| p.is_empty() || p.len() > 5 || !p.bytes().all(|b| b.is_ascii_digit())) {
        return Err(format!("{field}: the port is not a number"));
    }
    let loopback = matches!(host, "localhost" | "127.0.0.1" | "[::1]");
    if !https && !loopback {
        return Err(format!("{field}: must be an https:// URL (http:// only for localhost)"));
    }
    let plain = !host.is_empty() && host.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-');
    if !(plain || (loopback && !https)) {
        return Err(format!("{field}: not a URL with a host name"));
    }
    Ok(())
}

/// The origin (`scheme://host[:port]`) of a URL, for `frame-ancestors`.
pub fn origin_of(url: &str) -> Option<String> {
    let (scheme, rest) = url.split_once("://")?;
    let host = rest.split(['/', '?', '#']).next()?;
    (!host.is_empty()).then(|| format!("{scheme}://{host}"))
}

/// A stable key for a platform's user: a hash of the issuer and `sub` (opaque strings of any content).
pub fn user_key(issuer: &str, sub: &str) -> String {
    hex::encode(&Sha256::digest(format!("{issuer}\n{sub}").as_bytes())[..16])
}

/// The course of a platform's context: `lti-` and 12 hex digits of a hash of the issuer and the context id.
pub fn course_id_for(issuer: &str, context_id: &str) -> CourseId {
    let h = hex::encode(&Sha256::digest(format!("{issuer}\n{context_id}").as_bytes())[..6]);
    CourseId::parse(&format!("lti-{h}")).expect("lti- and hex digits make a valid id")
}

/// The workspace of a user in a context. With a login id (the configured claim's value) that is a valid id, it is
/// `<login>-<6 hex of the context>`, readable by staff; else `lti-` and 16 hex digits of a hash of issuer, `sub`
/// and context. The same user in two courses gets two workspaces, as the courses' docs ask.
pub fn student_id_for(issuer: &str, sub: &str, context_id: &str, login: Option<&str>) -> StudentId {
    let ctx = hex::encode(&Sha256::digest(format!("{issuer}\n{context_id}").as_bytes())[..3]);
    if let Some(id) = login.and_then(|l| StudentId::parse(&format!("{l}-{ctx}")).ok()) {
        return id;
    }
    let h = hex::encode(&Sha256::digest(format!("{issuer}\n{sub}\n{context_id}").as_bytes())[..8]);
    StudentId::parse(&format!("lti-{h}")).expect("lti- and hex digits make a valid id")
}

/// What a launch's roles make of the user here.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum LtiRole {
    /// Instructors, teaching assistants, content developers and administrators of the context: the course page.
    Staff,
    /// Everyone else with a context role: their own workspace.
    Learner,
}

/// Staff when any role is one of the context's teaching roles (full URIs, or the short names LTI 1.1 allowed).
pub fn role_of(roles: &[String]) -> LtiRole {
    const STAFF: [&str; 4] = ["#Instructor", "#TeachingAssistant", "#ContentDeveloper", "#Administrator"];
    let staff = roles.iter().any(|r| {
        STAFF.iter().any(|s| r.ends_with(s) && (r.contains("/membership") || r.contains("/institution/person")))
            || matches!(r.as_str(), "Instructor" | "TeachingAssistant" | "ContentDeveloper" | "Administrator")
    });
    if staff {
        LtiRole::Staff
    } else {
        LtiRole::Learner
    }
}

/// Why a login or a launch was refused. Each has a stable code and words an LMS administrator can act on; nothing
/// is created before every check passed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LtiError {
    #[error("a required parameter is missing or too long: {0}")]
    BadRequest(String),
    #[error("no platform is registered with issuer {issuer} and client id {client_id}")]
    UnknownPlatform { issuer: String, client_id: String },
    #[error("several platforms are registered with issuer {0}; the LMS must send client_id with the login")]
    AmbiguousPlatform(String),
    #[error("the launch's state is missing, altered or too old: start the launch again from the course")]
    BadState,
    #[error("the id_token is not a signed JWT this tool accepts: {0}")]
    MalformedToken(String),
    #[error("the id_token's signature does not match the platform's keys")]
    BadSignature,
    #[error("the id_token names key {0:?}, which the platform's key set does not have")]
    UnknownKey(Option<String>),
    #[error("the platform's key set could not be read: {0}")]
    KeySetUnavailable(String),
    #[error("the id_token has expired (or was issued in the future): check the LMS server's clock")]
    Expired,
    #[error("the id_token's issuer is not the registered one")]
    WrongIssuer,
    #[error("the id_token is for another client (aud/azp): {0}")]
    WrongAudience(String),
    #[error("the id_token's nonce is not the one this tool sent")]
    WrongNonce,
    #[error("this launch was already used: launches work once (a reload or a replayed request)")]
    Replayed,
    #[error("deployment {0:?} is not registered for this platform")]
    UnknownDeployment(String),
    #[error("the id_token lacks required claims: {0}")]
    MissingClaims(String),
    #[error("unsupported message: {0}")]
    Unsupported(String),
    #[error("only instructors and teaching assistants may do this")]
    NotStaff,
}

impl LtiError {
    pub fn code(&self) -> &'static str {
        match self {
            LtiError::BadRequest(_) => "lti_bad_request",
            LtiError::UnknownPlatform { .. } => "lti_unknown_platform",
            LtiError::AmbiguousPlatform(_) => "lti_ambiguous_platform",
            LtiError::BadState => "lti_bad_state",
            LtiError::MalformedToken(_) => "lti_malformed_token",
            LtiError::BadSignature => "lti_bad_signature",
            LtiError::UnknownKey(_) => "lti_unknown_key",
            LtiError::KeySetUnavailable(_) => "lti_key_set_unavailable",
            LtiError::Expired => "lti_expired",
            LtiError::WrongIssuer => "lti_wrong_issuer",
            LtiError::WrongAudience(_) => "lti_wrong_audience",
            LtiError::WrongNonce => "lti_wrong_nonce",
            LtiError::Replayed => "lti_replayed",
            LtiError::UnknownDeployment(_) => "lti_unknown_deployment",
            LtiError::MissingClaims(_) => "lti_missing_claims",
            LtiError::Unsupported(_) => "lti_unsupported",
            LtiError::NotStaff => "lti_not_staff",
        }
    }

    pub fn status(&self) -> StatusCode {
        match self {
            LtiError::KeySetUnavailable(_) => StatusCode::BAD_GATEWAY,
            LtiError::NotStaff => StatusCode::FORBIDDEN,
            LtiError::BadRequest(_) | LtiError::MalformedToken(_) | LtiError::Unsupported(_) => StatusCode::BAD_REQUEST,
            _ => StatusCode::UNAUTHORIZED,
        }
    }

    /// What an LMS administrator should check.
    pub fn advice(&self) -> &'static str {
        match self {
            LtiError::UnknownPlatform { .. } | LtiError::AmbiguousPlatform(_) => {
                "Register the platform with `workspaced lti add` (issuer and client id exactly as the LMS shows them)."
            }
            LtiError::UnknownDeployment(_) => {
                "Add this deployment id to the platform's registration (`workspaced lti remove` and `lti add` with \
                 every --deployment-id)."
            }
            LtiError::BadSignature | LtiError::UnknownKey(_) | LtiError::KeySetUnavailable(_) => {
                "Check the platform's key set URL in the registration, and that the LMS signs with a key it publishes \
                 there."
            }
            LtiError::WrongIssuer | LtiError::WrongAudience(_) => {
                "Check the issuer and client id of the registration against the LMS's developer key or tool settings."
            }
            LtiError::Expired => "Check the clocks of the LMS and of workspaced (NTP), then launch again.",
            LtiError::BadState | LtiError::WrongNonce | LtiError::Replayed => {
                "Open the link from the course again: each launch is good once and for a few minutes."
            }
            LtiError::MissingClaims(_) | LtiError::MalformedToken(_) | LtiError::Unsupported(_) => {
                "Check the tool's configuration in the LMS: LTI 1.3, with the roles, context and user claims sent."
            }
            LtiError::BadRequest(_) => "Start the launch from the LMS; this address is not opened directly.",
            LtiError::NotStaff => "Ask an instructor of the course.",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_valid_stable_and_apart() {
        let a = student_id_for("https://lms", "user-1", "ctx-1", None);
        assert_eq!(a, student_id_for("https://lms", "user-1", "ctx-1", None));
        assert_ne!(a, student_id_for("https://lms", "user-1", "ctx-2", None), "one workspace per course");
        assert_ne!(a, student_id_for("https://other", "user-1", "ctx-1", None), "issuers apart");
        assert!(a.as_str().starts_with("lti-") && a.as_str().len() == 20);
        let login = student_id_for("https://lms", "user-1", "ctx-1", Some("ada"));
        assert!(login.as_str().starts_with("ada-"), "{login}");
        // A login that is no valid id is not used.
        assert_eq!(student_id_for("https://lms", "user-1", "ctx-1", Some("Ada Lovelace")), a);
        let c = course_id_for("https://lms", "ctx-1");
        assert_eq!(c, course_id_for("https://lms", "ctx-1"));
        assert_ne!(c, course_id_for("https://lms", "ctx-2"));
    }

    #[test]
    fn roles_pick_staff_or_learner() {
        let r = |s: &[&str]| role_of(&s.iter().map(|s| s.to_string()).collect::<Vec<_>>());
        assert_eq!(r(&["http://purl.imsglobal.org/vocab/lis/v2/membership#Learner"]), LtiRole::Learner);
        assert_eq!(r(&["http://purl.imsglobal.org/vocab/lis/v2/membership#Instructor"]), LtiRole::Staff);
        assert_eq!(
            r(&["http://purl.imsglobal.org/vocab/lis/v2/membership/Instructor#TeachingAssistant"]),
            LtiRole::Staff
        );
        // An institution role alone (a faculty member who is a learner here) is not the context's staff.
        assert_eq!(r(&["http://purl.imsglobal.org/vocab/lis/v2/institution/person#Faculty"]), LtiRole::Learner);
        assert_eq!(r(&[]), LtiRole::Learner);
        assert_eq!(r(&["Instructor"]), LtiRole::Staff);
    }

    #[test]
    fn registrations_are_checked() {
        let ok = NewPlatform {
            issuer: "https://canvas.instructure.com".into(),
            client_id: "10000000000001".into(),
            deployment_ids: vec!["1:abc".into()],
            auth_url: "https://sso.canvaslms.com/api/lti/authorize_redirect".into(),
            token_url: "https://sso.canvaslms.com/login/oauth2/token".into(),
            jwks_url: Some("https://sso.canvaslms.com/api/lti/security/jwks".into()),
            jwks: None,
        };
        assert_eq!(ok.check(), Ok(()));
        let bad = |edit: fn(&mut NewPlatform)| {
            let mut p = ok.clone();
            edit(&mut p);
            p.check().unwrap_err()
        };
        assert!(bad(|p| p.issuer = "http://lms.example.edu".into()).starts_with("issuer"));
        assert!(bad(|p| p.auth_url = "ftp://x".into()).starts_with("auth_url"));
        assert!(bad(|p| p.deployment_ids.clear()).starts_with("deployment_ids"));
        assert!(bad(|p| p.client_id = String::new()).starts_with("client_id"));
        assert!(bad(|p| p.issuer = "https://lms example".into()).starts_with("issuer"));
        assert!(bad(|p| p.issuer = "https://[abc".into()).starts_with("issuer"));
        assert!(bad(|p| p.issuer = "https://lms.example.edu:x/".into()).starts_with("issuer"));
        assert!(bad(|p| p.issuer = "https:///path".into()).starts_with("issuer"));
        // What the schema's pattern says is what the check takes.
        let pattern = regex_automata::meta::Regex::new(URL_PATTERN).unwrap();
        let re = |u: &str| pattern.is_match(u);
        for (url, ok) in [
            ("https://lms.example.edu", true),
            ("https://lms.example.edu:8443/a/b?c=d", true),
            ("http://localhost:8000/x", true),
            ("http://[::1]:80/", true),
            ("http://127.0.0.1", true),
            ("http://lms.example.edu", false),
            ("https://[abc", false),
            ("https:///x", false),
        ] {
            assert_eq!(check_url("u", url).is_ok(), ok, "{url}");
            assert_eq!(re(url), ok, "pattern on {url}");
        }
        assert!(bad(|p| p.jwks_url = None).contains("jwks_url"));
        assert!(bad(|p| p.jwks = Some(serde_json::json!({"keys": []}))).starts_with("jwks"));
        let mut local = ok.clone();
        local.issuer = "http://localhost:8000".into();
        assert_eq!(local.check(), Ok(()));
        assert_eq!(origin_of("http://localhost:8000/a/b?c"), Some("http://localhost:8000".into()));
    }
}
