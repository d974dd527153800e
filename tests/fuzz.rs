//! Fuzz targets on the stable toolchain: property tests (`proptest`) of the code that reads what outsiders send, the
//! student id parser, the proxy's path and host parsing, the token checks and the tar import.
//!
//! Each target first replays its corpus, `tests/fuzz-corpus/<target>/` (one input per file: seeds and edge cases,
//! plus every input that ever found a bug), then runs generated cases (see [`cases`]: about 20 s per target in CI).
//! A failing case is shrunk and its seed written to `tests/fuzz-corpus/regressions/<target>.txt`, which proptest
//! replays first on every run: commit it, with the input in the corpus and a regression test. A longer run:
//! `FUZZ_SCALE=30 cargo test --release --test fuzz` (see BENCHMARKS.md).

use std::collections::BTreeSet;
use std::fs;
use std::io::Write;
use std::os::unix::fs::MetadataExt;
use std::path::{Component, Path, PathBuf};
use std::time::Duration;

use chrono::{DateTime, Utc};
use proptest::prelude::*;
use proptest::test_runner::{FileFailurePersistence, TestCaseError};

use workspaced::auth::{cookie_values, Generation, Purpose, Signer, TokenError};
use workspaced::domain::{InstanceId, StudentId};
use workspaced::ops::import::{import_archive, ImportError, ImportOptions};
use workspaced::proxy::path::{host_target, normalize, path_target, percent_decode};

/// Generated cases of one property: `FUZZ_CASES` if set, else `default` (tuned so that the properties of one target
/// take about 20 s together in a debug build on the 2-core CI machine) times `FUZZ_SCALE` (default 1).
fn cases(default: u32) -> u32 {
    let var = |name: &str| std::env::var(name).ok().and_then(|v| v.parse::<u32>().ok());
    var("FUZZ_CASES").unwrap_or_else(|| default.saturating_mul(var("FUZZ_SCALE").unwrap_or(1)))
}

fn config(default_cases: u32, regressions: &'static str) -> ProptestConfig {
    ProptestConfig {
        cases: cases(default_cases),
        failure_persistence: Some(Box::new(FileFailurePersistence::Direct(regressions))),
        // Shrinking a failure of the import (a file system per case) should not take minutes.
        max_shrink_iters: 2048,
        ..ProptestConfig::default()
    }
}

macro_rules! regressions {
    ($target:literal) => {
        concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fuzz-corpus/regressions/", $target, ".txt")
    };
}

/// Every file of `tests/fuzz-corpus/<target>/` with its name; at least one, so a lost corpus is noticed.
fn corpus(target: &str) -> Vec<(String, Vec<u8>)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fuzz-corpus").join(target);
    let mut files: Vec<(String, Vec<u8>)> = fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_file() && p.extension().is_none_or(|x| x != "md"))
        .map(|p| (p.file_name().unwrap().to_string_lossy().into_owned(), fs::read(&p).unwrap()))
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no corpus in {}", dir.display());
    files
}

fn replay(target: &str, check: impl Fn(&[u8]) -> Result<(), TestCaseError>) {
    for (name, input) in corpus(target) {
        if let Err(e) = check(&input) {
            panic!("tests/fuzz-corpus/{target}/{name}: {e}");
        }
    }
}

// ---------------------------------------------------------------------------------------------------------------
// Student ids

/// The rule written down independently of the parser: 1 to `max` of `a-z 0-9 - _`, alphanumeric at both ends.
fn valid_id(s: &str, max: usize) -> bool {
    let b = s.as_bytes();
    let alnum = |c: &u8| c.is_ascii_lowercase() || c.is_ascii_digit();
    !b.is_empty()
        && b.len() <= max
        && b.iter().all(|c| alnum(c) || *c == b'-' || *c == b'_')
        && b.first().is_some_and(alnum)
        && b.last().is_some_and(alnum)
}

