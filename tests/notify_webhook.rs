//! The webhook deliverer against a local receiver on 127.0.0.1 and a store in a temporary SQLite file. Events are
//! recorded with the store's own methods; no Docker is involved.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use chrono::{DateTime, Utc};
use hmac::{Hmac, Mac};
use serde_json::Value;
use sha2::Sha256;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use workspaced::config::NotifySettings;
use workspaced::domain::{EventKind, StopReason, StudentId};
use workspaced::notify::webhook::{self, CURSOR_KEY};
use workspaced::store::{NewEvent, Store};

const SECRET: &str = "test-secret";

/// One request as the receiver saw it, and what it answered.
#[derive(Clone, Debug)]
struct Received {
    headers: HeaderMap,
    body: Value,
    raw: Bytes,
    acknowledged: bool,
}

#[derive(Default)]
struct Receiver {
    requests: Mutex<Vec<Received>>,
    /// Answer 500 to this many requests before answering 204.
    fail_first: AtomicUsize,
    /// Answer 422 to every event of this student.
    refuse_student: Mutex<Option<String>>,
}

impl Receiver {
    async fn spawn(fail_first: usize) -> (Arc<Self>, String) {
        let receiver = Arc::new(Receiver { fail_first: AtomicUsize::new(fail_first), ..Default::default() });
        let app = axum::Router::new().route("/hook", axum::routing::post(hook)).with_state(receiver.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/hook", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await });
        (receiver, url)
    }

    fn requests(&self) -> Vec<Received> {
        self.requests.lock().unwrap().clone()
    }

    /// Ids the receiver acknowledged, in the order it did.
    fn acknowledged_ids(&self) -> Vec<i64> {
        self.requests().iter().filter(|r| r.acknowledged).map(|r| r.body["id"].as_i64().unwrap()).collect()
    }

    /// Waits until `n` events were acknowledged.
    async fn wait_for_acks(&self, n: usize) -> Vec<Received> {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let acked: Vec<Received> = self.requests().into_iter().filter(|r| r.acknowledged).collect();
            if acked.len() >= n {
                return acked;
            }
            assert!(
                Instant::now() < deadline,
                "only {} of {n} events acknowledged: {:?}",
                acked.len(),
                self.requests()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

async fn hook(State(r): State<Arc<Receiver>>, headers: HeaderMap, raw: Bytes) -> StatusCode {
    let body: Value = serde_json::from_slice(&raw).unwrap_or(Value::Null);
    let refused = r.refuse_student.lock().unwrap().as_deref().is_some_and(|s| body["student_id"] == s);
    if refused {
        r.requests.lock().unwrap().push(Received { headers, body, raw, acknowledged: false });
        return StatusCode::UNPROCESSABLE_ENTITY;
    }
    let fail = r.fail_first.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1)).is_ok();
    r.requests.lock().unwrap().push(Received { headers, body, raw, acknowledged: !fail });
    if fail {
        StatusCode::INTERNAL_SERVER_ERROR
    } else {
        StatusCode::NO_CONTENT
    }
}

async fn temp_store() -> (Store, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("t.db").display());
    (Store::connect(&url).await.unwrap(), dir)
}

fn settings(url: &str) -> NotifySettings {
    NotifySettings { webhook_url: Some(url.to_owned()), webhook_secret: Some(SECRET.to_owned()) }
}

fn id(s: &str) -> StudentId {
    StudentId::parse(s).unwrap()
}

struct Deliverer {
    token: CancellationToken,
    task: JoinHandle<()>,
}

impl Deliverer {
    /// Starts the deliverer and waits until it has settled its starting position: events recorded after this call
    /// are new to it.
    async fn start(store: &Store, url: &str) -> Self {
        let newest = *store.subscribe_events().borrow();
        assert!(newest > 0, "record an event first, so the test can see when the cursor is saved");
        let token = CancellationToken::new();
        let task = tokio::spawn(webhook::run(store.clone(), settings(url), token.clone()));
        let deadline = Instant::now() + Duration::from_secs(5);
        while store.job_state(CURSOR_KEY).await.unwrap() < newest {
            assert!(Instant::now() < deadline, "the deliverer did not save its starting position");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        Self { token, task }
    }

    /// Cancels and checks that the loop ends promptly.
    async fn stop(self) {
        self.token.cancel();
        tokio::time::timeout(Duration::from_secs(1), self.task)
            .await
            .expect("the deliverer ends promptly on shutdown")
            .unwrap();
    }
}

/// A student's whole session: starting (not sent), started, warning, stopped for inactivity.
async fn session(store: &Store, student: &str) {
    let s = id(student);
    let now = Utc::now();
    store.mark_starting(&s, now).await.unwrap();
    let started = NewEvent { kind: EventKind::Started, reason: None, message: "Workspace running." };
    store.mark_running(&s, "cid", &workspaced::store::Route::new(1234, None), now, &started).await.unwrap();
    store
        .record_warning(&s, workspaced::domain::StopReason::Idle, "Your workspace stops in 2 minutes.", now)
        .await
        .unwrap()
        .expect("warning recorded");
    store.mark_stopped(&s, StopReason::Idle, now).await.unwrap();
}

/// Ids of the stored events the webhook sends, after `after`.
async fn deliverable_ids(store: &Store, after: i64) -> Vec<i64> {
    let events = store.events(None, after, 1000).await.unwrap();
    events.into_iter().filter(|e| webhook::is_delivered(e.kind)).map(|e| e.id).collect()
}

fn header<'a>(r: &'a Received, name: &str) -> &'a str {
    r.headers.get(name).unwrap_or_else(|| panic!("header {name} missing")).to_str().unwrap()
}

