//! Courses against the real engine: two courses with different images, limits and timeouts applied to their
//! workspaces (read back from the containers and from the culling), the operator's rules refusing profiles without
//! storing them, a workspace's course fixed while it is busy, and a course deleted only when none of its workspaces
//! is.

use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use workspaced::clock::ManualClock;
use workspaced::culler::Culler;
use workspaced::domain::StudentId;

use crate::helpers::*;

/// A second tag of the tiny image, so two courses run two different images without a second build.
const OTHER_IMAGE: &str = "workspaced/tiny-course:1";

fn tag_other_image() {
    let ok = Command::new("docker").args(["tag", TINY_IMAGE, OTHER_IMAGE]).status().expect("docker tag").success();
    assert!(ok, "docker tag {TINY_IMAGE} {OTHER_IMAGE}");
}

fn course_rules(s: &mut workspaced::config::Settings) {
    s.courses.allowed_images = vec![TINY_IMAGE.to_owned(), OTHER_IMAGE.to_owned()];
    s.courses.max_cpus = 1.0;
    s.courses.max_memory_bytes = 512 << 20;
    s.courses.max_pids_limit = 256;
    s.cull.interval = Duration::from_secs(3600); // only the sweeps this test runs
    s.workspace.stop_grace = Duration::from_secs(1);
}

