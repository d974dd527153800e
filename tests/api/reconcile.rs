//! Store and engine agree: restarts adopt running workspaces, orphans go, lost containers are recorded, interrupted
//! operations are finished, an unreachable engine changes nothing, and bursts queue instead of failing.

use std::collections::HashMap;
use std::process::Command;
use std::time::Duration;

use workspaced::domain::StudentId;
use workspaced::reconciler::reconcile_once;

use crate::helpers::*;

fn docker_run_labelled(name: &str, labels: &[(&str, &str)]) -> String {
    let mut cmd = Command::new("docker");
    cmd.args(["run", "-d", "--name", name]);
    for (k, v) in labels {
        cmd.args(["--label", &format!("{k}={v}")]);
    }
    let out = cmd.arg(TINY_IMAGE).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// Removes containers by id when dropped.
struct RemoveOnDrop(Vec<String>);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        let _ = Command::new("docker").arg("rm").arg("-f").args(&self.0).output();
    }
}

fn exists(id: &str) -> bool {
    Command::new("docker").args(["inspect", id]).output().unwrap().status.success()
}

#[tokio::test]
async fn a_restart_adopts_running_workspaces_untouched() {
    let mut app = spawn_app().await;
    let before = app.start("keep-1").await;
    app.restart().await;
    let (_, after) = app.get("/api/workspaces/keep-1").await;
    assert_eq!(after["status"], "running");
    assert_eq!(after["container_id"], before["container_id"], "same container");
    let report = reconcile_once(&app.lifecycle).await.unwrap();
    assert!(report.lost.is_empty() && report.orphans_removed.is_empty(), "{report:?}");
    // Adopted: heartbeats work again without a new start.
    let (code, _) = app.heartbeat("keep-1").await;
    assert_eq!(code, 200);
    assert_eq!(app.containers().len(), 1);
}

#[tokio::test]
async fn orphans_are_removed_and_foreign_or_unlabelled_containers_are_left_alone() {
    let app = spawn_app().await;
    let inst = app.instance.clone();
    let orphan = docker_run_labelled(
        &format!("ws-orphan-1.{inst}"),
        &[("workspaced.managed-by", "workspaced"), ("workspaced.instance", &inst), ("workspaced.student", "orphan-1")],
    );
    let foreign_inst = format!("{inst}x");
    let foreign = docker_run_labelled(
        &format!("ws-orphan-2.{foreign_inst}"),
        &[
            ("workspaced.managed-by", "workspaced"),
            ("workspaced.instance", &foreign_inst),
            ("workspaced.student", "orphan-2"),
        ],
    );
    let unlabelled = docker_run_labelled(&format!("ws-orphan-3-{inst}"), &[]);
    // The app's cleanup does not see these two; remove them even when an assertion fails.
    let _cleanup = RemoveOnDrop(vec![foreign.clone(), unlabelled.clone()]);

    let report = reconcile_once(&app.lifecycle).await.unwrap();
    assert_eq!(report.orphans_removed, [StudentId::parse("orphan-1").unwrap()], "{report:?}");
    assert!(!exists(&orphan), "our orphan is removed");
    assert!(exists(&foreign), "another instance's container is never touched");
    assert!(exists(&unlabelled), "an unlabelled container is never touched");
    assert_eq!(app.event_kinds("orphan-1").await, ["orphan_removed"]);
}

#[tokio::test]
async fn a_record_whose_container_vanished_is_marked_lost() {
    let app = spawn_app().await;
    let ws = app.start("lost-1").await;
    Command::new("docker").args(["rm", "-f", ws["container_id"].as_str().unwrap()]).output().unwrap();
    let report = reconcile_once(&app.lifecycle).await.unwrap();
    assert_eq!(report.lost, [StudentId::parse("lost-1").unwrap()]);
    let (_, ws) = app.get("/api/workspaces/lost-1").await;
    assert_eq!((ws["status"].as_str(), ws["stop_reason"].as_str()), (Some("stopped"), Some("lost")));
    // A second pass finds nothing to do: the reconciler is idempotent.
    let again = reconcile_once(&app.lifecycle).await.unwrap();
    assert_eq!(again, Default::default());
}

