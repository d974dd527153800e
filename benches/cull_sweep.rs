//! One cull sweep over many stored workspaces (issue goal: 10,000 in under 50 ms), on SQLite or PostgreSQL.
//!
//! `cargo bench --bench cull_sweep [-- STORED [RUNNING]]` (default 10,000 stored, of which 500 running, the design's
//! numbers; `-- 10000 10000` is the worst case). The store is a new SQLite file, or, when `DATABASE_URL` names a
//! PostgreSQL server (`postgres://user@host:port/db`), a new database on that server, dropped at the end.
//! Prints, best and median of 5: the full running records listed (what the sweep read before it read candidates
//! only), the sweep's own reads (running count and candidates), a whole `Culler::sweep()` (reads and decisions),
//! the IDE polls that run beside it, and the activity flush of every running workspace (one statement per 500
//! rows, against the former round trip per row). Every record is fresh, so every decision is "keep" and nothing
//! is stopped; the IDE ports point at a closed loopback port, so each poll is a refused connect (the cheapest case:
//! a real sweep waits for code-server's answers, 32 at a time). Rows are seeded with batched INSERTs (the same
//! columns `mark_running` and `mark_stopped` write), so seeding 10,000 takes seconds on either store.

use std::sync::Arc;
use std::time::{Duration, Instant};

use workspaced::clock::SystemClock;
use workspaced::config::Settings;
use workspaced::culler::Culler;
use workspaced::domain::{InstanceId, Status, StudentId};
use workspaced::lifecycle::Lifecycle;
use workspaced::runtime::docker::DockerRuntime;
use workspaced::store::{PendingActivity, Store};

fn main() {
    let nums: Vec<usize> = std::env::args().skip(1).filter_map(|a| a.parse().ok()).collect();
    let stored = nums.first().copied().unwrap_or(10_000);
    let running = nums.get(1).copied().unwrap_or(500).min(stored);
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    rt.block_on(run(stored, running));
}

/// A new database on the PostgreSQL server of `DATABASE_URL`, or a SQLite file in `dir`; and the name to drop.
async fn database(dir: &std::path::Path) -> (String, Option<(String, String)>) {
    use sqlx::Connection;
    match std::env::var("DATABASE_URL") {
        Ok(server) if server.starts_with("postgres") => {
            let name = format!("bench_{:016x}", rand::random::<u64>());
            let mut admin = sqlx::PgConnection::connect(&server).await.expect("the PostgreSQL server answers");
            sqlx::raw_sql(&format!("CREATE DATABASE {name}")).execute(&mut admin).await.unwrap();
            let (base, _) = server.rsplit_once('/').expect("a URL with a database");
            (format!("{base}/{name}"), Some((server.clone(), name)))
        }
        _ => (format!("sqlite://{}", dir.join("bench.db").display()), None),
    }
}

/// Writes `stored` workspace rows, the first `running` of them running, 500 to a statement.
async fn seed(url: &str, stored: usize, running: usize, now_ms: i64) {
    sqlx::any::install_default_drivers();
    let pool = sqlx::any::AnyPoolOptions::new().max_connections(1).connect(url).await.unwrap();
    let mut tx = pool.begin().await.unwrap();
    for chunk in (0..stored).collect::<Vec<_>>().chunks(500) {
        let values = (0..chunk.len())
            .map(|k| {
                let p = 6 * k;
                let params = (p + 1..=p + 6).map(|j| format!("${j}")).collect::<Vec<_>>().join(", ");
                format!("({params}, {now_ms}, {now_ms}, {now_ms}, {now_ms})")
            })
            .collect::<Vec<_>>()
            .join(", ");
        let sql = format!(
            "INSERT INTO workspaces (student_id, status, container_id, host_port, stopped_at_ms, stop_reason,
               last_activity_ms, started_at_ms, created_at_ms, updated_at_ms) VALUES {values}"
        );
        let mut q = sqlx::query(&sql);
        for &i in chunk {
            let run = i < running;
            // Port 9 (discard) is closed on loopback here: a refused connect per poll.
            q = q
                .bind(format!("s{i:05}"))
                .bind(if run { "running" } else { "stopped" })
                .bind(run.then(|| format!("c{i}")))
                .bind(run.then_some(9_i64))
                .bind((!run).then_some(now_ms))
                .bind((!run).then_some("idle"));
        }
        q.execute(&mut *tx).await.unwrap();
    }
    tx.commit().await.unwrap();
    pool.close().await;
}

