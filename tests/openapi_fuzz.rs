//! schemathesis against the real binary: every operation of `docs/openapi.json` (as served at `/api/openapi.json`)
//! fuzzed with an admin key, real Docker and the tiny image. No answer may be a 5xx, break the documented schema,
//! status code or content type, or time out. `scripts/schemathesis.sh` installs the pinned schemathesis from PyPI
//! into a cache directory on first use.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

mod support;

const BIN: &str = env!("CARGO_BIN_EXE_workspaced");

/// Examples per operation and phase: enough to reach every documented answer, few enough for a 2-core machine.
const MAX_EXAMPLES: &str = "15";
/// Seconds any one request may take before it counts as a hang (a waiting start with the tiny image takes about one).
const REQUEST_TIMEOUT: &str = "20";

/// Operations left out of the run, with the reason.
/// `POST /api/admin/migrate` copies every student folder to whatever absolute, writable path it is given: run as root
/// (as CI runs), a generated `{"to": "/"}` would copy the test's folders into the machine's root file system. Its
/// input errors are tested in `tests/ops_migrate.rs` and `tests/api`.
const EXCLUDED_PATHS: &[&str] = &["/api/admin/migrate"];

/// A `workspaced serve` of its own: folder, database, port, instance label and admin key. Dropping it stops the
/// server and removes every container with its instance label.
struct Service {
    child: Child,
    dir: tempfile::TempDir,
    port: u16,
    instance: String,
    key: String,
}

