//! Waits until the IDE inside a container answers its readiness path on its published port (on this machine's
//! loopback, or on the node the route names).

use std::time::Duration;

use tokio::time::Instant;

use crate::domain::{Credential, IdeAuth, IdeSecret};

/// What to ask: the IDE's host, port and path, with its secret (an IDE may want it even on its status path).
pub struct Probe<'a> {
    /// The route's host (checked), or `127.0.0.1`.
    pub host: &'a str,
    pub port: u16,
    pub path: &'a str,
    pub auth: &'a IdeAuth,
    pub secret: Option<&'a IdeSecret>,
}

/// Polls `http://<host>:<port><path>` until it answers 2xx or `deadline` passes. Each probe closes its
/// connection (`Connection: close`): a kept-alive connection would count as activity to code-server.
pub async fn wait_ready(client: &reqwest::Client, probe: &Probe<'_>, deadline: Instant) -> Result<(), String> {
    let path = probe.path;
    let url = format!("http://{}{path}", crate::domain::authority(probe.host, probe.port));
    let credential = probe.secret.and_then(|s| probe.auth.credential(s));
    let mut last = String::from("no answer yet");
    let mut pause = Duration::from_millis(25);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(last);
        }
        let mut request =
            client.get(&url).header(reqwest::header::CONNECTION, "close").timeout(left.min(Duration::from_secs(2)));
        request = match &credential {
            Some(Credential::Cookie { name, value }) => {
                request.header(reqwest::header::COOKIE, format!("{name}={value}"))
            }
            Some(Credential::Header { name, value }) => request.header(name.as_str(), value.as_str()),
            Some(Credential::Query { param, value }) => request.query(&[(param, value)]),
            None => request,
        };
        match request.send().await {
            Ok(r) if r.status().is_success() => return Ok(()),
            Ok(r) => last = format!("{path} answered {}", r.status()),
            // reqwest's error names the URL, which may carry the secret in its query.
            Err(e) => last = format!("{path} did not answer: {}", e.without_url()),
        }
        tokio::time::sleep(pause.min(deadline.saturating_duration_since(Instant::now()))).await;
        pause = (pause * 2).min(Duration::from_millis(200));
    }
}
