//! The OpenAPI 3.1 document of the HTTP API (`GET /api/openapi.json`, checked in as `docs/openapi.json`), generated
//! from the handlers' `#[utoipa::path]` attributes and the answer types of `crate::api`. The security requirement
//! and the authentication errors of each operation are filled in from the route table (`routes()` in `mod.rs`), so
//! they cannot disagree with the router; a test keeps the document's operations equal to the table's routes.
//!
//! The IDE side (`/w/{id}/...`) is answered by `ide::dispatch` before routing and is not in the table: the SDK's
//! routes are described here by stub functions ([`IDE_OPERATIONS`] lists them).

use std::sync::OnceLock;

use axum::http::header;
use axum::response::IntoResponse;
use utoipa::openapi::path::Operation;
use utoipa::openapi::schema::{
    AdditionalProperties, KnownFormat, ObjectBuilder, OneOfBuilder, Schema, SchemaFormat, SchemaType, Type,
};
use utoipa::openapi::security::{
    ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityRequirement, SecurityScheme,
};
use utoipa::openapi::{ContentBuilder, OpenApi as Document, RefOr, ResponseBuilder};
use utoipa::{Modify, OpenApi, PartialSchema, ToSchema};

use super::Access;
use crate::api::{ErrorBody, HeartbeatView, LaunchLink, OwnStatus, StudentToken};
use crate::domain::{CourseId, EventKind, Status, StopReason, StudentId, MAX_STUDENT_ID_LEN};
use crate::store::PolicyOverrides;

#[derive(OpenApi)]
#[openapi(
    info(
        title = "workspaced",
        description = "One code-server workspace per student. The prose reference is docs/api.md; every error \
                       answer is `{\"error\": {\"code\", \"message\"}}` with a stable `code`.",
        license(name = "MIT")
    ),
    paths(
        super::healthz,
        super::readyz,
        super::admin_page,
        super::sdk_script,
        openapi_json,
        super::workspaces::heartbeat,
        super::events::events,
        super::workspaces::list,
        super::workspaces::get,
        super::workspaces::start,
        super::workspaces::stop,
        super::workspaces::set_policy,
        create_launch,
        create_student_token,
        super::export::export_handler,
        super::migrate::migrate_handler,
        super::metrics,
        super::admin_stats,
        super::sessions::revoke,
        super::erase::delete,
        super::courses::list_courses,
        super::courses::get_course,
        super::courses::put_course,
        super::courses::delete_course,
        super::coursework::distribute,
        super::coursework::collect_handler,
        super::lti::list_platforms,
        super::lti::add_platform,
        super::lti::remove_platform,
        super::lti::info,
        own_status,
        own_start,
        own_heartbeat,
    ),
    components(schemas(ErrorBody, SseEvent, StopAs, StudentId, CourseId, Status, super::sessions::RevokeRequest)),
    modifiers(&FromRouteTable),
    tags(
        (name = "workspaces", description = "Start, stop and read workspaces (LMS key)"),
        (name = "launch", description = "Launch links and student tokens (LMS key)"),
        (name = "admin", description = "Operators (admin key)"),
        (name = "lti", description = "LTI 1.3 platforms (LMSs) and the tool's URLs (admin key)"),
        (name = "courses", description = "Course profiles: image, limits, culling, starter files (LMS key)"),
        (name = "service", description = "Health, readiness, static pages and this document (no key)"),
        (name = "student", description = "The student's own routes under /w/{id}/_workspaced/ (session or student token)"),
    )
)]
struct ApiDoc;

/// The document, built once.
pub fn document() -> &'static Document {
    static DOC: OnceLock<Document> = OnceLock::new();
    DOC.get_or_init(ApiDoc::openapi)
}

/// The document as served and checked in: pretty JSON with a final newline.
pub fn document_json() -> String {
    let mut text = document().to_pretty_json().unwrap_or_else(|e| format!("{{\"error\": \"{e}\"}}"));
    text.push('\n');
    text
}

/// The OpenAPI 3.1 document of this API.
#[utoipa::path(get, path = "/api/openapi.json", tag = "service",
    responses((status = 200, description = "This document", content_type = "application/json", body = Object)))]