#[tokio::test]
async fn an_interrupted_start_is_finished_by_the_next_pass() {
    let app = spawn_app().await;
    let student = StudentId::parse("half").unwrap();
    // What a kill -9 between "record starting" and "container ready" leaves behind.
    app.store.mark_starting(&student, chrono::Utc::now()).await.unwrap();
    let inst = app.instance.clone();
    docker_run_labelled(
        &format!("ws-half.{inst}"),
        &[("workspaced.managed-by", "workspaced"), ("workspaced.instance", &inst), ("workspaced.student", "half")],
    );
    let report = reconcile_once(&app.lifecycle).await.unwrap();
    assert_eq!(report.interrupted, [student]);
    assert!(app.containers().is_empty());
    let (_, ws) = app.get("/api/workspaces/half").await;
    assert_eq!(ws["status"], "failed");
    // And the student can start again.
    assert_eq!(app.start("half").await["status"], "running");
}

#[tokio::test]
async fn an_unreachable_engine_gives_503_changes_nothing_and_recovery_is_automatic() {
    let proxy = EngineProxy::start().await;
    let app = spawn_app_with_socket(|s| s.reconcile_interval = Duration::from_secs(1), &proxy.path).await;
    app.start("steady").await;
    proxy.cut();

    let (code, body) = app.post("/api/workspaces/other/start").await;
    assert_eq!((code, body["error"]["code"].as_str()), (503, Some("runtime_unavailable")), "{body}");
    let (code, body) = app.post("/api/workspaces/steady/stop").await;
    assert_eq!((code, body["error"]["code"].as_str()), (503, Some("runtime_unavailable")), "{body}");
    let (code, ready) = app.get("/readyz").await;
    assert_eq!((code, ready["ready"].as_bool()), (503, Some(false)), "{ready}");
    assert!(reconcile_once(&app.lifecycle).await.is_err(), "a pass without the engine fails");
    let (_, steady) = app.get("/api/workspaces/steady").await;
    assert_eq!(steady["status"], "running", "nothing is marked lost while the engine is away: {steady}");
    let (code, _) = app.get("/api/workspaces/other").await;
    assert_eq!(code, 404, "a refused start leaves no record");

    proxy.restore();
    // The reconciler failed every pass meanwhile, so readiness also waits for its next finished pass.
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let (code, ready) = loop {
        let (code, ready) = app.get("/readyz").await;
        if code == 200 || std::time::Instant::now() > deadline {
            break (code, ready);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(code, 200, "{ready}");
    assert_eq!(app.start("other").await["status"], "running");
    assert_eq!(app.stop("steady").await["status"], "stopped");
}

#[tokio::test]
async fn a_burst_of_fifty_starts_queues_and_all_end_running() {
    let app = spawn_app_with(|s| s.max_concurrent_starts = 4).await;
    let ids: Vec<String> = (0..50).map(|i| format!("burst-{i:02}")).collect();
    let starts = ids.iter().map(|id| {
        let url = app.url(&format!("/api/workspaces/{id}/start"));
        let client = app.client.clone();
        async move {
            let r = client.post(url).send().await.unwrap();
            (r.status().as_u16(), r.json::<serde_json::Value>().await.unwrap())
        }
    });
    let all = tokio::spawn(futures_util::future::join_all(starts));

    // While they wait, the status API reports queue positions.
    let mut positions = Vec::new();
    for _ in 0..100 {
        let (_, list) = app.get("/api/workspaces?status=queued").await;
        for w in list["workspaces"].as_array().unwrap() {
            if let Some(p) = w["queue_position"].as_u64() {
                assert!(w["queue_estimate_seconds"].is_u64());
                positions.push(p);
            }
        }
        if positions.len() > 10 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let results = all.await.unwrap();
    for (code, body) in &results {
        assert_eq!(*code, 200, "{body}");
        assert_eq!(body["status"], "running");
    }
    assert!(!positions.is_empty(), "queue positions were reported");
    assert!(positions.iter().all(|p| *p >= 1 && *p <= 50));
    assert_eq!(app.containers().len(), 50);
}

#[tokio::test]
async fn a_full_queue_answers_429_with_retry_after() {
    let app = spawn_app_with(|s| {
        s.max_concurrent_starts = 1;
        s.max_queued_starts = 1;
    })
    .await;
    let (a, b, c) = tokio::join!(
        app.post("/api/workspaces/q-a/start?wait=false"),
        app.post("/api/workspaces/q-b/start?wait=false"),
        app.post("/api/workspaces/q-c/start?wait=false")
    );
    let mut codes = [a.0, b.0, c.0];
    codes.sort();
    assert!(codes.contains(&429), "one of three is refused: {codes:?} {a:?} {b:?} {c:?}");
    let refused = [a, b, c].into_iter().find(|r| r.0 == 429).unwrap();
    assert_eq!(refused.1["error"]["code"], "start_queue_full");
    let r = app.client.post(app.url("/api/workspaces/q-d/start")).send().await.unwrap();
    if r.status() == 429 {
        assert!(r.headers().contains_key("retry-after"));
    }
    // Let the admitted starts finish, so no container is created after the app's cleanup.
    for id in ["q-a", "q-b", "q-c", "q-d"] {
        app.wait_for(id, Duration::from_secs(30), |w| {
            !["queued", "starting"].contains(&w["status"].as_str().unwrap_or(""))
        })
        .await;
    }
}

#[tokio::test]
async fn start_can_return_at_once_and_finish_in_the_background() {
    let app = spawn_app().await;
    let (code, ws) = app.post("/api/workspaces/bg-1/start?wait=false").await;
    assert_eq!(code, 202, "{ws}");
    assert!(["queued", "starting"].contains(&ws["status"].as_str().unwrap()), "{ws}");
    let done = app.wait_for("bg-1", Duration::from_secs(20), |w| w["status"] == "running").await;
    assert_eq!(done["status"], "running");
    // Asking again for a running workspace answers 200 at once; a bad flag is a 400 that changes nothing.
    let (code, ws) = app.post("/api/workspaces/bg-1/start?wait=false").await;
    assert_eq!((code, ws["status"].as_str()), (200, Some("running")));
    let (code, ws) = app.post("/api/workspaces/bg-2/start?wait=maybe").await;
    assert_eq!((code, ws["error"]["code"].as_str()), (400, Some("invalid_query")));
    assert_eq!(app.get("/api/workspaces/bg-2").await.0, 404);
}

#[tokio::test]
async fn two_hundred_random_interleavings_never_make_two_containers_and_end_in_agreement() {
    use rand::{Rng, SeedableRng};
    let clock = std::sync::Arc::new(workspaced::clock::ManualClock::new(chrono::Utc::now()));
    let app = spawn_app_with_clock(
        |s| {
            s.cull.idle_timeout = Duration::from_secs(60);
            s.cull.warning_lead = Duration::from_secs(10);
            s.cull.interval = Duration::from_secs(3600);
            s.reconcile_interval = Duration::from_secs(3600);
            s.workspace.stop_grace = Duration::from_secs(1);
        },
        clock.clone(),
    )
    .await;
    let seed: u64 = rand::random();
    println!("seed {seed}");
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let students = ["r-a", "r-b", "r-c"];
    let mut done = 0;
    while done < 200 {
        let wave = rng.random_range(2..=5).min(200 - done);
        let mut ops = Vec::new();
        for _ in 0..wave {
            let id = students[rng.random_range(0..students.len())];
            let op = rng.random_range(0..4);
            let (app, clock) = (&app, clock.clone());
            ops.push(async move {
                match op {
                    0 => {
                        let (code, body) = app.post(&format!("/api/workspaces/{id}/start")).await;
                        assert_eq!(code, 200, "start {id}: {body}");
                    }
                    1 => {
                        let (code, body) = app.post(&format!("/api/workspaces/{id}/stop")).await;
                        assert!(code == 200 || code == 404, "stop {id}: {code} {body}");
                    }
                    2 => {
                        let (code, _) = app.heartbeat(id).await;
                        assert!([200, 404, 409].contains(&code));
                    }
                    _ => {
                        clock.advance(Duration::from_secs(61));
                        workspaced::culler::Culler::new(app.lifecycle.clone()).sweep().await.unwrap();
                    }
                }
            });
        }
        futures_util::future::join_all(ops).await;
        done += wave;
        let mut per_student: HashMap<String, usize> = HashMap::new();
        for (s, _, _) in containers_by_student(&app.instance) {
            *per_student.entry(s).or_default() += 1;
        }
        assert!(per_student.values().all(|n| *n <= 1), "two containers for one student (seed {seed}): {per_student:?}");
    }

    // Quiescence: store and engine agree exactly, with no reconcile pass needed.
    let containers = containers_by_student(&app.instance);
    let (_, list) = app.get("/api/workspaces").await;
    for w in list["workspaces"].as_array().unwrap() {
        let id = w["student_id"].as_str().unwrap();
        let c = containers.iter().find(|(s, _, _)| s == id);
        match w["status"].as_str().unwrap() {
            "running" => {
                let (_, cid, running) = c.unwrap_or_else(|| panic!("{id} running without a container (seed {seed})"));
                assert!(running);
                assert_eq!(w["container_id"].as_str(), Some(cid.as_str()));
            }
            "stopped" | "failed" => assert!(c.is_none(), "{id} is {} but has a container (seed {seed})", w["status"]),
            other => panic!("{id} left in {other} (seed {seed})"),
        }
    }
    let report = reconcile_once(&app.lifecycle).await.unwrap();
    assert_eq!(report, Default::default(), "nothing to reconcile (seed {seed})");
}

#[tokio::test]
async fn a_stop_calls_off_a_queued_start_instead_of_waiting_through_the_queue() {
    // One start at a time, and starts that never get ready (5 s each): a queued start would hold its student's
    // lock for as long as the queue ahead of it.
    let app = spawn_app_with(|s| {
        s.max_concurrent_starts = 1;
        s.workspace.readiness_path = "/never-ready".into();
        s.workspace.start_timeout = Duration::from_secs(5);
    })
    .await;
    let (code, _) = app.post("/api/workspaces/ahead/start?wait=false").await;
    assert_eq!(code, 202);
    let (code, ws) = app.post("/api/workspaces/queued-1/start?wait=false").await;
    assert_eq!((code, ws["status"].as_str()), (202, Some("queued")), "{ws}");
    assert_eq!(ws["queue_position"], 1);

    let stopped = app.stop("queued-1").await;
    // The start ahead takes its full 5 s to fail: had the stop waited through the queue, it would be over now.
    let (_, ahead) = app.get("/api/workspaces/ahead").await;
    assert_eq!(ahead["status"], "starting", "the stop did not wait for the queue: {ahead}");
    assert_eq!(stopped["status"], "stopped");
    assert_eq!(stopped["stop_reason"], "user");
    // The queue is empty, and nothing ever starts for the student whose start was called off.
    let ahead = app.wait_for("ahead", Duration::from_secs(15), |w| w["status"] == "failed").await;
    assert_eq!(ahead["status"], "failed", "{ahead}");
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (_, ws) = app.get("/api/workspaces/queued-1").await;
    assert_eq!(ws["status"], "stopped");
    assert!(app.containers().is_empty());
}