fn signature_is_valid(r: &Received) -> bool {
    let timestamp = header(r, "x-workspaced-timestamp");
    let Some(sig) = header(r, "x-workspaced-signature").strip_prefix("sha256=") else { return false };
    let mut mac = Hmac::<Sha256>::new_from_slice(SECRET.as_bytes()).unwrap();
    mac.update(format!("{timestamp}.").as_bytes());
    mac.update(&r.raw);
    mac.verify_slice(&hex::decode(sig).unwrap()).is_ok()
}

#[tokio::test]
async fn an_idle_stop_arrives_signed_with_its_reason_and_message_and_history_is_not_sent() {
    let (store, _dir) = temp_store().await;
    let (receiver, url) = Receiver::spawn(0).await;
    session(&store, "history").await;
    let deliverer = Deliverer::start(&store, &url).await;

    session(&store, "alice").await;
    let acked = receiver.wait_for_acks(3).await;
    let types: Vec<&str> = acked.iter().map(|r| r.body["type"].as_str().unwrap()).collect();
    assert_eq!(types, ["started", "warning", "stopped"], "`starting` is not sent; history before the first run is not");

    let now = Utc::now().timestamp();
    for r in &acked {
        assert!(signature_is_valid(r), "bad signature on {:?}", r.body);
        assert_eq!(header(r, "content-type"), "application/json");
        assert_eq!(header(r, "x-workspaced-event-id"), r.body["id"].to_string());
        let ts: i64 = header(r, "x-workspaced-timestamp").parse().unwrap();
        assert!((now - ts).abs() < 60, "timestamp {ts} is not the current time {now}");
    }
    let stop = &acked[2].body;
    assert_eq!(stop["student_id"], "alice");
    assert_eq!(stop["reason"], "idle");
    assert_eq!(stop["message"], "Workspace stopped due to inactivity.");
    DateTime::parse_from_rfc3339(stop["at"].as_str().unwrap()).expect("`at` is RFC 3339");
    assert_eq!(acked[0].body["reason"], Value::Null, "a start has no reason");

    let mut replayed = acked[2].clone();
    replayed.headers.insert("x-workspaced-timestamp", (now + 3600).to_string().parse().unwrap());
    assert!(!signature_is_valid(&replayed), "the signature covers the timestamp");
    let mut forged = acked[2].clone();
    forged.raw = Bytes::from(String::from_utf8(forged.raw.to_vec()).unwrap().replace("alice", "mallory"));
    assert!(!signature_is_valid(&forged), "the signature covers the body");
    deliverer.stop().await;
}

#[tokio::test]
async fn a_refused_delivery_is_retried_with_the_same_id_and_every_event_arrives_once_in_order() {
    let (store, _dir) = temp_store().await;
    let (receiver, url) = Receiver::spawn(2).await;
    store.mark_starting(&id("seed"), Utc::now()).await.unwrap();
    let deliverer = Deliverer::start(&store, &url).await;
    let boot = store.job_state(CURSOR_KEY).await.unwrap();

    session(&store, "alice").await;
    session(&store, "bob").await;
    let expected = deliverable_ids(&store, boot).await;
    assert_eq!(expected.len(), 6);
    receiver.wait_for_acks(expected.len()).await;

    let requests = receiver.requests();
    let first_three: Vec<i64> = requests[..3].iter().map(|r| r.body["id"].as_i64().unwrap()).collect();
    assert_eq!(first_three, [expected[0]; 3], "two 500s, then the same event again");
    assert!(!requests[0].acknowledged && !requests[1].acknowledged && requests[2].acknowledged);
    assert_eq!(receiver.acknowledged_ids(), expected, "one acknowledgement per event, in id order, none missing");
    let distinct: BTreeSet<i64> = requests.iter().map(|r| r.body["id"].as_i64().unwrap()).collect();
    assert_eq!(distinct.len(), expected.len());
    assert!(requests.iter().all(signature_is_valid), "every attempt is signed");
    deliverer.stop().await;
    assert_eq!(store.job_state(CURSOR_KEY).await.unwrap(), *expected.last().unwrap());
}