pub async fn openapi_json() -> impl IntoResponse {
    static TEXT: OnceLock<String> = OnceLock::new();
    ([(header::CONTENT_TYPE, "application/json")], TEXT.get_or_init(document_json).as_str())
}

/// The IDE side's operations this document describes (method, path): not in the route table, which holds the
/// routes the router serves.
pub const IDE_OPERATIONS: &[(&str, &str)] = &[
    ("get", "/w/{id}/_workspaced/status"),
    ("post", "/w/{id}/_workspaced/start"),
    ("post", "/w/{id}/_workspaced/heartbeat"),
];

/// Security and authentication errors from the route table's `Access` of each route, and the student's
/// credentials on the IDE side's operations.
struct FromRouteTable;

const API_KEY: &str = "api_key";
const STUDENT_TOKEN: &str = "student_token";
const SESSION_COOKIE: &str = "session_cookie";

impl Modify for FromRouteTable {
    fn modify(&self, doc: &mut Document) {
        let components = doc.components.get_or_insert_with(Default::default);
        let bearer = |format: &str, text: &str| {
            SecurityScheme::Http(
                HttpBuilder::new().scheme(HttpAuthScheme::Bearer).bearer_format(format).description(Some(text)).build(),
            )
        };
        components.add_security_scheme(
            API_KEY,
            bearer(
                "wsd_<8 hex id>_<64 hex secret>",
                "An API key made with `workspaced key create --role lms|admin`. The scope names the role a route \
                 needs; an admin key may do everything an lms key may.",
            ),
        );
        components.add_security_scheme(
            STUDENT_TOKEN,
            bearer("wss_<value>", "A student token (`POST /api/workspaces/{id}/token`), for the JS SDK."),
        );
        let mut cookie = ApiKeyValue::with_description(
            "workspaced_session",
            "The browser session a launch link sets (named `__Host-workspaced_session` when the cookie is Secure).",
        );
        cookie.name = "workspaced_session".into();
        components.add_security_scheme(SESSION_COOKIE, SecurityScheme::ApiKey(ApiKey::Cookie(cookie)));

        let key = |role: &str| SecurityRequirement::new(API_KEY, [role]);
        let student = || {
            vec![
                SecurityRequirement::new(STUDENT_TOKEN, [] as [&str; 0]),
                SecurityRequirement::new(SESSION_COOKIE, [] as [&str; 0]),
            ]
        };
        for route in super::route_table() {
            let Some(op) = operation(doc, route.method.as_str(), route.path) else { continue };
            // Every key has at least the lms role, so only admin routes and sessions can be forbidden.
            let (security, forbidden) = match route.access {
                Access::Open => continue,
                Access::Lms => (vec![key("lms")], None),
                Access::Admin => (vec![key("admin")], Some("`forbidden`: an lms key on an admin route")),
                Access::KeyOrSession => {
                    let mut any = vec![key("lms")];
                    any.extend(student());
                    (any, Some("`forbidden`: a session or student token of another student; `cross_origin`: the session cookie sent by a page of another origin"))
                }
            };
            op.security = Some(security);
            add_error(
                op,
                401,
                "`unauthorized`: no key, or not `Bearer <key>`; `invalid_api_key`: unknown, revoked or malformed key",
            );
            if let Some(forbidden) = forbidden {
                add_error(op, 403, forbidden);
            }
            add_error(op, 500, "`internal`: anything else; details are in the service log");
        }
        for (method, path) in IDE_OPERATIONS {
            let Some(op) = operation(doc, method, path) else { continue };
            op.security = Some(student());
            add_error(op, 401, "`unauthorized`: no valid session or student token for this student");
            add_error(op, 403, "`forbidden`: the session of another student; `cross_origin`: a request other than GET from a page of another origin");
            add_error(op, 500, "`internal`: anything else; details are in the service log");
        }
    }
}

/// The operation of a method and path in the document.
fn operation<'a>(doc: &'a mut Document, method: &str, path: &str) -> Option<&'a mut Operation> {
    let item = doc.paths.paths.get_mut(path)?;
    match method.to_ascii_lowercase().as_str() {
        "get" => item.get.as_mut(),
        "post" => item.post.as_mut(),
        "put" => item.put.as_mut(),
        "delete" => item.delete.as_mut(),
        "patch" => item.patch.as_mut(),
        _ => None,
    }
}

