//! A Jupyter course in real Chromium: JupyterLab (the image of `build-image.sh jupyter`) behind the proxy in
//! full-path mode loads from a launch link, shows its launcher and file browser, and opens a student's file. In
//! strip mode the page cannot load in a browser (its scripts are asked for at `/static/...`, outside the
//! workspace), while its API, contents and terminals work: `tests/api/jupyter.rs` shows both.

use std::time::Duration;

use crate::browser::Browser;
use crate::helpers::*;

#[tokio::test]
async fn jupyterlab_loads_in_the_browser_in_full_path_mode_and_opens_a_students_file() {
    let b = Browser::start().await;
    let app = spawn_app_with(|s| {
        let w = &mut s.workspace;
        w.image = "workspaced/jupyter:4.4.10".to_owned();
        w.container_port = 8888;
        w.readiness_path = "/api".to_owned();
        w.ide_auth = workspaced::domain::IdeAuth::parse("header:Authorization:token ").unwrap();
        w.ide_secret_env = Some("JUPYTER_TOKEN".to_owned());
        w.start_timeout = Duration::from_secs(120);
        w.proxy_path = workspaced::domain::ProxyPath::Full;
        w.command = [
            "jupyter",
            "lab",
            "--ip=0.0.0.0",
            "--port=8888",
            "--no-browser",
            "--ServerApp.root_dir=/home/coder/project",
            "--ServerApp.base_url={base_url}",
        ]
        .map(str::to_owned)
        .to_vec();
    })
    .await;

    // The launch link: the launcher page while it starts, then JupyterLab under the prefix.
    b.client.goto(&launch_url(&app, "juno").await).await.unwrap();
    let ws = app.wait_for("juno", Duration::from_secs(150), |w| w["status"] == "running").await;
    assert_eq!(ws["status"], "running", "{ws}");
    std::fs::write(app.student_dir("juno").join("notes.md"), "# Week 1\n\nhello from the course\n").unwrap();
    b.wait_for(".jp-Launcher", Duration::from_secs(120)).await;
    let url = b.client.current_url().await.unwrap();
    assert!(url.path().starts_with("/w/juno/lab"), "JupyterLab is served under the prefix: {url}");
    b.screenshot("jupyterlab").await;

    // The file browser lists the student's folder, and the file opens in an editor with its text.
    b.wait_for(".jp-DirListing-content", Duration::from_secs(60)).await;
    b.wait_for_text("notes.md", Duration::from_secs(60)).await;
    b.client.goto(&app.url("/w/juno/lab/tree/notes.md")).await.unwrap();
    b.wait_for(".jp-FileEditor .cm-content", Duration::from_secs(60)).await;
    b.wait_js(
        "the file's text in the editor",
        "const e = document.querySelector('.jp-FileEditor .cm-content'); \
         return !!e && e.textContent.includes(arguments[0]);",
        vec!["hello from the course".into()],
        Duration::from_secs(60),
    )
    .await;
    b.screenshot("jupyterlab-file").await;
    b.close().await;
    app.stop("juno").await;
}