fn check_student_id(raw: &str) -> Result<(), TestCaseError> {
    match StudentId::parse(raw) {
        Ok(id) => {
            prop_assert!(valid_id(raw, 63), "accepted {raw:?}");
            prop_assert_eq!(id.as_str(), raw);
            prop_assert_eq!(id.to_string(), raw);
            prop_assert_eq!(StudentId::parse(&id.to_string()), Ok(id.clone()));
            prop_assert!(!raw.contains('/') && !raw.contains("..") && !raw.contains('.') && !raw.contains('%'));
            prop_assert_eq!(serde_json::to_value(&id).unwrap(), serde_json::Value::String(raw.to_owned()));
        }
        Err(e) => {
            prop_assert!(!valid_id(raw, 63), "refused the valid {raw:?}: {e}");
            prop_assert!(!e.to_string().is_empty());
        }
    }
    prop_assert_eq!(InstanceId::parse(raw).is_ok(), valid_id(raw, 32), "instance id {:?}", raw);
    Ok(())
}

fn any_id_text() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<String>(),
        "[a-z0-9_-]{0,70}",
        "[a-z0-9][a-z0-9_-]{0,61}[a-z0-9]",
        "[a-zA-Z0-9_./%-]{0,66}",
        "[a-z0-9]{1,3}[\\x00-\\x7f][a-z0-9]{1,3}",
    ]
}

#[test]
fn student_id_corpus() {
    replay("student_id", |b| check_student_id(&String::from_utf8_lossy(b)));
}

proptest! {
    #![proptest_config(config(300_000, regressions!("student_id")))]
    #[test]
    fn student_id_parse_accepts_exactly_the_documented_ids_and_round_trips(raw in any_id_text()) {
        check_student_id(&raw)?;
    }
}

// ---------------------------------------------------------------------------------------------------------------
// The proxy's path and host parsing

const SUFFIX: &str = "ws.example.org";

/// A corpus file is the path, optionally followed by a line with the `Host`.
fn check_proxy(path: &str, host: &str) -> Result<(), TestCaseError> {
    let n = normalize(path);
    prop_assert!(n.starts_with('/'), "{n:?}");
    prop_assert!(!n.contains("//"), "{n:?}");
    for seg in n.split('/') {
        let d = percent_decode(seg);
        prop_assert!(d != "." && d != "..", "dot segment {seg:?} left in {n:?}");
    }
    prop_assert_eq!(normalize(&n), n.clone(), "normalizing twice changes {:?}", path);

    match path_target(path) {
        Some(t) => {
            let seg = t.prefix.strip_prefix("/w/").expect("the prefix is /w/<segment>");
            prop_assert!(!seg.is_empty() && !seg.contains('/'), "{:?}", t);
            prop_assert_eq!(&t.student, &percent_decode(seg));
            prop_assert_eq!(format!("{}{}", t.prefix, t.rest.as_deref().unwrap_or("")), n.clone());
            if let Some(rest) = &t.rest {
                prop_assert!(rest.starts_with('/'));
            }
            // Whatever the spelling, a valid id named here is the one the normalized path starts with.
            if let Ok(id) = StudentId::parse(&t.student) {
                prop_assert!(!id.as_str().contains('/'));
                prop_assert_eq!(percent_decode(seg), id.as_str());
            }
        }
        None => {
            let names_one = n.strip_prefix("/w/").is_some_and(|r| !r.is_empty() && !r.starts_with('/'));
            prop_assert!(!names_one, "{n:?} names a workspace but no target came out");
        }
    }

    let bare = host.rsplit_once(':').filter(|(_, p)| p.bytes().all(|c| c.is_ascii_digit())).map_or(host, |(h, _)| h);
    match host_target(host, SUFFIX, path) {
        Some(t) => {
            prop_assert!(!t.student.is_empty() && !t.student.contains('.'), "{:?}", t);
            prop_assert_eq!(format!("{}.{SUFFIX}", t.student), bare.to_ascii_lowercase());
            prop_assert_eq!(t.prefix.as_str(), "");
            prop_assert_eq!(t.rest, Some(n));
        }
        None => {
            let lower = bare.to_ascii_lowercase();
            let label = lower.strip_suffix(SUFFIX).and_then(|l| l.strip_suffix('.'));
            prop_assert!(label.is_none_or(|l| l.is_empty() || l.contains('.')), "{host:?} names {label:?}");
        }
    }
    Ok(())
}

fn segment() -> impl Strategy<Value = String> {
    prop_oneof![
        Just(String::new()),
        Just("w".to_owned()),
        Just("W".to_owned()),
        Just(".".to_owned()),
        Just("..".to_owned()),
        Just("%2e".to_owned()),
        Just("%2E%2e".to_owned()),
        Just(".%2e".to_owned()),
        Just("%2f".to_owned()),
        Just("a%2Fb".to_owned()),
        Just("%".to_owned()),
        Just("%zz".to_owned()),
        Just("%00".to_owned()),
        Just("%c3%a9".to_owned()),
        Just("%ff".to_owned()),
        Just("_workspaced".to_owned()),
        "[a-z0-9_-]{1,8}",
        "[ -~]{0,6}",
        any::<String>(),
    ]
}

