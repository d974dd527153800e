//! The JSON of the REST API's answers, defined once: the server builds these types to answer and the CLI
//! deserializes them to read, so the two cannot drift apart. Field names, order and `null`s are the contract in
//! `docs/api.md` (the tests below compare with it). How each value is computed stays in `http`; this module holds
//! data only.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::domain::{CourseId, Status, StopReason, StudentId};
use crate::store::PolicyOverrides;

/// The status of a workspace as the API shows it (`GET /api/workspaces/{id}`, start, stop, policy).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct WorkspaceView {
    pub student_id: StudentId,
    pub status: Status,
    /// The course the workspace belongs to (given at its first start), if any.
    pub course: Option<CourseId>,
    pub container_id: Option<String>,
    pub last_activity: Option<DateTime<Utc>>,
    pub started_at: Option<DateTime<Utc>>,
    pub stopped_at: Option<DateTime<Utc>>,
    pub stop_reason: Option<StopReason>,
    /// The sentence for the student, e.g. "Workspace stopped due to inactivity."
    pub stop_message: Option<String>,
    pub error: Option<String>,
    /// Where a browser reaches the IDE while running (through the proxy; a session from a launch link is needed).
    pub url: Option<String>,
    /// The IDE's published port while running (for operators; the proxy's upstream), on `host_addr`.
    pub host_port: Option<u16>,
    /// The node `host_port` is published on while running (a Swarm task's node address); `null`: 127.0.0.1.
    pub host_addr: Option<String>,
    pub limits: Limits,
    /// Latest time code-server reported an open tab (not counted as activity unless configured).
    pub ide_connected_at: Option<DateTime<Utc>>,
    /// While running: when the idle warning comes, when the stop comes, and the seconds until the stop.
    pub warn_at: Option<DateTime<Utc>>,
    pub stop_at: Option<DateTime<Utc>>,
    pub seconds_left: Option<i64>,
    /// What the stop at `stop_at` would be for: `idle` or `max_age`.
    pub stop_at_reason: Option<StopReason>,
    pub policy: PolicyView,
    /// While queued: 1-based place in the start queue and a rough wait until ready.
    pub queue_position: Option<usize>,
    pub queue_estimate_seconds: Option<u64>,
    /// Disk use of the student's folder (allocated bytes, like `du -s`), measured in the background, and when.
    pub disk_usage_bytes: Option<u64>,
    pub disk_usage_measured_at: Option<DateTime<Utc>>,
    /// Whether that measurement was above the soft quota.
    pub over_soft_quota: Option<bool>,
}

/// The culling policy in force for a workspace (service defaults with its overrides).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct PolicyView {
    pub cull_enabled: bool,
    pub idle_timeout_seconds: u64,
    pub warning_lead_seconds: u64,
    pub max_age_seconds: Option<u64>,
    /// The overrides set for this workspace (`null` fields follow the service defaults).
    pub overrides: PolicyOverrides,
}

/// The container limits of a workspace: its last start's (its course's, or the service's), else the service's.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Limits {
    pub cpus: f64,
    pub memory_bytes: i64,
    pub pids_limit: i64,
}

/// `GET /api/workspaces`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ListView {
    pub workspaces: Vec<WorkspaceView>,
}

/// `POST /api/workspaces/heartbeat`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct HeartbeatView {
    pub student_id: StudentId,
    pub last_activity: Option<DateTime<Utc>>,
}

/// `POST /api/workspaces/{id}/launch`: a single-use link that opens the student's workspace.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct LaunchLink {
    pub student_id: StudentId,
    pub url: String,
    pub expires_at: DateTime<Utc>,
}

/// `POST /api/workspaces/{id}/token`: a student token for the JS SDK.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct StudentToken {
    pub student_id: StudentId,
    pub token: String,
    pub expires_at: DateTime<Utc>,
}

/// `POST /api/admin/sessions/revoke`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct RevokeView {
    /// The student whose sessions ended, or `null` when everybody's did.
    pub student_id: Option<StudentId>,
    pub all: bool,
    /// The new generation of that scope.
    pub generation: i64,
}

/// `GET /healthz`: `{"status": "ok"}` while the process is up.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Health {
    pub status: String,
}