/// Adds an error answer (the one error shape) unless the operation already describes that status.
fn add_error(op: &mut Operation, status: u16, description: &str) {
    let body = ContentBuilder::new().schema(Some(ErrorBody::schema_ref())).build();
    op.responses.responses.entry(status.to_string()).or_insert_with(|| {
        ResponseBuilder::new().description(description).content("application/json", body).build().into()
    });
}

impl ErrorBody {
    fn schema_ref() -> RefOr<Schema> {
        RefOr::Ref(utoipa::openapi::Ref::from_schema_name(<ErrorBody as ToSchema>::name()))
    }
}

// Schemas of the domain's types, written here so that `domain` stays free of documentation concerns.

fn string_enum(values: &[&'static str], description: &str) -> RefOr<Schema> {
    ObjectBuilder::new()
        .schema_type(Type::String)
        .enum_values(Some(values.iter().copied()))
        .description(Some(description))
        .into()
}

/// A string with the student-id rules (student and course ids alike).
fn id_schema(description: &str, example: &str) -> RefOr<Schema> {
    ObjectBuilder::new()
        .schema_type(Type::String)
        .min_length(Some(1))
        .max_length(Some(MAX_STUDENT_ID_LEN))
        .pattern(Some(STUDENT_ID_PATTERN))
        .description(Some(description))
        .examples([example])
        .into()
}

impl PartialSchema for StudentId {
    fn schema() -> RefOr<Schema> {
        id_schema("1 to 63 characters from a-z 0-9 - _, starting and ending with a letter or digit", "alice")
    }
}
impl ToSchema for StudentId {}

impl PartialSchema for CourseId {
    fn schema() -> RefOr<Schema> {
        id_schema("A course id: the student-id rules", "cs101")
    }
}
impl ToSchema for CourseId {}

/// What `StudentId::parse` accepts, as a regular expression (a test compares the two).
pub const STUDENT_ID_PATTERN: &str = "^[a-z0-9]([a-z0-9_-]{0,61}[a-z0-9])?$";

impl PartialSchema for Status {
    fn schema() -> RefOr<Schema> {
        string_enum(&Status::ALL.iter().map(|s| s.as_str()).collect::<Vec<_>>(), "Where the workspace is in its life")
    }
}
impl ToSchema for Status {}

impl PartialSchema for StopReason {
    fn schema() -> RefOr<Schema> {
        string_enum(&StopReason::ALL.iter().map(|s| s.as_str()).collect::<Vec<_>>(), "Why the workspace stopped")
    }
}
impl ToSchema for StopReason {}

impl PartialSchema for PolicyOverrides {
    fn schema() -> RefOr<Schema> {
        let seconds = |text: &str| {
            ObjectBuilder::new()
                .schema_type(SchemaType::from_iter([Type::Integer, Type::Null]))
                .format(Some(SchemaFormat::KnownFormat(KnownFormat::Int64)))
                .minimum(Some(1))
                .description(Some(text))
        };
        ObjectBuilder::new()
            .description(Some("The overrides set with `PUT .../policy`; `null` follows the service default"))
            .property("idle_timeout_seconds", seconds("Idle timeout in seconds"))
            .required("idle_timeout_seconds")
            .property("max_age_seconds", seconds("Maximum lifetime in seconds"))
            .required("max_age_seconds")
            .property(
                "cull_enabled",
                ObjectBuilder::new().schema_type(SchemaType::from_iter([Type::Boolean, Type::Null])),
            )
            .required("cull_enabled")
            .into()
    }
}
impl ToSchema for PolicyOverrides {}

/// The `reason` a stop may be asked for (`?reason=`); `workspaces::stop` parses it.
pub struct StopAs;

impl PartialSchema for StopAs {
    fn schema() -> RefOr<Schema> {
        let (user, admin) = (StopReason::User.as_str(), StopReason::Admin.as_str());
        string_enum(&[user, admin], "`user` (the default: the student asked) or `admin` (staff stopped it)")
    }
}
impl ToSchema for StopAs {}

/// `{"student_id": "<id>"}` or `{"all": true}`, exactly one: anything else is 400 `invalid_scope`.
impl PartialSchema for super::sessions::RevokeRequest {
    fn schema() -> RefOr<Schema> {
        let constant = |v: bool| ObjectBuilder::new().schema_type(Type::Boolean).enum_values(Some([v]));
        let one_student = ObjectBuilder::new()
            .property("student_id", StudentId::schema_ref())
            .required("student_id")
            .property("all", constant(false))
            .additional_properties(Some(AdditionalProperties::FreeForm(false)));
        let everybody = ObjectBuilder::new()
            .property("all", constant(true))
            .required("all")
            .property("student_id", ObjectBuilder::new().schema_type(Type::Null))
            .additional_properties(Some(AdditionalProperties::FreeForm(false)));
        OneOfBuilder::new()
            .item(one_student)
            .item(everybody)
            .description(Some("One student's sessions, or everybody's"))
            .into()
    }
}
impl ToSchema for super::sessions::RevokeRequest {}

impl StudentId {
    fn schema_ref() -> RefOr<Schema> {
        RefOr::Ref(utoipa::openapi::Ref::from_schema_name(<StudentId as ToSchema>::name()))
    }
}

/// One server-sent event of `GET /api/events`, as an SSE client reads it.
#[allow(dead_code)] // a schema only: the stream is written by `events.rs`
#[derive(ToSchema)]
pub struct SseEvent {
    /// The event id (a decimal integer): resume after it with `Last-Event-ID`.
    #[schema(pattern = "^[0-9]+$")]
    id: String,
    /// The event kind.
    #[schema(schema_with = event_kinds)]
    event: String,
    /// The event as JSON: `{"id", "type", "student_id", "reason", "message", "at"}` (the webhook body).
    data: String,
}

fn event_kinds() -> RefOr<Schema> {
    string_enum(&EventKind::ALL.iter().map(|k| k.as_str()).collect::<Vec<_>>(), "The event kind")
}

// Stubs that describe routes whose handlers live in `ide.rs` (the API's launch and token routes, and the SDK's
// routes on the IDE side). They are never called.

/// A single-use link that opens the student's IDE in a browser; the workspace need not exist yet.
#[utoipa::path(post, path = "/api/workspaces/{id}/launch", tag = "launch",
    params(("id" = StudentId, Path, description = "The student")),
    request_body(content = Option<super::workspaces::CourseChoiceRequest>, description = "Optional: the course the workspace belongs to"),
    responses(
        (status = 200, description = "The link, valid for `launch_ttl` and once", body = LaunchLink),
        (status = 400, description = "`invalid_student_id`, `invalid_json`, `invalid_course_id`", body = ErrorBody),
        (status = 404, description = "`course_not_found`", body = ErrorBody),
        (status = 409, description = "`course_conflict`: the workspace is busy in another course", body = ErrorBody),
    ))]