#[tokio::test]
async fn two_courses_apply_their_own_image_limits_and_timeouts_to_their_workspaces() {
    tag_other_image();
    let clock = Arc::new(ManualClock::new(Utc::now()));
    let app = spawn_app_with_clock(course_rules, clock.clone()).await;
    let cs101 = format!(
        r#"{{"title":"CS 101","image":"{TINY_IMAGE}","cpus":0.5,"memory":"256m","pids_limit":128,
        "idle_timeout_seconds":600,"warning_lead_seconds":60}}"#
    );
    let (code, body) = app.put_json("/api/courses/cs101", &cs101).await;
    assert_eq!(code, 201, "{body}");
    assert_eq!((body["title"].as_str(), body["workspaces"].as_u64()), (Some("CS 101"), Some(0)));
    let math = format!(
        r#"{{"image":"{OTHER_IMAGE}","cpus":0.25,"memory":"128m","pids_limit":64,"idle_timeout_seconds":1200}}"#
    );
    assert_eq!(app.put_json("/api/courses/math", &math).await.0, 201);
    assert_eq!(app.put_json("/api/courses/math", &math).await.0, 200, "a second PUT replaces");

    let (code, a) = app.post_json("/api/workspaces/cs101-alice/start", r#"{"course":"cs101"}"#).await;
    assert_eq!(code, 200, "{a}");
    let (code, b) = app.post_json("/api/workspaces/math-bob/start", r#"{"course":"math"}"#).await;
    assert_eq!(code, 200, "{b}");
    // A workspace without a course keeps the service's settings.
    let plain = app.start("carol").await;
    assert_eq!(plain["course"], serde_json::Value::Null);

    // The containers carry each course's image and limits.
    for (id, image, nano, memory, pids) in [
        (a["container_id"].as_str().unwrap(), TINY_IMAGE, 500_000_000i64, 256i64 << 20, 128i64),
        (b["container_id"].as_str().unwrap(), OTHER_IMAGE, 250_000_000, 128 << 20, 64),
    ] {
        let c = app.inspect(id);
        assert_eq!(c["Config"]["Image"], image);
        let hc = &c["HostConfig"];
        assert_eq!((hc["NanoCpus"].as_i64(), hc["Memory"].as_i64()), (Some(nano), Some(memory)), "{id}");
        assert_eq!(hc["PidsLimit"].as_i64(), Some(pids));
    }
    assert_eq!(a["course"], "cs101");
    assert_eq!(a["limits"]["memory_bytes"], 256 << 20);
    assert_eq!(
        (a["policy"]["idle_timeout_seconds"].as_u64(), a["policy"]["warning_lead_seconds"].as_u64()),
        (Some(600), Some(60))
    );
    assert_eq!(b["policy"]["idle_timeout_seconds"], 1200);
    assert_eq!(b["policy"]["warning_lead_seconds"], 120, "math leaves the lead to the service");
    assert_eq!(plain["policy"]["idle_timeout_seconds"], 900);

    // The culling follows each course: cs101 is warned at 540 s and stopped at 600 s; math at 1080 s and 1200 s.
    let sweep = || async { Culler::new(app.lifecycle.clone()).sweep().await.unwrap() };
    clock.advance(Duration::from_secs(541));
    let r = sweep().await;
    assert_eq!(r.warned, [StudentId::parse("cs101-alice").unwrap()], "{r:?}");
    clock.advance(Duration::from_secs(60));
    let r = sweep().await;
    assert_eq!(r.stopped, [StudentId::parse("cs101-alice").unwrap()], "{r:?}");
    let (_, bob) = app.get("/api/workspaces/math-bob").await;
    assert_eq!(bob["status"], "running");
    // carol (900 s) and bob (1200 s) go in that order.
    clock.advance(Duration::from_secs(300));
    let r = sweep().await;
    assert_eq!(r.stopped, [StudentId::parse("carol").unwrap()], "{r:?}");
    clock.advance(Duration::from_secs(300));
    let r = sweep().await;
    assert_eq!(r.stopped, [StudentId::parse("math-bob").unwrap()], "{r:?}");

    // Counts per course, and the list filtered by course.
    let (_, list) = app.get("/api/courses").await;
    let courses: Vec<(&str, u64)> = list["courses"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| (c["course_id"].as_str().unwrap(), c["workspaces"].as_u64().unwrap()))
        .collect();
    assert_eq!(courses, [("cs101", 1), ("math", 1)]);
    let (_, only) = app.get("/api/workspaces?course=math").await;
    let ids: Vec<&str> =
        only["workspaces"].as_array().unwrap().iter().map(|w| w["student_id"].as_str().unwrap()).collect();
    assert_eq!(ids, ["math-bob"]);
}

#[tokio::test]
async fn the_operator_rules_refuse_a_profile_and_nothing_is_stored() {
    let app = spawn_app_with(course_rules).await;
    let cases = [
        (r#"{"image":"debian:bookworm"}"#, "image_not_allowed"),
        (r#"{"cpus":2}"#, "over_operator_limit"),
        (r#"{"memory":"1g"}"#, "over_operator_limit"),
        (r#"{"pids_limit":100000}"#, "over_operator_limit"),
        (r#"{"memory":"a lot"}"#, "invalid_profile"),
        (r#"{"idle_timeout_seconds":0}"#, "invalid_profile"),
        (r#"{"cpus":"1"}"#, "invalid_json"),
        (r#"{"imag":"x"}"#, "invalid_json"),
    ];
    for (body, code) in cases {
        let (status, answer) = app.put_json("/api/courses/cs101", body).await;
        assert_eq!((status, answer["error"]["code"].as_str()), (400, Some(code)), "{body}: {answer}");
    }
    let (status, answer) = app.put_json("/api/courses/cs101", r#"{"template":"starter"}"#).await;
    assert_eq!((status, answer["error"]["code"].as_str()), (409, Some("templates_disabled")), "{answer}");
    let (status, answer) = app.get("/api/courses/cs101").await;
    assert_eq!((status, answer["error"]["code"].as_str()), (404, Some("course_not_found")));
    for bad in ["CS101", "a..b", "-x"] {
        let (status, answer) = app.put_json(&format!("/api/courses/{bad}"), "{}").await;
        assert_eq!((status, answer["error"]["code"].as_str()), (400, Some("invalid_course_id")), "{bad}");
    }
    // A start in an unknown course creates nothing; a bad course id in the body is told apart from bad JSON.
    let (status, answer) = app.post_json("/api/workspaces/dave/start", r#"{"course":"nope"}"#).await;
    assert_eq!((status, answer["error"]["code"].as_str()), (404, Some("course_not_found")));
    assert_eq!(app.get("/api/workspaces/dave").await.0, 404);
    let (status, answer) = app.post_json("/api/workspaces/dave/start", r#"{"course":"No Way"}"#).await;
    assert_eq!((status, answer["error"]["code"].as_str()), (400, Some("invalid_course_id")));
    let (status, answer) = app.post_json("/api/workspaces/dave/start", r#"{"cours":"x"}"#).await;
    assert_eq!((status, answer["error"]["code"].as_str()), (400, Some("invalid_json")));
    assert!(app.containers().is_empty());
}

#[tokio::test]
async fn a_busy_workspace_keeps_its_course_and_a_busy_course_is_not_deleted() {
    let app = spawn_app_with(course_rules).await;
    assert_eq!(app.put_json("/api/courses/a", "{}").await.0, 201);
    assert_eq!(app.put_json("/api/courses/b", r#"{"title":"Course B"}"#).await.0, 201);
    let (code, _) = app.post_json("/api/workspaces/erin/start", r#"{"course":"a"}"#).await;
    assert_eq!(code, 200);
    // The same course again is an idempotent start; another one is refused while it runs.
    assert_eq!(app.post_json("/api/workspaces/erin/start", r#"{"course":"a"}"#).await.0, 200);
    let (status, answer) = app.post_json("/api/workspaces/erin/start", r#"{"course":"b"}"#).await;
    assert_eq!((status, answer["error"]["code"].as_str()), (409, Some("course_conflict")), "{answer}");
    let (status, answer) = app.post_json("/api/workspaces/erin/launch", r#"{"course":"b"}"#).await;
    assert_eq!((status, answer["error"]["code"].as_str()), (409, Some("course_conflict")), "{answer}");
    let (status, answer) =
        app.client.delete(app.url("/api/courses/a")).send().await.map(|r| (r.status().as_u16(), r)).unwrap();
    let answer: serde_json::Value = answer.json().await.unwrap();
    assert_eq!((status, answer["error"]["code"].as_str()), (409, Some("course_in_use")));
    assert_eq!(app.get("/api/workspaces/erin").await.1["course"], "a");

    // Stopped, it may move; the launcher's status names the course.
    app.stop("erin").await;
    let (code, moved) = app.post_json("/api/workspaces/erin/start", r#"{"course":"b"}"#).await;
    assert_eq!((code, moved["course"].as_str()), (200, Some("b")), "{moved}");
    app.stop("erin").await;
    // A launch link with a course puts a new student in it before any start.
    let (code, _) = app.post_json("/api/workspaces/frank/launch", r#"{"course":"a"}"#).await;
    assert_eq!(code, 200);
    let (_, frank) = app.get("/api/workspaces/frank").await;
    assert_eq!((frank["status"].as_str(), frank["course"].as_str()), (Some("stopped"), Some("a")));

    let r = app.client.delete(app.url("/api/courses/b")).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 204);
    assert_eq!(app.get("/api/courses/b").await.0, 404);
    let (_, erin) = app.get("/api/workspaces/erin").await;
    assert_eq!(erin["course"], serde_json::Value::Null, "the workspace left the deleted course");
    assert_eq!(app.client.delete(app.url("/api/courses/b")).send().await.unwrap().status().as_u16(), 404);
}
