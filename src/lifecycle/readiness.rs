//! Waits until the IDE inside a container answers its readiness path on the published loopback port.

use std::time::Duration;

use tokio::time::Instant;

/// Polls `http://127.0.0.1:<port><path>` until it answers 2xx or `deadline` passes. Each probe closes its
/// connection (`Connection: close`): a kept-alive connection would count as activity to code-server.
pub async fn wait_ready(client: &reqwest::Client, port: u16, path: &str, deadline: Instant) -> Result<(), String> {
    let url = format!("http://127.0.0.1:{port}{path}");
    let mut last = String::from("no answer yet");
    let mut pause = Duration::from_millis(25);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(last);
        }
        let probe = client
            .get(&url)
            .header(reqwest::header::CONNECTION, "close")
            .timeout(left.min(Duration::from_secs(2)))
            .send()
            .await;
        match probe {
            Ok(r) if r.status().is_success() => return Ok(()),
            Ok(r) => last = format!("{path} answered {}", r.status()),
            Err(e) => last = format!("{path} did not answer: {e}"),
        }
        tokio::time::sleep(pause.min(deadline.saturating_duration_since(Instant::now()))).await;
        pause = (pause * 2).min(Duration::from_millis(200));
    }
}