#[allow(dead_code)]
async fn create_launch() {}

/// A student token for the JS SDK on an LMS page: opens that student's status and heartbeat, nothing else.
#[utoipa::path(post, path = "/api/workspaces/{id}/token", tag = "launch",
    params(("id" = StudentId, Path, description = "The student")),
    responses(
        (status = 200, description = "The token, valid for `session_ttl`", body = StudentToken),
        (status = 400, description = "`invalid_student_id`", body = ErrorBody),
    ))]
#[allow(dead_code)]
async fn create_student_token() {}

/// The student status, what the launcher and the SDK read (works whether or not the workspace runs).
#[utoipa::path(get, path = "/w/{id}/_workspaced/status", tag = "student",
    params(("id" = StudentId, Path, description = "The student")),
    responses((status = 200, description = "The student status", body = OwnStatus)))]
#[allow(dead_code)]
async fn own_status() {}

/// Starts the workspace like `start?wait=false` (a session only; a student token may not start).
#[utoipa::path(post, path = "/w/{id}/_workspaced/start", tag = "student",
    params(("id" = StudentId, Path, description = "The student")),
    responses(
        (status = 202, description = "The start is queued or under way", body = OwnStatus),
        (status = 429, description = "`capacity_reached`, `start_queue_full` (with `Retry-After`)", body = ErrorBody),
        (status = 503, description = "`runtime_unavailable`, `image_missing`, `no_capacity`, `storage_unavailable`, `storage_error`", body = ErrorBody),
    ))]
#[allow(dead_code)]
async fn own_start() {}