/// `GET /readyz`: what is down, never why (the route needs no key; the cause goes to the log).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Readiness {
    pub ready: bool,
    /// `ok`, `unavailable` or `timed out`.
    pub database: String,
    /// `ok`, `unavailable` or `timed out`.
    pub docker: String,
    /// The base path: `ok`, `unavailable` (missing, not a directory, read-only) or `stalled` (a file-system call on it
    /// did not answer within `storage_timeout`, or too many hang already).
    pub storage: String,
    /// Each running background loop: `ok`, or `dead: no finished pass since <RFC 3339 time>`.
    pub loops: std::collections::BTreeMap<String, String>,
    /// Whether this replica runs the singleton loops (always, on a single replica).
    pub leader: bool,
    /// The fence of the lease this replica last held (0 on a single replica); it grows at every change of leader.
    pub lease_fence: i64,
}

/// `GET /api/admin/stats`: CPU and memory of every running workspace the engine gave numbers for, from the latest
/// background sample.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct StatsView {
    /// When the sample began (every number was taken after it); `null` before the first sample, which the request
    /// itself sets off.
    pub sampled_at: Option<DateTime<Utc>>,
    /// Whole seconds from `sampled_at` to this answer; `null` with it.
    pub age_seconds: Option<i64>,
    pub stats: std::collections::BTreeMap<String, crate::runtime::ContainerStats>,
}

/// What the student's own pages read (`/w/{id}/_workspaced/status`): enough to show state, queue, countdown and
/// why it stopped.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct OwnStatus {
    pub student_id: StudentId,
    pub status: Status,
    /// The course's title (or id), for the launcher; `null` outside a course.
    pub course_title: Option<String>,
    pub queue_position: Option<usize>,
    pub queue_estimate_seconds: Option<u64>,
    pub started_at: Option<DateTime<Utc>>,
    pub stopped_at: Option<DateTime<Utc>>,
    pub stop_reason: Option<StopReason>,
    pub stop_message: Option<String>,
    pub error: Option<String>,
    pub warn_at: Option<DateTime<Utc>>,
    pub stop_at: Option<DateTime<Utc>>,
    pub seconds_left: Option<i64>,
    pub warning: bool,
    /// Seconds of warning before the stop (for the "will close in N minutes" sentence).
    pub warning_lead_seconds: u64,
    /// How often a page should send a heartbeat while the student is using it, and poll this status.
    pub heartbeat_interval_seconds: u64,
    pub poll_interval_seconds: u64,
    pub now: DateTime<Utc>,
}

/// A course (`GET /api/courses/{course}`, `PUT`): its profile as stored, and how many workspaces it has.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct CourseView {
    pub course_id: CourseId,
    /// The title, or the course id when the profile has none.
    pub title: String,
    pub profile: crate::course::CourseBody,
    /// Workspaces in the course, and those queued, starting, running or stopping.
    pub workspaces: u64,
    pub running: u64,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// `GET /api/courses`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct CourseList {
    pub courses: Vec<CourseView>,
}

/// One line of `POST /api/courses/{course}/distribute`'s NDJSON answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum DistributeEvent {
    /// First: what is distributed, and to how many students.
    Plan {
        course: CourseId,
        source: String,
        target: String,
        /// BLAKE3 of the source as read: a changed source is a new version.
        digest: String,
        students: usize,
        /// Source entries left out (symlinks and the like), with why.
        source_skipped: Vec<String>,
    },
    /// One per student, as each finishes: what was written, updated, kept (the student's own changes) and skipped;
    /// `already_done` when this version reached the student before.
    Student { student_id: StudentId, report: Option<crate::ops::coursework::DistributeReport>, error: Option<String> },
    /// Last: the totals.
    Done { students: usize, already_done: usize, with_kept_files: usize, failed: usize },
}

/// Every error answer: `{"error": {"code": "...", "message": "..."}}`. Clients match on `code`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ErrorDetail {
    pub code: String,
    pub message: String,
}

impl ErrorBody {
    pub fn new(code: impl Into<String>, message: impl Into<String>) -> Self {
        Self { error: ErrorDetail { code: code.into(), message: message.into() } }
    }
}

/// The migrate NDJSON lines (`POST /api/admin/migrate`). Defined by `ops`, which writes them in and out of the
/// server; named here so a client finds every answer type in one place.
pub use crate::ops::migrate::MigrateEvent;

/// The `report` of a [`MigrateEvent::Student`] line, as a client reads it. The server writes
/// `ops::migrate::StudentReport` (a test below keeps the two equal); that type stays in `ops` because it is built
/// there, and `ops` is not ours to reshape here.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MigratedStudent {
    pub student_id: String,
    /// `migrated`, `already_done`, `skipped_running` or `would_migrate`.
    pub outcome: String,
    pub files: u64,
    pub bytes: u64,
    pub copied_files: u64,
    pub copied_bytes: u64,
    pub verified_files: u64,
    pub skipped_entries: Vec<String>,
}