fn any_path() -> impl Strategy<Value = String> {
    prop_oneof![
        (any::<bool>(), prop::collection::vec(segment(), 0..8)).prop_map(|(lead, segs)| {
            let joined = segs.join("/");
            if lead {
                format!("/{joined}")
            } else {
                joined
            }
        }),
        prop::collection::vec(segment(), 0..6).prop_map(|segs| format!("/w/{}", segs.join("/"))),
        any::<String>(),
    ]
}

fn any_host() -> impl Strategy<Value = String> {
    prop_oneof![
        ("[a-zA-Z0-9_.-]{0,10}", prop::option::of(0u32..70000)).prop_map(|(label, port)| {
            let host = format!("{label}.{SUFFIX}");
            port.map_or(host.clone(), |p| format!("{host}:{p}"))
        }),
        "[a-z0-9.:-]{0,30}",
        Just(SUFFIX.to_owned()),
        Just(format!(".{SUFFIX}")),
        Just(format!("alice.{SUFFIX}.evil.com")),
        Just(format!("alice.{}", SUFFIX.to_uppercase())),
        any::<String>(),
    ]
}

#[test]
fn proxy_path_corpus() {
    replay("proxy_path", |b| {
        let text = String::from_utf8_lossy(b);
        let (path, host) = text.split_once('\n').unwrap_or((&text, ""));
        check_proxy(path, host.trim_end_matches('\n'))
    });
}

proptest! {
    #![proptest_config(config(80_000, regressions!("proxy_path")))]
    #[test]
    fn proxy_paths_and_hosts_name_one_workspace_and_never_leave_it(path in any_path(), host in any_host()) {
        check_proxy(&path, &host)?;
    }

    #[test]
    fn a_valid_id_followed_by_any_rest_without_dot_segments_names_that_id(
        id in "[a-z0-9][a-z0-9_-]{0,20}[a-z0-9]",
        rest in prop::collection::vec("[a-zA-Z0-9_~-]{1,6}", 0..5),
        slashes in 1usize..4,
    ) {
        let path = format!("/w{}{id}/{}", "/".repeat(slashes), rest.join("/"));
        let t = path_target(&path).expect("names a workspace");
        prop_assert_eq!(&t.student, &id);
        prop_assert_eq!(t.rest, Some(format!("/{}", rest.join("/"))));
        let host = host_target(&format!("{}.{SUFFIX}:443", id.to_uppercase()), SUFFIX, &path).expect("host mode");
        prop_assert_eq!(t.student, host.student);
    }
}

