//! The CLI against a real server: it reads the server's answers into the shared `workspaced::api` types, prints
//! them, and shows an error answer as `error: <message> (<code>)` with a non-zero exit.

use std::process::Output;

use workspaced::api::{ListView, WorkspaceView};
use workspaced::domain::Status;

use crate::helpers::{cli, spawn_app, TestApp};

/// Runs `workspaced <args> --server <server>` with the app's lms key.
async fn cli_on(app: &TestApp, args: &[&str]) -> Output {
    cli(&format!("http://{}", app.addr), &app.lms_key, args).await
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[tokio::test]
async fn status_json_and_list_show_the_servers_typed_answers() {
    let app = spawn_app().await;
    app.start("cli-typed").await;

    let out = cli_on(&app, &["status", "cli-typed", "--json"]).await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    let view: WorkspaceView = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!((view.student_id.as_str(), view.status), ("cli-typed", Status::Running));
    assert!(view.url.as_deref().is_some_and(|u| u.ends_with("/w/cli-typed/")), "{view:?}");
    // The fields come in the documented order (the server's), not sorted by name.
    assert!(text(&out.stdout).starts_with("{\n  \"student_id\": \"cli-typed\",\n  \"status\": \"running\","));

    let out = cli_on(&app, &["list"]).await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    let mut lines = stdout.lines();
    assert!(lines.next().is_some_and(|h| h.starts_with("STUDENT") && h.ends_with("URL")), "{stdout}");
    let row: Vec<&str> = lines.next().unwrap_or_default().split_whitespace().collect();
    assert_eq!(row.len(), 4, "{stdout}");
    assert_eq!((row[0], row[1]), ("cli-typed", "running"));
    // The time as the server writes it in JSON.
    assert_eq!(serde_json::Value::from(row[2]), serde_json::to_value(view.last_activity).unwrap());
    assert_eq!(Some(row[3]), view.url.as_deref());

    let out = cli_on(&app, &["list", "--json", "--status", "stopped"]).await;
    let list: ListView = serde_json::from_slice(&out.stdout).unwrap();
    assert!(list.workspaces.is_empty(), "{list:?}");
}

#[tokio::test]
async fn an_error_answer_is_shown_with_its_code_and_a_non_zero_exit() {
    let app = spawn_app().await;
    let out = cli_on(&app, &["status", "nobody"]).await;
    assert!(!out.status.success());
    let stderr = text(&out.stderr);
    assert!(stderr.starts_with("error: ") && stderr.trim_end().ends_with("(workspace_not_found)"), "{stderr}");
    assert!(out.stdout.is_empty());

    let out = cli_on(&app, &["list", "--status", "sleeping"]).await;
    assert!(!out.status.success());
    let stderr = text(&out.stderr);
    assert!(stderr.contains("unknown status \"sleeping\"") && stderr.contains("(invalid_status)"), "{stderr}");
}

#[tokio::test]
async fn a_stopped_server_is_an_error_with_a_non_zero_exit() {
    // A port that was just free: nothing listens there.
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let out = cli(&format!("http://127.0.0.1:{port}"), "wsd_none", &["list"]).await;
    assert!(!out.status.success());
    assert!(text(&out.stderr).starts_with("error: cannot reach workspaced"), "{}", text(&out.stderr));
}
