//! A Jupyter course in real Chromium: JupyterLab (the image of `build-image.sh jupyter`) behind the proxy in
//! full-path mode loads from a launch link, shows its launcher and file browser, opens a student's file, and runs a
//! notebook cell on its kernel (a WebSocket through the proxy). In strip mode the page cannot load in a browser (its
//! scripts are asked for at `/static/...`, outside the workspace), while its API, contents and terminals work:
//! `tests/api/jupyter.rs` shows both.

use std::time::Duration;

use crate::browser::Browser;
use crate::helpers::*;

#[tokio::test]
async fn jupyterlab_loads_in_the_browser_in_full_path_mode_opens_a_file_and_runs_a_notebook() {
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
        // code-server's state path would make Docker create `~/.local/share` as root, where Jupyter writes.
        w.ide_state_path = None;
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
    // A student's files, as the course gave them (owned by the student's uid).
    let dir = app.student_dir("juno");
    std::fs::write(dir.join("notes.md"), "# Week 1\n\nhello from the course\n").unwrap();
    let notebook = serde_json::json!({
        "cells": [{"cell_type": "code", "execution_count": null, "id": "c1", "metadata": {}, "outputs": [],
                   "source": ["print('answer', 6 * 7)"]}],
        "metadata": {"kernelspec": {"display_name": "Python 3", "language": "python", "name": "python3"}},
        "nbformat": 4, "nbformat_minor": 5
    });
    std::fs::write(dir.join("week1.ipynb"), notebook.to_string()).unwrap();
    for f in ["notes.md", "week1.ipynb"] {
        std::os::unix::fs::chown(dir.join(f), Some(1000), Some(1000)).unwrap();
    }
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

    // A notebook runs a cell on its kernel, whose WebSocket goes through the proxy under the prefix.
    b.client.goto(&app.url("/w/juno/lab/tree/week1.ipynb")).await.unwrap();
    b.wait_for(".jp-Notebook .jp-Cell .cm-content", Duration::from_secs(60)).await;
    // The kernel's state comes over that WebSocket; a cell run before it is connected is not queued.
    b.wait_for_text("| Idle", Duration::from_secs(90)).await;
    b.click(".jp-Notebook .jp-Cell .cm-content").await;
    b.type_keys("\u{E008}\u{E007}\u{E008}").await; // Shift+Enter: run the cell
    b.wait_js(
        "the cell's output",
        "const o = document.querySelector('.jp-Notebook .jp-OutputArea-output'); \
         return !!o && o.textContent.includes(arguments[0]);",
        vec!["answer 42".into()],
        Duration::from_secs(90),
    )
    .await;
    b.screenshot("jupyterlab-notebook").await;
    b.close().await;
    app.stop("juno").await;
}