/// Percent-encodes what may not stand in a request target, so almost every generated path becomes a request.
fn as_request_target(path: &str) -> String {
    let mut out = String::from(if path.starts_with('/') { "" } else { "/" });
    for b in path.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~!$&'()*+,;=:@/%?".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The real router (path and host mode, a temp database, the engine never called for these requests), and the
/// cookie of a valid session of `alice`.
async fn router_with_alices_session(tmp: &Path) -> (axum::Router, String) {
    use workspaced::clock::SystemClock;
    use workspaced::config::Settings;
    let mut settings = Settings {
        base_path: tmp.to_path_buf(),
        database_url: format!("sqlite://{}", tmp.join("fuzz.db").display()),
        ..Settings::default()
    };
    settings.auth.secret_key = Some(String::from_utf8_lossy(KEY).into_owned());
    settings.proxy.host_suffix = Some(SUFFIX.to_owned());
    let store = workspaced::store::Store::connect(&settings.database_url).await.unwrap();
    let instance = InstanceId::parse(&format!("fuzz{:08x}", rand::random::<u32>())).unwrap();
    let runtime = workspaced::runtime::docker::DockerRuntime::connect_lazy(instance, Duration::from_secs(5)).unwrap();
    let lifecycle = workspaced::lifecycle::Lifecycle::new(
        std::sync::Arc::new(settings),
        store,
        std::sync::Arc::new(runtime),
        std::sync::Arc::new(SystemClock),
    );
    let state = std::sync::Arc::new(workspaced::http::AppState::build(std::sync::Arc::new(lifecycle)).unwrap());
    let alice = StudentId::parse("alice").unwrap();
    let (cookie, _) = Signer::new(KEY).credential(
        Purpose::Session,
        &alice,
        Generation::default(),
        Utc::now(),
        Duration::from_secs(3600),
    );
    (workspaced::http::router(state), format!("workspaced_session={cookie}"))
}

/// Through the real router with alice's session: a request that names another workspace, by any spelling of path
/// or host, is refused (403); one that names alice's reaches only her own routes (her workspace does not run, so
/// nothing is forwarded); nothing answers 500 or panics.
async fn check_router(
    router: &axum::Router,
    cookie: &str,
    raw_path: &str,
    host: &str,
    head: bool,
) -> Result<(), TestCaseError> {
    use tower::ServiceExt;
    let target = as_request_target(raw_path);
    let Ok(uri) = target.parse::<axum::http::Uri>() else { return Ok(()) };
    let mut req = axum::http::Request::builder().method(if head { "HEAD" } else { "GET" }).uri(uri.clone());
    if let Ok(h) = axum::http::HeaderValue::from_str(host) {
        req = req.header("host", h);
    }
    let req = req.header("cookie", cookie).body(axum::body::Body::empty()).unwrap();
    let sent_host = req.headers().get("host").and_then(|h| h.to_str().ok()).map(str::to_owned);
    let status = router.clone().oneshot(req).await.unwrap().status().as_u16();
    let named = sent_host.and_then(|h| host_target(&h, SUFFIX, uri.path())).or_else(|| path_target(uri.path()));
    prop_assert!(status != 500, "{target} (host {host:?}): 500");
    let Some(t) = named else { return Ok(()) };
    if t.rest.is_none() {
        prop_assert_eq!(status, 308, "{} names a workspace without the slash", target);
    } else if t.rest.as_deref() == Some("/_workspaced/launch") {
        prop_assert!((400..500).contains(&status), "{target}: launch without a valid token gave {status}");
    } else if t.student != "alice" {
        prop_assert_eq!(status, 403, "{} (host {:?}) names {:?} but alice's session got in", target, host, t.student);
    } else {
        prop_assert!([200, 404, 405, 503].contains(&status), "{target} (host {host:?}) gave {status}");
    }
    Ok(())
}

#[test]
fn proxy_router_with_a_session_never_reaches_another_workspace() {
    let tmp = tempfile::tempdir().unwrap();
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let (router, cookie) = rt.block_on(router_with_alices_session(tmp.path()));
    let mut runner = proptest::test_runner::TestRunner::new(config(12_000, regressions!("proxy_router")));
    let paths = prop_oneof![
        any_path(),
        prop::collection::vec(segment(), 0..5).prop_map(|s| format!("/w/alice/{}", s.join("/"))),
        prop::collection::vec(segment(), 0..5).prop_map(|s| format!("/w/bob/{}", s.join("/"))),
    ];
    let hosts = prop_oneof![Just("127.0.0.1:7878".to_owned()), Just(format!("alice.{SUFFIX}")), any_host()];
    let result = runner.run(&(paths, hosts, any::<bool>()), |(path, host, head)| {
        rt.block_on(check_router(&router, &cookie, &path, &host, head))
    });
    if let Err(e) = result {
        panic!("{e}");
    }
    for (name, input) in corpus("proxy_path") {
        let text = String::from_utf8_lossy(&input);
        let (path, host) = text.split_once('\n').unwrap_or((&text, ""));
        if let Err(e) = rt.block_on(check_router(&router, &cookie, path, host.trim_end_matches('\n'), false)) {
            panic!("tests/fuzz-corpus/proxy_path/{name} through the router: {e}");
        }
    }
}

// ---------------------------------------------------------------------------------------------------------------
// Tokens: launch tokens, session cookies, student tokens

const KEY: &[u8] = b"0123456789abcdef0123456789abcdef-fuzz";

fn at(ms: i64) -> DateTime<Utc> {
    DateTime::from_timestamp_millis(ms).expect("in range")
}

/// Any text given as a credential: never a panic, never accepted (nobody can sign without the key).
fn check_any_token(text: &str) -> Result<(), TestCaseError> {
    let signer = Signer::new(KEY);
    let now = at(1_800_000_000_000);
    let launch = signer.check_launch(text, now);
    prop_assert!(matches!(launch, Err(TokenError::Malformed | TokenError::BadSignature)), "{text:?} gave {launch:?}");
    if text.split('.').count() != 4 {
        prop_assert_eq!(launch, Err(TokenError::Malformed));
    }
    for purpose in [Purpose::Launch, Purpose::Session, Purpose::StudentToken] {
        prop_assert_eq!(signer.check_credential(purpose, text, now), None);
        let bare = text.strip_prefix("wss_").unwrap_or(text);
        prop_assert_eq!(signer.check_credential(purpose, bare, now), None);
    }
    for name in ["workspaced_session", "__Host-workspaced_session", ""] {
        for v in cookie_values(text, name) {
            prop_assert!(text.contains(&format!("{name}={v}")), "{v:?} is not a value of {name} in {text:?}");
        }
    }
    Ok(())
}

fn any_token_text() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<String>(),
        "[a-z0-9.-]{0,40}",
        ("[a-z0-9_-]{0,10}", "-?[0-9]{0,20}", "-?[0-9]{0,20}", "[0-9a-fA-F]{0,66}")
            .prop_map(|(s, a, b, sig)| format!("{s}.{a}-{b}.{a}{b}.{sig}")),
        ("[a-z0-9]{1,10}", "[0-9]{1,20}", "[0-9a-f]{32}", "[0-9a-f]{64}")
            .prop_map(|(s, e, n, sig)| format!("{s}.{e}.{n}.{sig}")),
        "[ -~]{0,600}",
    ]
}