/// Records activity of the student's running workspace.
#[utoipa::path(post, path = "/w/{id}/_workspaced/heartbeat", tag = "student",
    params(("id" = StudentId, Path, description = "The student")),
    responses(
        (status = 200, description = "Recorded", body = HeartbeatView),
        (status = 404, description = "`workspace_not_found`", body = ErrorBody),
        (status = 409, description = "`workspace_not_running`", body = ErrorBody),
    ))]
#[allow(dead_code)]
async fn own_heartbeat() {}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;

    /// (method, path) of every operation in the document.
    fn operations() -> BTreeSet<(String, String)> {
        let doc: serde_json::Value = serde_json::from_str(&document_json()).unwrap();
        let mut ops = BTreeSet::new();
        for (path, item) in doc["paths"].as_object().unwrap() {
            for method in item.as_object().unwrap().keys() {
                ops.insert((method.to_uppercase(), path.clone()));
            }
        }
        ops
    }

    #[test]
    fn the_document_has_exactly_the_route_tables_operations_and_the_ide_stubs() {
        let mut expected: BTreeSet<(String, String)> =
            super::super::route_table().into_iter().map(|r| (r.method.to_string(), r.path.to_owned())).collect();
        expected.extend(IDE_OPERATIONS.iter().map(|(m, p)| (m.to_uppercase(), (*p).to_owned())));
        let documented = operations();
        let missing: Vec<_> = expected.difference(&documented).collect();
        let extra: Vec<_> = documented.difference(&expected).collect();
        assert!(missing.is_empty() && extra.is_empty(), "not documented: {missing:?}\nnot routed: {extra:?}");
    }

    #[test]
    fn every_operation_but_the_open_ones_names_its_credentials_and_the_error_shape() {
        let doc: serde_json::Value = serde_json::from_str(&document_json()).unwrap();
        assert_eq!(doc["openapi"], "3.1.0");
        for route in super::super::route_table() {
            let op = &doc["paths"][route.path][route.method.as_str().to_lowercase()];
            let security = op["security"].as_array().cloned().unwrap_or_default();
            let error = &op["responses"]["401"]["content"]["application/json"]["schema"]["$ref"];
            match route.access {
                Access::Open => assert!(security.is_empty(), "{route:?} is open"),
                Access::Lms | Access::Admin => {
                    let role = if route.access == Access::Lms { "lms" } else { "admin" };
                    assert_eq!(security, vec![serde_json::json!({"api_key": [role]})], "{route:?}");
                    assert_eq!(error, "#/components/schemas/ErrorBody", "{route:?}");
                }
                Access::KeyOrSession => {
                    assert_eq!(security.len(), 3, "{route:?}: a key, a student token or the session cookie");
                    assert_eq!(error, "#/components/schemas/ErrorBody", "{route:?}");
                }
            }
        }
    }

    #[test]
    fn the_student_id_pattern_accepts_what_the_parser_accepts() {
        let pattern = regex_automata::meta::Regex::new(STUDENT_ID_PATTERN).unwrap();
        let (long, too_long) = ("a".repeat(63), "a".repeat(64));
        let samples = [
            "a",
            "alice",
            "a-b_c",
            "0",
            "9z",
            "heartbeat",
            &long,
            &too_long,
            "",
            "-a",
            "a_",
            "A",
            "a/b",
            "é",
            "a b",
            "a\n",
        ];
        for s in samples {
            assert_eq!(pattern.is_match(s), StudentId::parse(s).is_ok(), "{s:?}");
        }
    }

    /// `docs/openapi.json` is the served document; `UPDATE_DOCS=1 cargo test --lib openapi` rewrites it.
    #[test]
    fn docs_openapi_json_is_the_generated_document() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/openapi.json");
        let generated = document_json();
        if std::fs::read_to_string(&path).ok().as_deref() == Some(generated.as_str()) {
            return;
        }
        if std::env::var_os("UPDATE_DOCS").is_some_and(|v| v == "1") {
            std::fs::write(&path, &generated).unwrap();
            println!("UPDATE_DOCS=1: rewrote {}", path.display());
            return;
        }
        panic!("docs/openapi.json differs from the generated document; run with UPDATE_DOCS=1 to rewrite it");
    }
}
