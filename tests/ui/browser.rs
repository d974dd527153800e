//! A real Chromium (Debian's, through Debian's chromedriver) driven over WebDriver with fantoccini. One browser at
//! a time: two code-servers and two Chromiums on two cores would make the timings meaningless.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fantoccini::{Client, ClientBuilder, Locator};

static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

pub struct Browser {
    pub client: Client,
    driver: Child,
    _profile: tempfile::TempDir,
    _turn: tokio::sync::MutexGuard<'static, ()>,
}

impl Browser {
    pub async fn start() -> Self {
        Self::start_with(serde_json::json!({})).await
    }

    /// [`Browser::start`] with Chromium preferences (`goog:chromeOptions.prefs`), e.g.
    /// `{"profile": {"cookie_controls_mode": 1}}`: third-party cookies blocked, as Chrome's setting does.
    pub async fn start_with(prefs: serde_json::Value) -> Self {
        let turn = ONE_AT_A_TIME.lock().await;
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let driver = Command::new("chromedriver")
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("chromedriver (apt-get install chromium-driver)");
        let profile = tempfile::tempdir().unwrap();
        let caps = serde_json::json!({
            "goog:chromeOptions": {
                "binary": "/usr/bin/chromium",
                "args": [
                    "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
                    "--disable-background-networking", "--disable-component-update", "--disable-sync",
                    "--window-size=1280,800", format!("--user-data-dir={}", profile.path().display()),
                ],
                "prefs": prefs,
            }
        });
        let caps: serde_json::Map<String, serde_json::Value> = caps.as_object().unwrap().clone();
        let url = format!("http://127.0.0.1:{port}");
        let deadline = Instant::now() + Duration::from_secs(20);
        let client = loop {
            let connector = hyper_util::client::legacy::connect::HttpConnector::new();
            match ClientBuilder::new(connector).capabilities(caps.clone()).connect(&url).await {
                Ok(c) => break c,
                Err(e) if Instant::now() < deadline => {
                    let _ = e;
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                Err(e) => panic!("cannot start chromium: {e}"),
            }
        };
        Self { client, driver, _profile: profile, _turn: turn }
    }

    /// Waits until `css` matches a displayed element.
    pub async fn wait_for(&self, css: &str, within: Duration) -> fantoccini::elements::Element {
        let deadline = Instant::now() + within;
        loop {
            if let Ok(e) = self.client.find(Locator::Css(css)).await {
                if e.is_displayed().await.unwrap_or(false) {
                    return e;
                }
            }
            if Instant::now() > deadline {
                self.screenshot("failure").await;
                panic!("{css} did not appear within {within:?} (url {:?})", self.client.current_url().await.ok());
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Waits until the page's text contains `text`.
    pub async fn wait_for_text(&self, text: &str, within: Duration) {
        let deadline = Instant::now() + within;
        loop {
            let body = self.text().await;
            if body.contains(text) {
                return;
            }
            if Instant::now() > deadline {
                self.screenshot("failure").await;
                panic!("{text:?} did not appear within {within:?}; page text: {body}");
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Waits until the script `js` (a function body; `arguments` are `args`) returns `true`.
    pub async fn wait_js(&self, what: &str, js: &str, args: Vec<serde_json::Value>, within: Duration) {
        let deadline = Instant::now() + within;
        loop {
            if let Ok(serde_json::Value::Bool(true)) = self.client.execute(js, args.clone()).await {
                return;
            }
            if Instant::now() > deadline {
                self.screenshot("failure").await;
                panic!("{what}: not within {within:?}");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Types into whatever has the focus (as a person would: W3C key input to the active element).
    pub async fn type_keys(&self, keys: &str) {
        self.client.active_element().await.unwrap().send_keys(keys).await.unwrap();
    }

    /// Clicks the element `css` matches; finds it again if the page replaced it in between (a live list).
    pub async fn click(&self, css: &str) {
        for attempt in 0..5 {
            let found = self.client.find(Locator::Css(css)).await;
            match found {
                Ok(e) => match e.click().await {
                    Ok(()) => return,
                    Err(err) if attempt < 4 => pause_before_retry(&err).await,
                    Err(err) => panic!("cannot click {css}: {err}"),
                },
                Err(err) if attempt < 4 => pause_before_retry(&err).await,
                Err(err) => panic!("cannot find {css}: {err}"),
            }
        }
    }

    pub async fn text(&self) -> String {
        match self.client.execute("return document.body ? document.body.innerText : ''", vec![]).await {
            Ok(v) => v.as_str().unwrap_or("").to_owned(),
            Err(_) => String::new(),
        }
    }

    /// Saves a PNG to `$WORKSPACED_SCREENSHOTS/<name>.png` when that is set (docs/img is made this way).
    pub async fn screenshot(&self, name: &str) {
        let Ok(dir) = std::env::var("WORKSPACED_SCREENSHOTS") else { return };
        if let Ok(png) = self.client.screenshot().await {
            let _ = std::fs::create_dir_all(&dir);
            let _ = std::fs::write(std::path::Path::new(&dir).join(format!("{name}.png")), png);
        }
    }

    pub async fn close(mut self) {
        let _ = self.client.clone().close().await;
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.driver.kill();
    }
}

/// A short pause before trying again (the page was re-rendering).
async fn pause_before_retry(_why: &fantoccini::error::CmdError) {
    tokio::time::sleep(Duration::from_millis(200)).await;
}
