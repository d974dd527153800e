//! `GET /api/events` through the real application on a loopback port. Events are recorded straight into the app's
//! store with the store's own methods; no container is started and no engine is contacted.

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use serde_json::Value;
use workspaced::app::Application;
use workspaced::config::Settings;
use workspaced::domain::{EventKind, InstanceId, StopReason, StudentId};
use workspaced::store::{NewEvent, Store};

struct TestApp {
    addr: std::net::SocketAddr,
    store: Store,
    /// Sends an LMS key: the event stream is the LMS's.
    client: reqwest::Client,
    _tmp: tempfile::TempDir,
}

async fn spawn_app() -> TestApp {
    let tmp = tempfile::tempdir().unwrap();
    let instance = InstanceId::parse(&format!("t{:08x}", rand::random::<u32>())).unwrap();
    let base_path = tmp.path().join("workspace-data");
    std::fs::create_dir(&base_path).unwrap();
    let mut settings = Settings {
        base_path,
        database_url: format!("sqlite://{}", tmp.path().join("workspaced.db").display()),
        listen: "127.0.0.1:0".to_owned(),
        instance: instance.clone(),
        ..Settings::default()
    };
    // The workspaces recorded here have no containers. The reconciler would record them `lost`, so the engine is an
    // absent socket: the reconciler then changes nothing, and the tests need no Docker.
    settings.cull.interval = Duration::from_secs(3600);
    settings.reconcile_interval = Duration::from_secs(3600);
    let no_engine = tmp.path().join("no-docker.sock");
    let runtime =
        workspaced::runtime::docker::DockerRuntime::connect_lazy_at(no_engine, instance, Duration::from_secs(5))
            .unwrap();
    let store = Store::connect(&settings.database_url).await.expect("store");
    let app =
        Application::build_on(settings, store.clone(), Arc::new(runtime), Arc::new(workspaced::clock::SystemClock))
            .await
            .expect("app builds");
    let addr = app.addr();
    let key = workspaced::auth::create_key(&store, workspaced::auth::Role::Lms, "sse", Utc::now()).await.unwrap().key;
    let mut auth = reqwest::header::HeaderMap::new();
    auth.insert(reqwest::header::AUTHORIZATION, format!("Bearer {key}").parse().unwrap());
    let client = reqwest::Client::builder().default_headers(auth).build().unwrap();
    tokio::spawn(app.run_until(std::future::pending()));
    TestApp { addr, store, client, _tmp: tmp }
}

/// One server-sent event as received.
#[derive(Debug, Clone, PartialEq)]
struct Received {
    id: i64,
    event: String,
    data: Value,
}

/// A minimal SSE reader over reqwest's body chunks.
struct SseClient {
    response: reqwest::Response,
    buffer: String,
}

impl SseClient {
    async fn connect(app: &TestApp, query: &str, last_event_id: Option<i64>) -> Self {
        let mut request = app.client.get(format!("http://{}/api/events{query}", app.addr));
        if let Some(id) = last_event_id {
            request = request.header("Last-Event-ID", id.to_string());
        }
        let response = request.send().await.expect("request");
        assert_eq!(response.status(), 200);
        let content_type = response.headers()["content-type"].to_str().unwrap().to_owned();
        assert!(content_type.starts_with("text/event-stream"), "{content_type}");
        Self { response, buffer: String::new() }
    }

    /// The next event (comments skipped), failing the test after a few seconds without one.
    async fn next(&mut self) -> Received {
        loop {
            if let Some(end) = self.buffer.find("\n\n") {
                let block: String = self.buffer.drain(..end + 2).collect();
                let (mut id, mut event, mut data) = (None, None, None);
                for line in block.lines() {
                    match line.split_once(':') {
                        Some(("id", v)) => id = Some(v.trim().parse::<i64>().unwrap()),
                        Some(("event", v)) => event = Some(v.trim().to_owned()),
                        Some(("data", v)) => data = Some(serde_json::from_str::<Value>(v.trim()).unwrap()),
                        _ => {} // a keep-alive comment
                    }
                }
                if let (Some(id), Some(event), Some(data)) = (id, event, data) {
                    return Received { id, event, data };
                }
                continue;
            }
            let chunk = tokio::time::timeout(Duration::from_secs(5), self.response.chunk())
                .await
                .expect("an event within 5 s")
                .expect("stream readable")
                .expect("stream still open");
            self.buffer.push_str(std::str::from_utf8(&chunk).unwrap());
        }
    }

    /// Events until (and including) the one with id `last`.
    async fn until(&mut self, last: i64) -> Vec<Received> {
        let mut got = Vec::new();
        loop {
            let e = self.next().await;
            let id = e.id;
            got.push(e);
            if id >= last {
                return got;
            }
        }
    }
}

fn sid(s: &str) -> StudentId {
    StudentId::parse(s).unwrap()
}

async fn start(store: &Store, student: &str) {
    let now = Utc::now();
    store.mark_starting(&sid(student), now).await.unwrap();
    let started = NewEvent { kind: EventKind::Started, reason: None, message: "Workspace running." };
    store.mark_running(&sid(student), "cid", &workspaced::store::Route::new(1234, None), now, &started).await.unwrap();
}

async fn warn(store: &Store, student: &str) -> i64 {
    store
        .record_warning(
            &sid(student),
            workspaced::domain::StopReason::Idle,
            "Your workspace stops in 2 minutes.",
            Utc::now(),
        )
        .await
        .unwrap()
        .unwrap()
}