async fn run(stored: usize, n: usize) {
    let tmp = tempfile::tempdir().unwrap();
    let (url, drop_after) = database(tmp.path()).await;
    let store = Store::connect(&url).await.unwrap();
    let backend = format!("{:?}", store.backend());
    let settings = Settings {
        base_path: tmp.path().to_path_buf(),
        database_url: url.clone(),
        instance: InstanceId::parse("benchsweep").unwrap(),
        ..Default::default()
    };
    let now = chrono::Utc::now();
    let t = Instant::now();
    seed(&url, stored, n, now.timestamp_millis()).await;
    eprintln!("stored {stored} workspaces ({n} running) in {:?} on {backend}", t.elapsed());
    // The engine is never called: every decision is "keep".
    let runtime = Arc::new(DockerRuntime::connect_lazy(settings.instance.clone(), Duration::from_secs(5)).unwrap());
    let lc = Arc::new(Lifecycle::new(Arc::new(settings), store.clone(), runtime, Arc::new(SystemClock)));
    lc.load_activity().await.unwrap();
    let culler = Culler::new(lc.clone());
    let defaults = lc.default_policy();
    let ids: Vec<StudentId> = (0..n).map(|i| StudentId::parse(&format!("s{i:05}")).unwrap()).collect();

    let (mut list, mut reads, mut sweep, mut polls, mut flush, mut per_row) = Default::default();
    for _ in 0..5 {
        let t = Instant::now();
        let running = store.list(Some(Status::Running)).await.unwrap();
        push(&mut list, t);
        assert_eq!(running.len(), n);
        let t = Instant::now();
        assert_eq!(store.count_running().await.unwrap(), n);
        let due = store.cull_candidates(chrono::Utc::now() + chrono::Duration::seconds(1), &defaults).await.unwrap();
        push(&mut reads, t);
        assert!(due.is_empty(), "every record is fresh");
        let t = Instant::now();
        let report = culler.sweep().await.unwrap();
        push(&mut sweep, t);
        assert_eq!((report.running, report.stopped.len(), report.warned.len()), (n, 0, 0));
        let t = Instant::now();
        culler.poll_ides_now().await;
        push(&mut polls, t);
        for id in &ids {
            lc.heartbeat(id).await.unwrap();
        }
        let t = Instant::now();
        assert_eq!(lc.flush_activity().await.unwrap(), n);
        push(&mut flush, t);
        let at = chrono::Utc::now();
        let batch: Vec<PendingActivity> = ids
            .iter()
            .map(|id| PendingActivity { student: id.clone(), last_activity: at, ide_connected_at: None })
            .collect();
        let t = Instant::now();
        store.write_activity(&batch).await.unwrap();
        push(&mut per_row, t);
    }
    println!("cull sweep on {backend}, {stored} stored workspaces of which {n} running (5 runs)");
    line("list running records (full rows)", &mut list);
    line("sweep's reads (count, candidates)", &mut reads);
    line("sweep (reads, decide)", &mut sweep);
    line("IDE polls (beside)", &mut polls);
    line(&format!("activity flush, {n} rows, batched"), &mut flush);
    line(&format!("activity flush, {n} rows, per row"), &mut per_row);
    drop((culler, lc, store));
    if let Some((server, name)) = drop_after {
        use sqlx::Connection;
        let mut admin = sqlx::PgConnection::connect(&server).await.unwrap();
        let _ = sqlx::raw_sql(&format!("DROP DATABASE {name} WITH (FORCE)")).execute(&mut admin).await;
    }
}

fn push(v: &mut Vec<Duration>, t: Instant) {
    v.push(t.elapsed());
}

fn line(what: &str, v: &mut [Duration]) {
    v.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    println!("  {what:<38}: best {:>8.1} ms  median {:>8.1} ms", ms(v[0]), ms(v[v.len() / 2]));
}