#[test]
fn tokens_corpus() {
    replay("tokens", |b| check_any_token(&String::from_utf8_lossy(b)));
}

/// One change to a valid token: a byte replaced by another printable one.
#[derive(Debug, Clone)]
struct Mutation {
    at: prop::sample::Index,
    to: char,
}

fn mutation() -> impl Strategy<Value = Mutation> {
    (any::<prop::sample::Index>(), prop::char::range(' ', '~')).prop_map(|(at, to)| Mutation { at, to })
}

/// The token with one character changed, unless the change keeps its meaning: the same character, or a hex digit of
/// the signature in the other case (hex decoding ignores case, so that is the same signature).
fn mutated(token: &str, m: &Mutation) -> Option<String> {
    let i = m.at.index(token.len());
    let old = token.as_bytes()[i] as char;
    let in_signature = token.rfind('.').is_some_and(|dot| i > dot);
    if old == m.to || (in_signature && old.is_ascii_hexdigit() && old.eq_ignore_ascii_case(&m.to)) {
        return None;
    }
    let mut s = token.to_owned();
    s.replace_range(i..=i, &m.to.to_string());
    Some(s)
}

proptest! {
    #![proptest_config(config(40_000, regressions!("tokens")))]
    #[test]
    fn no_text_is_accepted_as_a_token_and_none_makes_a_check_panic(text in any_token_text()) {
        check_any_token(&text)?;
    }

    #[test]
    fn a_signed_token_round_trips_under_its_purpose_only_and_any_change_is_refused(
        student in "[a-z0-9][a-z0-9_-]{0,61}[a-z0-9]",
        all in any::<i64>(),
        own in any::<i64>(),
        now_ms in 0i64..4_000_000_000_000,
        ttl_s in prop_oneof![1u64..100_000, Just(u64::MAX / 4)],
        m in mutation(),
    ) {
        let signer = Signer::new(KEY);
        let student = StudentId::parse(&student).unwrap();
        let (now, ttl) = (at(now_ms), Duration::from_secs(ttl_s));
        let generation = Generation { all, own };

        let (launch, exp) = signer.launch_token(&student, now, ttl);
        let claims = signer.check_launch(&launch, now).map_err(|e| TestCaseError::fail(format!("{launch}: {e}")))?;
        prop_assert_eq!(&claims.student, &student);
        prop_assert_eq!(claims.expires_at.timestamp_millis(), exp.timestamp_millis());
        prop_assert_eq!(signer.check_launch(&launch, exp), Err(TokenError::Expired));
        prop_assert_eq!(Signer::new(b"another key").check_launch(&launch, now), Err(TokenError::BadSignature));
        for purpose in [Purpose::Launch, Purpose::Session, Purpose::StudentToken] {
            prop_assert_eq!(signer.check_credential(purpose, &launch, now), None);
        }
        if let Some(changed) = mutated(&launch, &m) {
            prop_assert!(signer.check_launch(&changed, now).is_err(), "{changed} passed");
        }

        for (purpose, other) in [(Purpose::Session, Purpose::StudentToken), (Purpose::StudentToken, Purpose::Session)] {
            let (value, exp) = signer.credential(purpose, &student, generation, now, ttl);
            let claims = signer
                .check_credential(purpose, &value, now)
                .ok_or_else(|| TestCaseError::fail(format!("{value} did not verify as {purpose:?}")))?;
            prop_assert_eq!(&claims.student, &student);
            prop_assert_eq!(claims.generation, generation);
            prop_assert_eq!(claims.expires_at.timestamp_millis(), exp.timestamp_millis());
            prop_assert_eq!(signer.check_credential(other, &value, now), None);
            prop_assert_eq!(signer.check_credential(Purpose::Launch, &value, now), None);
            prop_assert_eq!(signer.check_credential(purpose, &value, exp), None, "expired");
            prop_assert!(signer.check_launch(&value, now).is_err());
            if let Some(changed) = mutated(&value, &m) {
                prop_assert_eq!(signer.check_credential(purpose, &changed, now), None, "{} passed", changed);
            }
            let cookie = format!("a=b; workspaced_session=planted; workspaced_session={value}");
            prop_assert!(cookie_values(&cookie, "workspaced_session").any(|v| v == value));
        }
    }
}