impl Service {
    fn start() -> Service {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("base")).unwrap();
        let instance = format!("fuzz{:06x}", rand::random::<u32>() & 0xffffff);
        let out = Command::new(BIN)
            .args(["key", "create", "--role", "admin"])
            .env("DATABASE_URL", db_url(dir.path()))
            .env_remove("WORKSPACED_CONFIG")
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let key = String::from_utf8(out.stdout).unwrap().trim().to_owned();
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let log = std::fs::File::create(dir.path().join("stderr.log")).unwrap();
        let child = Command::new(BIN)
            .arg("serve")
            .env("WORKSPACE_BASE_PATH", dir.path().join("base"))
            .env("DATABASE_URL", db_url(dir.path()))
            .env("WORKSPACED_LISTEN", format!("127.0.0.1:{port}"))
            .env("WORKSPACED_INSTANCE", &instance)
            .env("WORKSPACED_IMAGE", "workspaced/tiny:1")
            .env("WORKSPACED_STOP_GRACE", "1s")
            // A few at once, so the fuzzer also meets `capacity_reached` and the run stays light.
            .env("WORKSPACED_MAX_RUNNING", "4")
            .env("RUST_LOG", "info")
            .env_remove("WORKSPACED_CONFIG")
            .env_remove("WORKSPACED_SECRET_KEY")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn workspaced");
        let svc = Service { child, dir, port, instance, key };
        svc.wait_healthy();
        svc
    }

    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    fn wait_healthy(&self) {
        let deadline = Instant::now() + Duration::from_secs(60);
        while Instant::now() < deadline {
            if self.healthy() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("workspaced did not come up: {}", self.log());
    }

    /// `GET /healthz` answers 200.
    fn healthy(&self) -> bool {
        self.request("GET", "/healthz", None).is_some_and(|a| a.starts_with("HTTP/1.1 200"))
    }

    /// A student token for `student`, made with the admin key.
    fn student_token(&self, student: &str) -> String {
        let answer = self.request("POST", &format!("/api/workspaces/{student}/token"), Some(&self.key)).unwrap();
        json_of(&answer)["token"].as_str().expect("a token").to_owned()
    }

    /// The `Cookie` header of a browser that opened a launch link of `student` (which also starts the workspace).
    fn session_cookie(&self, student: &str) -> String {
        let answer = self.request("POST", &format!("/api/workspaces/{student}/launch"), Some(&self.key)).unwrap();
        let url = json_of(&answer)["url"].as_str().expect("a launch link").to_owned();
        let path = url.strip_prefix(&self.url("")).expect("a link to this server");
        let answer = self.request("GET", path, None).unwrap();
        let cookie = answer
            .lines()
            .find_map(|l| l.strip_prefix("set-cookie: ").or_else(|| l.strip_prefix("Set-Cookie: ")))
            .unwrap_or_else(|| panic!("no session cookie: {answer}"));
        cookie.split(';').next().unwrap().to_owned()
    }

    /// One HTTP/1.1 request on its own connection; the whole answer, or `None` when the server does not answer.
    fn request(&self, method: &str, path: &str, key: Option<&str>) -> Option<String> {
        use std::io::{Read, Write};
        let mut conn = std::net::TcpStream::connect(("127.0.0.1", self.port)).ok()?;
        conn.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
        let auth = key.map(|k| format!("Authorization: Bearer {k}\r\n")).unwrap_or_default();
        let head = format!(
            "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n{auth}Content-Length: 0\r\nConnection: close\r\n\r\n"
        );
        conn.write_all(head.as_bytes()).ok()?;
        let mut answer = String::new();
        conn.read_to_string(&mut answer).ok()?;
        Some(answer)
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("stderr.log")).unwrap_or_default()
    }

    fn containers(&self) -> Vec<String> {
        support::instance_containers(&self.instance, &[])
    }

    /// SIGTERM and wait, then remove this instance's containers until two looks in a row find none (a start asked
    /// for just before the exit can still be created by the engine after it).
    fn stop(&mut self) {
        support::stop_service(&mut self.child, &self.instance);
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The JSON body of a whole HTTP answer.
fn json_of(answer: &str) -> serde_json::Value {
    let body = answer.split_once("\r\n\r\n").map(|(_, b)| b).unwrap_or_default();
    serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {answer}"))
}

fn db_url(dir: &Path) -> String {
    format!("sqlite://{}", dir.join("ws.db").display())
}

fn repo(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(path)
}

/// How many operations the checked-in document has.
fn documented_operations() -> usize {
    let text = std::fs::read_to_string(repo("docs/openapi.json")).unwrap();
    let doc: serde_json::Value = serde_json::from_str(&text).unwrap();
    doc["paths"].as_object().unwrap().values().map(|item| item.as_object().unwrap().len()).sum()
}

/// Runs schemathesis on the operations `filter` selects; returns how many operations it ran.
fn schemathesis(svc: &Service, run: &str, filter: &[&str], student: &[(&str, String)]) -> usize {
    let report = svc.dir.path().join(format!("junit-{run}.xml"));
    let mut cmd = Command::new("bash");
    // schemathesis keeps a cache in its working directory: the test's own folder, not the repository.
    cmd.current_dir(svc.dir.path())
        .arg(repo("scripts/schemathesis.sh"))
        .arg("--no-color")
        .arg("--config-file")
        .arg(repo("scripts/schemathesis.toml"))
        .arg("run")
        .arg(svc.url("/api/openapi.json"))
        .args(filter)
        .args([
            "--checks",
            "not_a_server_error,response_schema_conformance,status_code_conformance,content_type_conformance",
        ])
        .args(["--max-examples", MAX_EXAMPLES, "--request-timeout", REQUEST_TIMEOUT])
        // One worker: with two, hypothesis 6 on Python 3.11 sometimes fails in `ast.parse` (a race in its lambda
        // descriptions: "AST constructor recursion depth mismatch"), an error of the tool, not of the service.
        .args(["--workers", "1"])
        .args(["--report", "junit", "--report-junit-path"])
        .arg(&report)
        .env("WORKSPACED_ADMIN_KEY", &svc.key);
    for path in EXCLUDED_PATHS {
        cmd.args(["--exclude-path", path]);
    }
    cmd.envs(student.iter().map(|(k, v)| (k, v)));
    let started = Instant::now();
    let out = cmd.output().expect("run scripts/schemathesis.sh");
    let stdout = String::from_utf8_lossy(&out.stdout);
    println!("{stdout}\nschemathesis ({run}) took {:.0?}", started.elapsed());
    assert!(
        out.status.success(),
        "schemathesis ({run}) found problems (exit {:?}):\n{stdout}\n{}\nservice log:\n{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stderr),
        svc.log()
    );
    let junit = std::fs::read_to_string(&report).expect("a JUnit report");
    assert!(!junit.contains("<failure") && !junit.contains("<error"), "{junit}");
    junit.matches("<testcase ").count()
}

#[test]
fn schemathesis_finds_no_server_error_schema_violation_or_hang_in_any_operation() {
    let mut svc = Service::start();
    // The student's own routes first, with a student token and a session of `alice`: the API's run fuzzes
    // `sessions/revoke`, which ends them.
    // (The configuration names these variables, so both runs need them.)
    let creds =
        [("WORKSPACED_STUDENT_TOKEN", svc.student_token("alice")), ("WORKSPACED_SESSION", svc.session_cookie("alice"))];
    let student = schemathesis(&svc, "student", &["--include-path-regex", "^/w/"], &creds);
    let api = schemathesis(&svc, "api", &["--exclude-path-regex", "^/w/"], &creds);
    assert_eq!(student, 3, "the student's status, start and heartbeat");
    // schemathesis loads `/api/openapi.json` (that it parses is checked by the runs) and does not fuzz it.
    let fuzzable = documented_operations() - EXCLUDED_PATHS.len() - 1;
    // At least every operation: with links between operations (a course put, then distributed) schemathesis adds a
    // stateful test case to its report.
    assert!(
        student + api >= fuzzable,
        "every operation but the excluded ones and the document itself: {} < {fuzzable}",
        student + api
    );

    // What the fuzzer started is removed with the instance label.
    svc.stop();
    assert!(svc.containers().is_empty(), "containers left behind: {:?}", svc.containers());
}