#[cfg(test)]
mod tests {
    use serde_json::Value;

    use super::*;

    const API_DOC: &str = include_str!("../docs/api.md");

    /// The text of every JSON example in `docs/api.md` that parses (a few are shortened with `"..."`).
    fn documented() -> Vec<(&'static str, Value)> {
        API_DOC
            .split("```json")
            .skip(1)
            .filter_map(|block| block.split("```").next())
            .filter_map(|text| serde_json::from_str(text).ok().map(|v| (text, v)))
            .collect()
    }

    /// Top-level keys in the order the text has them (a `Value` sorts its keys, so order is read from the text).
    fn key_order(text: &str, v: &Value) -> Vec<String> {
        let mut keys: Vec<&String> = v.as_object().map(|o| o.keys().collect()).unwrap_or_default();
        keys.sort_by_key(|k| text.find(&format!("\"{k}\"")));
        keys.into_iter().cloned().collect()
    }

    /// Equal, with times compared as instants: the doc writes `08:01:30.000Z` where chrono writes `08:01:30Z`.
    fn same(a: &Value, b: &Value) -> bool {
        match (a, b) {
            (Value::String(x), Value::String(y)) => {
                x == y || matches!((x.parse::<DateTime<Utc>>(), y.parse::<DateTime<Utc>>()), (Ok(p), Ok(q)) if p == q)
            }
            (Value::Object(x), Value::Object(y)) => {
                x.len() == y.len() && x.iter().all(|(k, v)| y.get(k).is_some_and(|w| same(v, w)))
            }
            (Value::Array(x), Value::Array(y)) => x.len() == y.len() && x.iter().zip(y).all(|(v, w)| same(v, w)),
            _ => a == b,
        }
    }

    /// The sample serializes exactly as the documented example with its fields (names, order, values, `null`s),
    /// and reads back as itself.
    fn assert_documented<T: Serialize + serde::de::DeserializeOwned + PartialEq + std::fmt::Debug>(sample: &T) {
        let ours_text = serde_json::to_string(sample).unwrap();
        let ours: Value = serde_json::from_str(&ours_text).unwrap();
        let (doc_text, doc) = documented()
            .into_iter()
            .find(|(_, d)| {
                d.as_object().map(|o| o.keys().collect::<Vec<_>>()) == ours.as_object().map(|o| o.keys().collect())
            })
            .unwrap_or_else(|| panic!("no example in docs/api.md has the fields of {ours_text}"));
        assert!(same(&ours, &doc), "ours: {ours:#}\ndocumented: {doc:#}");
        assert_eq!(key_order(&ours_text, &ours), key_order(doc_text, &doc), "field order");
        assert_eq!(&serde_json::from_str::<T>(&ours_text).unwrap(), sample, "round trip");
    }

    fn at(s: &str) -> DateTime<Utc> {
        s.parse().unwrap()
    }

    fn alice() -> StudentId {
        StudentId::parse("alice").unwrap()
    }

    fn sample_workspace() -> WorkspaceView {
        WorkspaceView {
            student_id: alice(),
            status: Status::Running,
            course: None,
            container_id: Some("5c0f...".into()),
            last_activity: Some(at("2026-11-22T08:01:02.345Z")),
            started_at: Some(at("2026-11-22T08:01:02.345Z")),
            stopped_at: None,
            stop_reason: None,
            stop_message: None,
            error: None,
            url: Some("https://ide.example.edu/w/alice/".into()),
            host_port: Some(49153),
            host_addr: None,
            limits: Limits { cpus: 1.0, memory_bytes: 1073741824, pids_limit: 1024 },
            ide_connected_at: Some(at("2026-11-22T08:01:30.000Z")),
            warn_at: Some(at("2026-11-22T08:14:02.345Z")),
            stop_at: Some(at("2026-11-22T08:16:02.345Z")),
            seconds_left: Some(840),
            stop_at_reason: Some(StopReason::Idle),
            policy: PolicyView {
                cull_enabled: true,
                idle_timeout_seconds: 900,
                warning_lead_seconds: 120,
                max_age_seconds: None,
                overrides: PolicyOverrides::default(),
            },
            queue_position: None,
            queue_estimate_seconds: None,
            disk_usage_bytes: Some(48234496),
            disk_usage_measured_at: Some(at("2026-11-22T08:00:00.120Z")),
            over_soft_quota: Some(false),
        }
    }