async fn stop_idle(store: &Store, student: &str) -> i64 {
    store.mark_stopped(&sid(student), StopReason::Idle, Utc::now()).await.unwrap();
    store.events(Some(&sid(student)), 0, 1000).await.unwrap().last().unwrap().id
}

/// Every stored event of `student`, as the stream should show it.
async fn stored(store: &Store, student: &str, after: i64, upto: i64) -> Vec<i64> {
    let events = store.events(Some(&sid(student)), after, 1000).await.unwrap();
    events.into_iter().map(|e| e.id).filter(|id| *id <= upto).collect()
}

fn check_shape(e: &Received) {
    assert_eq!(e.data["id"].as_i64(), Some(e.id), "the SSE id is the event id");
    assert_eq!(e.data["type"].as_str(), Some(e.event.as_str()), "the SSE event name is the kind");
    chrono::DateTime::parse_from_rfc3339(e.data["at"].as_str().unwrap()).unwrap();
}

#[tokio::test]
async fn a_client_filtered_on_a_student_gets_that_students_past_and_live_events_and_no_others() {
    let app = spawn_app().await;
    start(&app.store, "alice").await;
    start(&app.store, "bob").await;

    let mut client = SseClient::connect(&app, "?student_id=alice", None).await;
    let replayed = client.until(stored(&app.store, "alice", 0, i64::MAX).await[1]).await;
    assert_eq!(replayed.iter().map(|e| e.event.as_str()).collect::<Vec<_>>(), ["starting", "started"]);

    warn(&app.store, "bob").await;
    warn(&app.store, "alice").await;
    stop_idle(&app.store, "bob").await;
    let last = stop_idle(&app.store, "alice").await;
    let live = client.until(last).await;

    let all: Vec<Received> = replayed.into_iter().chain(live).collect();
    assert_eq!(all.iter().map(|e| e.id).collect::<Vec<_>>(), stored(&app.store, "alice", 0, last).await);
    assert!(all.iter().all(|e| e.data["student_id"] == "alice"), "only alice's events: {all:?}");
    all.iter().for_each(check_shape);
    let stop = all.last().unwrap();
    assert_eq!((stop.event.as_str(), &stop.data["reason"]), ("stopped", &Value::from("idle")));
    assert_eq!(stop.data["message"], "Workspace stopped due to inactivity.");
    assert!(all.iter().any(|e| e.event == "warning"));
}

#[tokio::test]
async fn a_client_that_reconnects_with_last_event_id_gets_the_rest_without_loss_or_duplicates() {
    let app = spawn_app().await;
    start(&app.store, "alice").await;
    warn(&app.store, "alice").await;

    let mut first = SseClient::connect(&app, "?student_id=alice", None).await;
    let seen = first.next().await;
    drop(first); // the client goes away after one event

    // Recorded while disconnected, then after reconnecting: both must arrive, once.
    stop_idle(&app.store, "alice").await;
    start(&app.store, "alice").await;
    // `after=0` is overridden by the header.
    let mut second = SseClient::connect(&app, "?student_id=alice&after=0", Some(seen.id)).await;
    warn(&app.store, "alice").await;
    let last = stop_idle(&app.store, "alice").await;
    let rest = second.until(last).await;

    let ids: Vec<i64> = rest.iter().map(|e| e.id).collect();
    assert_eq!(ids, stored(&app.store, "alice", seen.id, last).await, "everything after the last seen id, once");
    assert_eq!(ids.len(), 7);
    rest.iter().for_each(check_shape);
}

#[tokio::test]
async fn tail_starts_at_the_recent_past_and_goes_on_live() {
    let app = spawn_app().await;
    for s in ["a1", "a2", "a3"] {
        start(&app.store, s).await; // two events each: starting, started
    }
    let all = app.store.events(None, 0, 1000).await.unwrap();
    let newest = all.last().unwrap().id;
    let mut client = SseClient::connect(&app, "?tail=3", None).await;
    let first = client.until(newest).await;
    assert_eq!(first.iter().map(|e| e.id).collect::<Vec<_>>(), (newest - 2..=newest).collect::<Vec<_>>());
    let live = stop_idle(&app.store, "a1").await;
    assert_eq!(client.until(live).await.last().unwrap().id, live, "then live");
}

#[tokio::test]
async fn bad_query_values_are_rejected_with_400_in_the_common_error_shape() {
    let app = spawn_app().await;
    let client = app.client.clone();
    let cases: &[(&str, Option<&str>, &str)] = &[
        ("?student_id=Alice", None, "invalid_student_id"),
        ("?student_id=../etc", None, "invalid_student_id"),
        ("?student_id=", None, "invalid_student_id"),
        ("?student_id=alice&after=-1", None, "invalid_query"),
        ("?student_id=alice&after=abc", None, "invalid_query"),
        ("?student_id=alice", Some("x"), "invalid_query"),
        ("?student=alice", None, "invalid_query"),
        ("?tail=-3", None, "invalid_query"),
        ("?tail=3&after=2", None, "invalid_query"),
    ];
    for (query, last_event_id, code) in cases {
        let mut request = client.get(format!("http://{}/api/events{query}", app.addr));
        if let Some(v) = last_event_id {
            request = request.header("Last-Event-ID", *v);
        }
        let response = request.send().await.unwrap();
        assert_eq!(response.status(), 400, "{query} {last_event_id:?}");
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["error"]["code"], *code, "{query} {last_event_id:?}: {body}");
        assert!(body["error"]["message"].is_string());
    }
}
