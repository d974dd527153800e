//! The test LTI 1.3 platform (an LMS stand-in, `tests/lti/platform.py` on the PyPI package lti1p3platform), run by
//! `scripts/lti-platform.sh` for the LTI launch tests. It listens on loopback under the host name `localhost`, so in
//! Chromium it is another site than the tool at `127.0.0.1`. Endpoints, users and cases: `tests/lti/README.md`.
#![allow(dead_code)]

use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, ChildStdout, Command};

/// How long the first start may take: it installs the pinned packages into a virtualenv under the cache directory.
const START_WITHIN: Duration = Duration::from_secs(300);

/// A running platform. Dropping it kills the process.
pub struct LtiPlatform {
    /// `http://localhost:<port>`: the `iss` of its id_tokens.
    pub issuer: String,
    /// `workspaced-test`.
    pub client_id: String,
    /// `dep-1` (`dep-2` is known too: `start_url` with `&deployment=dep-2`).
    pub deployment_id: String,
    /// `<issuer>/authorize`: the OIDC auth endpoint the tool redirects to.
    pub auth_url: String,
    /// `<issuer>/token`: OAuth2 client credentials with a JWT client assertion.
    pub token_url: String,
    /// `<issuer>/jwks`: the platform's key set.
    pub jwks_url: String,
    /// The base of its own URLs (the same as `issuer`).
    pub base: String,
    http: reqwest::Client,
    child: Child,
    _stdout: BufReader<ChildStdout>,
    dir: tempfile::TempDir,
}

impl LtiPlatform {
    /// Starts a platform for the tool at `tool_base` (e.g. `http://127.0.0.1:PORT`; its login, launch and key set
    /// URLs are `/lti/login`, `/lti/launch` and `/lti/jwks` under it), and waits for its first line.
    pub async fn start(tool_base: &str) -> LtiPlatform {
        let dir = tempfile::tempdir().unwrap();
        let stderr = std::fs::File::create(dir.path().join("stderr.log")).unwrap();
        let mut child = Command::new("bash")
            .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/lti-platform.sh"))
            .args(["--port", "0", "--tool", tool_base])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(stderr)
            .kill_on_drop(true)
            .spawn()
            .expect("spawn scripts/lti-platform.sh");
        let mut stdout = BufReader::new(child.stdout.take().unwrap());
        let mut line = String::new();
        let read = tokio::time::timeout(START_WITHIN, stdout.read_line(&mut line)).await;
        let stderr_log = || std::fs::read_to_string(dir.path().join("stderr.log")).unwrap_or_default();
        match read {
            Ok(Ok(n)) if n > 0 => {}
            Ok(Ok(_)) => panic!("the LTI platform exited before it started; its stderr:\n{}", stderr_log()),
            Ok(Err(e)) => panic!("reading the LTI platform's first line: {e}; its stderr:\n{}", stderr_log()),
            Err(_) => panic!("the LTI platform did not start within {START_WITHIN:?}; its stderr:\n{}", stderr_log()),
        }
        let info: serde_json::Value = serde_json::from_str(line.trim())
            .unwrap_or_else(|e| panic!("the LTI platform's first line is not JSON ({e}): {line:?}"));
        let field = |name: &str| {
            info[name]
                .as_str()
                .unwrap_or_else(|| panic!("no {name:?} in the LTI platform's first line: {line}"))
                .to_owned()
        };
        let http = reqwest::Client::builder().timeout(Duration::from_secs(20)).build().unwrap();
        LtiPlatform {
            issuer: field("issuer"),
            client_id: field("client_id"),
            deployment_id: field("deployment_id"),
            auth_url: field("auth_url"),
            token_url: field("token_url"),
            jwks_url: field("jwks_url"),
            base: field("base"),
            http,
            child,
            _stdout: stdout,
            dir,
        }
    }

    /// Where a browser begins a launch: `user` one of `ada`, `bea` (learners), `ina` (instructor), `tom` (teaching
    /// assistant), `cy` (a learner); `message` `resource` or `deeplink`; `case` `ok` or one of the bad cases
    /// (`bad_signature`, `unknown_kid`, `expired`, `wrong_aud`, `unknown_deployment`, `unknown_deployment_token`,
    /// `missing_claims`, `wrong_nonce`, `replay`). It redirects to the tool's login initiation.
    pub fn start_url(&self, user: &str, message: &str, case: &str) -> String {
        self.url("/start", &[("user", user), ("message", message), ("case", case)])
    }

    /// The same launch from a course page of the platform that shows the tool in `<iframe id="tool">`.
    pub fn embedded_start_url(&self, user: &str, message: &str, case: &str) -> String {
        self.url("/start", &[("user", user), ("message", message), ("case", case), ("embed", "1")])
    }

    /// A URL of the platform with the query `pairs`, encoded.
    pub fn url(&self, path: &str, pairs: &[(&str, &str)]) -> String {
        let mut url = reqwest::Url::parse(&format!("{}{path}", self.base)).unwrap();
        if !pairs.is_empty() {
            url.query_pairs_mut().extend_pairs(pairs);
        }
        url.to_string()
    }

    /// The deep linking responses the platform verified, in order: each the JWT's decoded claims.
    pub async fn received(&self) -> serde_json::Value {
        self.get_json("/received").await
    }

    /// Every request the platform received (`kind: "request"`, with method, path, query, form, status) and every
    /// refusal with its reason (`kind: "failure"`), plus `launch`, `token` and `deep_link_response` entries.
    pub async fn log(&self) -> serde_json::Value {
        self.get_json("/log").await
    }

    /// The `reason` of each refusal so far, in order.
    pub async fn failures(&self) -> Vec<String> {
        let log = self.log().await;
        log.as_array()
            .into_iter()
            .flatten()
            .filter(|e| e["kind"] == "failure")
            .map(|e| e["reason"].as_str().unwrap_or_default().to_owned())
            .collect()
    }

    /// What the platform wrote to its stderr so far (its request log), for a failing test's message.
    pub fn stderr(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("stderr.log")).unwrap_or_default()
    }

    async fn get_json(&self, path: &str) -> serde_json::Value {
        let resp = self
            .http
            .get(format!("{}{path}", self.base))
            .send()
            .await
            .unwrap_or_else(|e| panic!("GET {path} on the LTI platform: {e}"));
        assert!(resp.status().is_success(), "GET {path} on the LTI platform: {}", resp.status());
        resp.json().await.unwrap()
    }

    /// Stops the platform now (dropping it does too).
    pub async fn stop(mut self) {
        let _ = self.child.kill().await;
    }
}