// ---------------------------------------------------------------------------------------------------------------
// Import of a tar stream

const MAX_BYTES: u64 = 64 * 1024;
const MAX_ENTRIES: u64 = 24;
const UID: u32 = 1000;

/// A folder with `base/` (the workspace base) and `outside/` (what an archive must never reach), and a student.
struct ImportWorld {
    tmp: tempfile::TempDir,
}

impl ImportWorld {
    fn new() -> Self {
        let tmp = tempfile::tempdir().unwrap();
        fs::create_dir(tmp.path().join("base")).unwrap();
        fs::create_dir(tmp.path().join("outside")).unwrap();
        fs::write(tmp.path().join("outside/secret"), b"secret").unwrap();
        Self { tmp }
    }

    fn base(&self) -> PathBuf {
        self.tmp.path().join("base")
    }
}

/// Every path under `dir` (not following links), relative to it.
fn tree(dir: &Path) -> BTreeSet<PathBuf> {
    let mut out = BTreeSet::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(d) = pending.pop() {
        for e in fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            out.insert(p.strip_prefix(dir).unwrap().to_path_buf());
            if fs::symlink_metadata(&p).unwrap().is_dir() {
                pending.push(p);
            }
        }
    }
    out
}

/// `path` with `.` and `..` resolved lexically, or `None` when `..` climbs above the start.
fn lexical(path: &Path) -> Option<PathBuf> {
    let mut out = PathBuf::new();
    for c in path.components() {
        match c {
            Component::ParentDir => {
                if !out.pop() {
                    return None;
                }
            }
            Component::CurDir => {}
            Component::Normal(n) => out.push(n),
            Component::RootDir | Component::Prefix(_) => return None,
        }
    }
    Some(out)
}

