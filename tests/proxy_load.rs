//! Bounded load through the proxy of the real binary, in front of real code-server: 100,000 HTTP requests and
//! 1,000 WebSocket connections opened and closed. The service's memory (VmRSS) and open file descriptors must come
//! back near where they were: no growth without bound, no leaked sockets (configurable-http-proxy's old troubles).

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use futures_util::SinkExt;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

fn count(name: &str, default: usize) -> usize {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}
const CONCURRENCY: usize = 32;

struct Service(Child, String);
impl Drop for Service {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
        let out = Command::new("docker")
            .args(["ps", "-aq", "--filter", &format!("label=workspaced.instance={}", self.1)])
            .output()
            .unwrap();
        let ids: Vec<String> = String::from_utf8_lossy(&out.stdout).lines().map(str::to_owned).collect();
        if !ids.is_empty() {
            let _ = Command::new("docker").arg("rm").arg("-f").args(ids).output();
        }
    }
}

fn rss_kib(pid: u32) -> u64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    s.lines().find_map(|l| l.strip_prefix("VmRSS:")).unwrap().trim().trim_end_matches(" kB").trim().parse().unwrap()
}

fn open_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).unwrap().count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_and_sockets_stay_bounded_under_http_and_websocket_load() {
    // The defaults are the numbers; smaller ones help when debugging.
    #[allow(non_snake_case)]
    let (REQUESTS, WEBSOCKETS) = (count("LOAD_REQUESTS", 100_000), count("LOAD_WEBSOCKETS", 1_000));
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("base")).unwrap();
    let db = format!("sqlite://{}", dir.path().join("ws.db").display());
    let out = Command::new(env!("CARGO_BIN_EXE_workspaced"))
        .args(["key", "create", "--role", "admin"])
        .env("DATABASE_URL", &db)
        .output()
        .unwrap();
    assert!(out.status.success());
    let key = String::from_utf8(out.stdout).unwrap().trim().to_owned();
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let instance = format!("load{:06x}", rand::random::<u32>() & 0xffffff);
    let child = Command::new(env!("CARGO_BIN_EXE_workspaced"))
        .arg("serve")
        .env("WORKSPACE_BASE_PATH", dir.path().join("base"))
        .env("DATABASE_URL", &db)
        .env("WORKSPACED_LISTEN", format!("127.0.0.1:{port}"))
        .env("WORKSPACED_INSTANCE", &instance)
        .env("WORKSPACED_START_TIMEOUT", "120s")
        // One student opens all the load here, and each closed WebSocket keeps its slot for the 2 s close grace:
        // the per-student cap (tested in tests/security.rs) is lifted so the proxy itself is what is measured.
        .env("WORKSPACED_PROXY_MAX_CONNECTIONS_PER_STUDENT", "100000")
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let svc = Service(child, instance);
    let pid = svc.0.id();
    let base = format!("http://127.0.0.1:{port}");
    let deadline = Instant::now() + Duration::from_secs(20);
    while reqwest::get(format!("{base}/healthz")).await.is_err() {
        assert!(Instant::now() < deadline, "service did not come up");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let api = {
        let mut h = reqwest::header::HeaderMap::new();
        h.insert("authorization", format!("Bearer {key}").parse().unwrap());
        reqwest::Client::builder().default_headers(h).build().unwrap()
    };
    let r = api.post(format!("{base}/api/workspaces/load/start")).send().await.unwrap();
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
    let launch: serde_json::Value =
        api.post(format!("{base}/api/workspaces/load/launch")).send().await.unwrap().json().await.unwrap();
    let noredirect = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap();
    let r = noredirect.get(launch["url"].as_str().unwrap()).send().await.unwrap();
    let cookie = r.headers()["set-cookie"].to_str().unwrap().split(';').next().unwrap().to_owned();
    let browser = {
        let mut h = reqwest::header::HeaderMap::new();
        h.insert("cookie", cookie.parse().unwrap());
        reqwest::Client::builder().default_headers(h).pool_max_idle_per_host(CONCURRENCY).build().unwrap()
    };
    let url = format!("{base}/w/load/healthz");

    let hammer = |n: usize| {
        let (browser, url) = (browser.clone(), url.clone());
        async move {
            let mut tasks = tokio::task::JoinSet::new();
            for t in 0..CONCURRENCY {
                let (c, u) = (browser.clone(), url.clone());
                let share = n / CONCURRENCY + usize::from(t < n % CONCURRENCY);
                tasks.spawn(async move {
                    let mut ok = 0;
                    for _ in 0..share {
                        let r = c.get(&u).send().await.unwrap();
                        ok += usize::from(r.status() == 200);
                        let _ = r.bytes().await;
                    }
                    ok
                });
            }
            let mut ok = 0;
            while let Some(r) = tasks.join_next().await {
                ok += r.unwrap();
            }
            ok
        }
    };
    assert_eq!(hammer(5_000).await, 5_000, "warm-up");
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (rss_before, fds_before) = (rss_kib(pid), open_fds(pid));

    // In two halves: the first may still grow pools and allocator arenas; the second must not add much.
    let t = Instant::now();
    assert_eq!(hammer(REQUESTS / 2).await, REQUESTS / 2, "every request answered 200");
    let rss_half = rss_kib(pid);
    assert_eq!(hammer(REQUESTS - REQUESTS / 2).await, REQUESTS - REQUESTS / 2, "every request answered 200");
    let http_secs = t.elapsed().as_secs_f64();
    let rss_http = rss_kib(pid);

    println!("http phase: {http_secs:.1} s");
    let t = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for w in 0..16 {
        let (cookie, port) = (cookie.clone(), port);
        tasks.spawn(async move {
            let mut opened = 0;
            for i in (w..WEBSOCKETS).step_by(16) {
                let token = format!("{:032x}", i as u128 + 1);
                let ws_url = format!(
                    "ws://127.0.0.1:{port}/w/load/?reconnectionToken={token}&reconnection=false&skipWebSocketFrames=false"
                );
                let mut req = ws_url.into_client_request().unwrap();
                req.headers_mut().insert("cookie", cookie.parse().unwrap());
                req.headers_mut().insert("origin", format!("http://127.0.0.1:{port}").parse().unwrap());
                let (mut ws, resp) = tokio_tungstenite::connect_async(req).await.unwrap();
                opened += usize::from(resp.status() == 101);
                // Send a close frame and go, as a closing tab does (code-server does not answer the frame).
                let _ = ws.send(tokio_tungstenite::tungstenite::Message::Close(None)).await;
                drop(ws);
            }
            opened
        });
    }
    let mut opened = 0;
    while let Some(r) = tasks.join_next().await {
        opened += r.unwrap();
    }
    assert_eq!(opened, WEBSOCKETS, "every WebSocket opened");
    let ws_secs = t.elapsed().as_secs_f64();

    // Closed connections are let go: the gauge returns to zero and the descriptors to where they were.
    let deadline = Instant::now() + Duration::from_secs(15);
    let metrics = loop {
        let m = api.get(format!("{base}/metrics")).send().await.unwrap().text().await.unwrap();
        if m.contains("workspaced_proxy_websockets 0") || Instant::now() > deadline {
            break m;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let gauge = metrics.lines().find(|l| l.starts_with("workspaced_proxy_websockets")).unwrap_or("").to_owned();
    assert_eq!(gauge, "workspaced_proxy_websockets 0", "websockets still open");
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (rss_after, fds_after) = (rss_kib(pid), open_fds(pid));
    println!(
        "proxy load: {REQUESTS} requests in {http_secs:.1} s ({:.0}/s), {WEBSOCKETS} websockets in {ws_secs:.1} s; \
         RSS {rss_before} KiB -> {rss_half} KiB (half) -> {rss_http} KiB (all HTTP) -> {rss_after} KiB; \
         fds {fds_before} -> {fds_after}",
        REQUESTS as f64 / http_secs
    );
    assert!(rss_after < rss_before + 16 * 1024, "RSS grew from {rss_before} KiB to {rss_after} KiB");
    assert!(rss_http < rss_half + 4 * 1024, "RSS kept growing: {rss_half} KiB after half, {rss_http} KiB after all");
    assert!(fds_after <= fds_before + 40, "descriptors grew from {fds_before} to {fds_after}");
    let _ = api.post(format!("{base}/api/workspaces/load/stop")).send().await;
}