    #[test]
    fn a_workspace_serializes_as_documented() {
        assert_documented(&sample_workspace());
    }

    #[test]
    fn the_student_status_serializes_as_documented() {
        assert_documented(&CourseView {
            course_id: CourseId::parse("cs101").unwrap(),
            title: "CS 101: Introduction to Programming".into(),
            profile: crate::course::CourseBody {
                title: Some("CS 101: Introduction to Programming".into()),
                cpus: Some(0.5),
                memory: Some("512m".into()),
                ..Default::default()
            },
            workspaces: 42,
            running: 7,
            created_at: at("2026-11-22T08:00:00Z"),
            updated_at: at("2026-11-22T08:00:00Z"),
        });
        assert_documented(&OwnStatus {
            student_id: alice(),
            status: Status::Running,
            course_title: None,
            queue_position: None,
            queue_estimate_seconds: None,
            started_at: Some(at("2026-11-22T08:01:02.345Z")),
            stopped_at: None,
            stop_reason: None,
            stop_message: None,
            error: None,
            warn_at: Some(at("2026-11-22T08:14:02.345Z")),
            stop_at: Some(at("2026-11-22T08:16:02.345Z")),
            seconds_left: Some(840),
            warning: false,
            warning_lead_seconds: 120,
            heartbeat_interval_seconds: 30,
            poll_interval_seconds: 5,
            now: at("2026-11-22T08:02:02.345Z"),
        });
    }

    #[test]
    fn launch_links_and_student_tokens_serialize_as_documented() {
        assert_documented(&LaunchLink {
            student_id: alice(),
            url: "https://ide.example.edu/w/alice/_workspaced/launch?token=alice.1795334460000.<nonce>.<signature>"
                .into(),
            expires_at: at("2026-11-22T08:01:00.000Z"),
        });
        assert_documented(&StudentToken {
            student_id: alice(),
            token: "wss_alice.0-0.1795377660000.<signature>".into(),
            expires_at: at("2026-11-22T20:01:00.000Z"),
        });
    }

    #[test]
    fn the_error_body_serializes_as_documented() {
        assert_documented(&ErrorBody::new(
            "invalid_student_id",
            "invalid student id: may contain only a-z, 0-9, '-' and '_'",
        ));
    }

    /// Documented only by their field names (`{"student_id", "last_activity"}`), so checked by name and round trip.
    #[test]
    fn heartbeats_revocations_and_lists_have_the_documented_fields() {
        let fields = |v: Value| v.as_object().unwrap().keys().cloned().collect::<Vec<_>>().join(",");
        let beat = HeartbeatView { student_id: alice(), last_activity: Some(at("2026-11-22T08:01:02.345Z")) };
        assert_eq!(fields(serde_json::to_value(&beat).unwrap()), "last_activity,student_id");
        assert_eq!(serde_json::from_value::<HeartbeatView>(serde_json::to_value(&beat).unwrap()).unwrap(), beat);
        let revoke = RevokeView { student_id: None, all: true, generation: 3 };
        assert_eq!(serde_json::to_string(&revoke).unwrap(), r#"{"student_id":null,"all":true,"generation":3}"#);
        assert_eq!(
            serde_json::from_str::<RevokeView>(r#"{"student_id":null,"all":true,"generation":3}"#).unwrap(),
            revoke
        );
        let list = ListView { workspaces: vec![sample_workspace()] };
        let text = serde_json::to_string(&list).unwrap();
        assert!(text.starts_with(r#"{"workspaces":[{"student_id":"alice","#), "{text}");
        assert_eq!(serde_json::from_str::<ListView>(&text).unwrap(), list);
    }

    /// The server writes `ops::migrate::StudentReport`; a client reads `MigratedStudent`. Same JSON both ways.
    #[test]
    fn a_migrated_student_reads_what_the_server_writes() {
        use crate::ops::migrate::{Outcome, StudentReport};
        let report = StudentReport {
            student_id: "alice".into(),
            outcome: Outcome::AlreadyDone,
            files: 3,
            bytes: 4096,
            copied_files: 1,
            copied_bytes: 10,
            verified_files: 3,
            skipped_entries: vec!["fifo (fifo)".into()],
        };
        let written = serde_json::to_string(&report).unwrap();
        let read: MigratedStudent = serde_json::from_str(&written).unwrap();
        assert_eq!(read.outcome, "already_done");
        assert_eq!(serde_json::to_string(&read).unwrap(), written);
    }
}