/// Whatever the bytes: no panic; the only change outside is the student's folder; inside it every file is the
/// workspace user's, nothing is a device, no link leads out, and the limits hold.
fn check_import(archive: &[u8]) -> Result<(), TestCaseError> {
    let w = ImportWorld::new();
    let student = StudentId::parse("alice").unwrap();
    let options =
        ImportOptions { uid: UID, gid: UID, max_bytes: MAX_BYTES, max_entries: MAX_ENTRIES, keep_previous: false };
    let result = import_archive(&w.base(), &student, archive, &options);

    let outside = w.tmp.path().join("outside");
    prop_assert_eq!(tree(w.tmp.path().join("outside").as_path()), BTreeSet::from([PathBuf::from("secret")]));
    prop_assert_eq!(fs::read(outside.join("secret")).unwrap(), b"secret".to_vec());
    prop_assert_eq!(fs::metadata(outside.join("secret")).unwrap().nlink(), 1, "hard-linked from the archive");
    let top: BTreeSet<PathBuf> = fs::read_dir(w.tmp.path()).unwrap().map(|e| e.unwrap().file_name().into()).collect();
    prop_assert_eq!(top, BTreeSet::from([PathBuf::from("base"), PathBuf::from("outside")]));

    let base_now: Vec<PathBuf> = fs::read_dir(w.base()).unwrap().map(|e| e.unwrap().file_name().into()).collect();
    let report = match result {
        Err(e) => {
            prop_assert!(base_now.is_empty(), "a refused import left {base_now:?} ({e})");
            if let ImportError::TooLarge { limit } | ImportError::TooManyEntries { limit } = e {
                prop_assert!(limit == MAX_BYTES || limit == MAX_ENTRIES);
            }
            return Ok(());
        }
        Ok(report) => report,
    };
    prop_assert_eq!(base_now, vec![PathBuf::from("alice")]);
    let root = w.base().join("alice");
    prop_assert_eq!(&report.dir, &root);
    prop_assert!(report.entries <= MAX_ENTRIES && report.bytes <= MAX_BYTES, "{report:?}");
    let root_meta = fs::symlink_metadata(&root).unwrap();
    prop_assert!(root_meta.is_dir() && root_meta.uid() == UID && root_meta.mode() & 0o777 == 0o700);
    let mut bytes = 0;
    for rel in tree(&root) {
        let p = root.join(&rel);
        let m = fs::symlink_metadata(&p).unwrap();
        prop_assert_eq!((m.uid(), m.gid()), (UID, UID), "{} is not the workspace user's", rel.display());
        let t = m.file_type();
        prop_assert!(t.is_file() || t.is_dir() || t.is_symlink(), "{} is a device or fifo", rel.display());
        if !t.is_symlink() {
            prop_assert_eq!(m.mode() & 0o7000, 0, "setuid, setgid or sticky on {}", rel.display());
        }
        if t.is_file() {
            bytes += m.len();
        }
        if t.is_symlink() {
            let target = fs::read_link(&p).unwrap();
            match fs::canonicalize(&p) {
                Ok(real) => prop_assert!(
                    real.starts_with(fs::canonicalize(&root).unwrap()),
                    "{} -> {} resolves to {}",
                    rel.display(),
                    target.display(),
                    real.display()
                ),
                // Dangling: where it would land if its target appeared.
                Err(_) => prop_assert!(
                    lexical(&rel.parent().unwrap_or(Path::new("")).join(&target)).is_some(),
                    "{} -> {} leaves the folder",
                    rel.display(),
                    target.display()
                ),
            }
        }
    }
    prop_assert!(bytes <= MAX_BYTES, "{bytes} bytes extracted");
    Ok(())
}

/// One tar entry as an attacker writes it: any name, any kind, any link target, mode and mtime.
#[derive(Debug, Clone)]
struct RawEntry {
    name: String,
    kind: u8,
    link: String,
    mode: u32,
    mtime: u64,
    data: Vec<u8>,
    size_lie: Option<u64>,
}

fn entry_path() -> impl Strategy<Value = String> {
    let part = prop_oneof![
        Just("..".to_owned()),
        Just(".".to_owned()),
        Just("".to_owned()),
        Just("a".to_owned()),
        Just("b".to_owned()),
        Just("link".to_owned()),
        Just("outside".to_owned()),
        Just("base".to_owned()),
        Just("secret".to_owned()),
        "[a-z.]{1,4}",
    ];
    (any::<bool>(), prop::collection::vec(part, 1..5)).prop_map(|(abs, parts)| {
        let p = parts.join("/");
        if abs {
            format!("/{p}")
        } else {
            p
        }
    })
}

fn raw_entry() -> impl Strategy<Value = RawEntry> {
    let kind = prop_oneof![
        4 => Just(b'0'),
        3 => Just(b'5'),
        3 => Just(b'2'),
        2 => Just(b'1'),
        1 => Just(b'3'),
        1 => Just(b'4'),
        1 => Just(b'6'),
        1 => Just(b'7'),
        1 => Just(b'S'),
        1 => Just(b'g'),
        1 => Just(b'x'),
        1 => any::<u8>(),
    ];
    let mtime = prop_oneof![4 => 0u64..4_000_000_000, 1 => any::<u64>()];
    let mode = prop_oneof![Just(0o644u32), Just(0o755), Just(0o4755), Just(0o7777), 0u32..0o7777777];
    let data = prop_oneof![
        4 => prop::collection::vec(any::<u8>(), 0..64),
        1 => (0usize..(2 * MAX_BYTES as usize)).prop_map(|n| vec![b'x'; n]),
    ];
    let size_lie = prop::option::weighted(0.1, prop_oneof![0u64..1024, Just(u64::MAX), Just(MAX_BYTES + 1)]);
    (entry_path(), kind, entry_path(), mode, mtime, data, size_lie).prop_map(
        |(name, kind, link, mode, mtime, data, size_lie)| RawEntry { name, kind, link, mode, mtime, data, size_lie },
    )
}

