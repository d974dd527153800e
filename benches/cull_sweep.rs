//! One cull sweep over many stored workspaces (issue goal: 10,000 in under 50 ms).
//!
//! `cargo bench --bench cull_sweep [-- STORED [RUNNING]]` (default 10,000 stored, of which 500 running, the design's
//! numbers; `-- 10000 10000` is the worst case) prints the time to list the running records, of a whole `Culler::sweep()`
//! (list, decisions) and of the IDE polls that run beside it, best and median of 5. Every record is fresh, so every decision is
//! "keep" and nothing is stopped; the IDE ports point at a closed loopback port, so each poll is a refused connect
//! (the cheapest case: a real sweep waits for code-server's answers, 32 at a time).

use std::sync::Arc;
use std::time::{Duration, Instant};

use workspaced::clock::SystemClock;
use workspaced::config::Settings;
use workspaced::culler::Culler;
use workspaced::domain::{EventKind, InstanceId, Status, StudentId};
use workspaced::lifecycle::Lifecycle;
use workspaced::runtime::docker::DockerRuntime;
use workspaced::store::{NewEvent, Store};

fn main() {
    let nums: Vec<usize> = std::env::args().skip(1).filter_map(|a| a.parse().ok()).collect();
    let stored = nums.first().copied().unwrap_or(10_000);
    let running = nums.get(1).copied().unwrap_or(500).min(stored);
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    rt.block_on(run(stored, running));
}

async fn run(stored: usize, n: usize) {
    let tmp = tempfile::tempdir().unwrap();
    let settings = Settings {
        base_path: tmp.path().to_path_buf(),
        database_url: format!("sqlite://{}", tmp.path().join("bench.db").display()),
        instance: InstanceId::parse("benchsweep").unwrap(),
        ..Default::default()
    };
    let store = Store::connect(&settings.database_url).await.unwrap();
    let now = chrono::Utc::now();
    let t = Instant::now();
    for i in 0..stored {
        let s = StudentId::parse(&format!("s{i:05}")).unwrap();
        store.mark_starting(&s, now).await.unwrap();
        let event = NewEvent { kind: EventKind::Started, reason: None, message: "bench" };
        // Port 9 (discard) is closed on loopback here: a refused connect per poll.
        store.mark_running(&s, &format!("c{i}"), 9, now, &event).await.unwrap();
        if i >= n {
            store.mark_stopped(&s, workspaced::domain::StopReason::Idle, now).await.unwrap();
        }
    }
    eprintln!("stored {stored} workspaces ({n} running) in {:?}", t.elapsed());
    // The engine is never called: every decision is "keep".
    let runtime = Arc::new(DockerRuntime::connect_lazy(settings.instance.clone(), Duration::from_secs(5)).unwrap());
    let lc = Arc::new(Lifecycle::new(Arc::new(settings), store.clone(), runtime, Arc::new(SystemClock)));
    lc.load_activity().await.unwrap();
    let culler = Culler::new(lc.clone());

    let mut list = Vec::new();
    let mut sweep = Vec::new();
    let mut polls = Vec::new();
    for _ in 0..5 {
        let t = Instant::now();
        let running = store.list(Some(Status::Running)).await.unwrap();
        list.push(t.elapsed());
        assert_eq!(running.len(), n);
        let t = Instant::now();
        let report = culler.sweep().await.unwrap();
        sweep.push(t.elapsed());
        assert_eq!((report.running, report.stopped.len(), report.warned.len()), (n, 0, 0));
        let t = Instant::now();
        culler.poll_ides_now().await;
        polls.push(t.elapsed());
    }
    list.sort();
    sweep.sort();
    polls.sort();
    println!("cull sweep, {stored} stored workspaces of which {n} running (5 runs)");
    println!("  list running records : best {:>8.1} ms  median {:>8.1} ms", ms(list[0]), ms(list[2]));
    println!("  sweep (list, decide) : best {:>8.1} ms  median {:>8.1} ms", ms(sweep[0]), ms(sweep[2]));
    println!("  IDE polls (beside)   : best {:>8.1} ms  median {:>8.1} ms", ms(polls[0]), ms(polls[2]));
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}