#[tokio::test]
async fn a_restarted_deliverer_does_not_resend_acknowledged_events_and_sends_those_recorded_meanwhile() {
    let (store, _dir) = temp_store().await;
    let (receiver, url) = Receiver::spawn(0).await;
    store.mark_starting(&id("seed"), Utc::now()).await.unwrap();
    let first = Deliverer::start(&store, &url).await;
    let boot = store.job_state(CURSOR_KEY).await.unwrap();
    session(&store, "alice").await;
    receiver.wait_for_acks(3).await;
    first.stop().await;

    session(&store, "bob").await; // while no deliverer runs
    let second = Deliverer::start(&store, &url).await;
    session(&store, "carol").await;
    receiver.wait_for_acks(9).await;
    // Give a wrongly resent event the time to show up.
    tokio::time::sleep(Duration::from_millis(300)).await;
    second.stop().await;

    let expected = deliverable_ids(&store, boot).await;
    assert_eq!(expected.len(), 9);
    assert_eq!(receiver.acknowledged_ids(), expected, "nothing sent twice, nothing recorded while down lost");
    assert_eq!(receiver.requests().len(), 9);
}

#[tokio::test]
async fn shutdown_during_a_backoff_ends_the_deliverer_promptly_without_moving_the_cursor() {
    let (store, _dir) = temp_store().await;
    let (receiver, url) = Receiver::spawn(usize::MAX).await;
    store.mark_starting(&id("seed"), Utc::now()).await.unwrap();
    let deliverer = Deliverer::start(&store, &url).await;
    let boot = store.job_state(CURSOR_KEY).await.unwrap();
    session(&store, "alice").await;
    let deadline = Instant::now() + Duration::from_secs(5);
    while receiver.requests().len() < 2 {
        assert!(Instant::now() < deadline, "no retry seen");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    deliverer.stop().await;
    // After two refusals the deliverer sleeps 1 s before the third attempt; shutdown cuts that sleep short, so the
    // third attempt never comes (a shutdown that waited out the sleep would have made it first).
    assert_eq!(receiver.requests().len(), 2, "no attempt after the shutdown");
    let refused = deliverable_ids(&store, boot).await[0];
    let cursor = store.job_state(CURSOR_KEY).await.unwrap();
    assert_eq!(cursor, refused - 1, "the skipped `starting` is passed, the refused `started` is not");
}

#[tokio::test]
async fn without_a_url_the_deliverer_returns_at_once() {
    let (store, _dir) = temp_store().await;
    let never = CancellationToken::new();
    tokio::time::timeout(Duration::from_millis(100), webhook::run(store, NotifySettings::default(), never))
        .await
        .expect("returns without waiting for shutdown");
}

#[tokio::test]
async fn an_event_the_receiver_always_refuses_is_given_up_and_later_events_still_arrive() {
    let (store, _dir) = temp_store().await;
    let (receiver, url) = Receiver::spawn(0).await;
    *receiver.refuse_student.lock().unwrap() = Some("refused".into());
    store.mark_starting(&id("seed"), Utc::now()).await.unwrap();
    let deliverer = Deliverer::start(&store, &url).await;
    let boot = store.job_state(CURSOR_KEY).await.unwrap();

    let now = Utc::now();
    store.mark_starting(&id("refused"), now).await.unwrap();
    store.mark_failed(&id("refused"), "no image", now).await.unwrap();
    session(&store, "alice").await;
    let alice: Vec<i64> = deliverable_ids(&store, boot).await.into_iter().skip(1).collect();
    receiver.wait_for_acks(alice.len()).await;

    let refused: Vec<Received> =
        receiver.requests().into_iter().filter(|r| r.body["student_id"] == "refused").collect();
    assert_eq!(refused.len() as u64, webhook::REFUSED_ATTEMPTS, "a 4xx is retried a few times, then given up");
    assert_eq!(receiver.acknowledged_ids(), alice, "the events after it arrive, in order");
    deliverer.stop().await;
}