/// Writes the entries as a tar with names and link targets copied into the header verbatim (the `tar` crate's own
/// setters refuse `..`, which an attacker's tool does not), then applies byte flips, then gzips.
fn build_archive(entries: &[RawEntry], flips: &[(prop::sample::Index, u8)], gzip: bool) -> Vec<u8> {
    let mut tar = Vec::new();
    for e in entries {
        let mut h = tar::Header::new_gnu();
        {
            let raw = h.as_old_mut();
            let name = e.name.as_bytes();
            raw.name[..name.len().min(100)].copy_from_slice(&name[..name.len().min(100)]);
            let link = e.link.as_bytes();
            raw.linkname[..link.len().min(100)].copy_from_slice(&link[..link.len().min(100)]);
        }
        h.set_entry_type(tar::EntryType::new(e.kind));
        h.set_mode(e.mode);
        h.set_mtime(e.mtime);
        h.set_uid(0);
        h.set_gid(0);
        let carries_data = matches!(e.kind, b'0' | b'7' | b'S' | 0);
        let data: &[u8] = if carries_data { &e.data } else { &[] };
        h.set_size(e.size_lie.unwrap_or(data.len() as u64));
        h.set_cksum();
        tar.extend_from_slice(h.as_bytes());
        tar.extend_from_slice(data);
        tar.resize(tar.len().div_ceil(512) * 512, 0);
    }
    tar.resize(tar.len() + 1024, 0);
    for (at, byte) in flips {
        let i = at.index(tar.len());
        tar[i] = *byte;
    }
    if !gzip {
        return tar;
    }
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(&tar).unwrap();
    gz.finish().unwrap()
}

#[test]
fn import_corpus() {
    replay("import", check_import);
}

/// Found by this target: a file entry whose mtime is beyond what `SystemTime` holds (tar's base-256 field takes it)
/// made the import panic with "overflow when adding duration to instant". The corpus keeps it as
/// `huge-mtime-file.tar.gz`; the archive now imports, with the extraction time as the file's mtime.
#[test]
fn regression_a_file_with_an_mtime_beyond_system_time_imports_without_a_panic() {
    let entry = RawEntry {
        name: "a".into(),
        kind: b'0',
        link: String::new(),
        mode: 0o644,
        mtime: 1 << 63,
        data: vec![1],
        size_lie: None,
    };
    let archive = build_archive(&[entry], &[], true);
    let w = ImportWorld::new();
    let options =
        ImportOptions { uid: UID, gid: UID, max_bytes: MAX_BYTES, max_entries: MAX_ENTRIES, keep_previous: false };
    let report = import_archive(&w.base(), &StudentId::parse("alice").unwrap(), archive.as_slice(), &options).unwrap();
    assert_eq!((report.entries, fs::read(w.base().join("alice/a")).unwrap()), (1, vec![1]));
    check_import(&archive).unwrap();
}

proptest! {
    #![proptest_config(config(600, regressions!("import")))]
    #[test]
    fn an_archive_of_any_entries_never_panics_never_writes_outside_and_keeps_the_limits(
        entries in prop::collection::vec(raw_entry(), 0..(MAX_ENTRIES as usize + 4)),
        flips in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 0..3),
        gzip in prop::bool::weighted(0.95),
    ) {
        check_import(&build_archive(&entries, &flips, gzip))?;
    }

    #[test]
    fn any_bytes_given_as_an_archive_never_panic_and_leave_no_trace_outside_the_folder(
        bytes in prop::collection::vec(any::<u8>(), 0..2048),
        gzip in any::<bool>(),
    ) {
        let input = if gzip {
            let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
            gz.write_all(&bytes).unwrap();
            gz.finish().unwrap()
        } else {
            bytes
        };
        check_import(&input)?;
    }
}
