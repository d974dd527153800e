//! Starter files and assignments through the API, on real folders: the template at the first start in the course
//! (owned by the workspace user, never over the student's files, never back after the student deletes one), an
//! assignment distributed to every workspace of the course (running or never started), a second version that
//! leaves the file a student changed and reports it, a re-run that does nothing, and a collect whose archive holds
//! exactly each student's files and matches its manifest.

use std::collections::BTreeMap;
use std::io::Read;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use serde_json::Value;

use crate::helpers::*;

fn write(path: &Path, text: &str) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, text).unwrap();
}

/// The NDJSON lines of a distribute answer.
async fn distribute(app: &TestApp, body: &str) -> Vec<Value> {
    let r = app
        .client
        .post(app.url("/api/courses/cs/distribute"))
        .header("content-type", "application/json")
        .body(body.to_owned())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let text = r.text().await.unwrap();
    text.lines().map(|l| serde_json::from_str(l).unwrap()).collect()
}

fn student_line<'a>(lines: &'a [Value], id: &str) -> &'a Value {
    lines.iter().find(|l| l["event"] == "student" && l["student_id"] == id).unwrap_or_else(|| panic!("{id}: {lines:?}"))
}

#[tokio::test]
async fn starter_files_then_an_assignment_round_trip_through_distribute_and_collect() {
    let templates = tempfile::tempdir().unwrap();
    let t = templates.path();
    write(&t.join("starter/hello.py"), "print('hello')\n");
    write(&t.join("starter/src/main.py"), "def main(): pass\n");
    write(&t.join("a1/README.md"), "# Assignment 1\n");
    write(&t.join("a1/task.py"), "# TODO\n");
    let tpath = t.to_path_buf();
    let app = spawn_app_with(move |s| s.courses.templates_path = Some(tpath)).await;
    let (code, body) = app.put_json("/api/courses/cs", r#"{"template":"nope"}"#).await;
    assert_eq!((code, body["error"]["code"].as_str()), (400, Some("unknown_template")));
    assert_eq!(app.put_json("/api/courses/cs", r#"{"template":"starter"}"#).await.0, 201);

    // The first start in the course copies the template, owned by the workspace user.
    assert_eq!(app.post_json("/api/workspaces/ann/start", r#"{"course":"cs"}"#).await.0, 200);
    let ann = app.base.join("ann");
    let hello = ann.join("hello.py");
    assert_eq!(std::fs::read_to_string(&hello).unwrap(), "print('hello')\n");
    assert_eq!((hello.metadata().unwrap().uid(), hello.metadata().unwrap().gid()), (1000, 1000));
    assert_eq!(ann.join("src").metadata().unwrap().uid(), 1000);
    // The student edits one starter file and deletes another: neither comes back at the next start.
    std::fs::write(&hello, "print('mine')\n").unwrap();
    std::fs::remove_file(ann.join("src/main.py")).unwrap();
    app.stop("ann").await;
    app.start("ann").await;
    assert_eq!(std::fs::read_to_string(&hello).unwrap(), "print('mine')\n");
    assert!(!ann.join("src/main.py").exists(), "a deleted starter file came back");
    // A student with files of their own before joining keeps them.
    write(&app.base.join("bob/hello.py"), "print('bob')\n");
    assert_eq!(app.post_json("/api/workspaces/bob/launch", r#"{"course":"cs"}"#).await.0, 200);

    // First distribution: to the running ann and to bob, who never started.
    let lines = distribute(&app, r#"{"source":"a1"}"#).await;
    assert_eq!(lines[0]["event"], "plan");
    assert_eq!((lines[0]["target"].as_str(), lines[0]["students"].as_u64()), (Some("a1"), Some(2)));
    for id in ["ann", "bob"] {
        let r = &student_line(&lines, id)["report"];
        let written: Vec<&str> = r["written"].as_array().unwrap().iter().map(|v| v.as_str().unwrap()).collect();
        assert!(written.contains(&"a1/README.md") && written.contains(&"a1/task.py"), "{id}: {r}");
    }
    assert_eq!(lines.last().unwrap()["event"], "done");
    assert_eq!(std::fs::read_to_string(app.base.join("bob/hello.py")).unwrap(), "print('bob')\n");
    assert_eq!(app.base.join("bob/a1/task.py").metadata().unwrap().uid(), 1000);

    // Ann changes the README; the course team ships a second version of both files.
    std::fs::write(ann.join("a1/README.md"), "# Assignment 1\nmy notes\n").unwrap();
    write(&t.join("a1/README.md"), "# Assignment 1 (fixed)\n");
    write(&t.join("a1/task.py"), "# TODO: fizzbuzz\n");
    let lines = distribute(&app, r#"{"source":"a1","target":"a1"}"#).await;
    let r = &student_line(&lines, "ann")["report"];
    assert_eq!(r["kept"], serde_json::json!(["a1/README.md"]), "{r}");
    assert_eq!(r["updated"], serde_json::json!(["a1/task.py"]), "{r}");
    assert_eq!(std::fs::read_to_string(ann.join("a1/README.md")).unwrap(), "# Assignment 1\nmy notes\n");
    let r = &student_line(&lines, "bob")["report"];
    assert_eq!(r["updated"].as_array().unwrap().len(), 2, "{r}");
    assert_eq!(lines.last().unwrap()["with_kept_files"], 1);
    // Run again: nobody is done twice.
    let lines = distribute(&app, r#"{"source":"a1"}"#).await;
    assert_eq!(lines.last().unwrap()["already_done"], 2, "{lines:?}");

    // Collect: one folder per student, exactly their files, and a manifest that matches.
    let r = app.client.get(app.url("/api/courses/cs/collect?path=a1")).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let bytes = r.bytes().await.unwrap();
    let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(&bytes[..]));
    let mut files = BTreeMap::new();
    let mut manifest = Value::Null;
    for entry in archive.entries().unwrap() {
        let mut entry = entry.unwrap();
        let name = entry.path().unwrap().display().to_string();
        let mut content = Vec::new();
        entry.read_to_end(&mut content).unwrap();
        if name == "MANIFEST.json" {
            manifest = serde_json::from_slice(&content).unwrap();
        } else if entry.header().entry_type().is_file() {
            files.insert(name, content);
        }
    }
    let names: Vec<&str> = files.keys().map(String::as_str).collect();
    assert_eq!(names, ["ann/a1/README.md", "ann/a1/task.py", "bob/a1/README.md", "bob/a1/task.py"]);
    assert_eq!(files["ann/a1/README.md"], b"# Assignment 1\nmy notes\n");
    let rows: Vec<&Value> = manifest["entries"].as_array().unwrap().iter().filter(|e| e["kind"] == "file").collect();
    assert_eq!(rows.len(), 4, "{manifest}");
    for row in rows {
        let key = format!("{}/{}", row["student"].as_str().unwrap(), row["path"].as_str().unwrap());
        let content = &files[&key];
        assert_eq!(row["size"].as_u64(), Some(content.len() as u64), "{key}");
        assert_eq!(row["blake3"].as_str(), Some(blake3::hash(content).to_hex().as_str()), "{key}");
    }

    // Bad requests change nothing.
    let bad = app.client.get(app.url("/api/courses/cs/collect?path=../etc")).send().await.unwrap();
    assert_eq!(bad.status().as_u16(), 400);
    for (body, status_code, code) in [
        (r#"{"source":"../a1"}"#, 400, "invalid_path"),
        (r#"{"source":"missing"}"#, 404, "unknown_source"),
        (r#"{"source":"a1","target":"/abs"}"#, 400, "invalid_path"),
    ] {
        let (status, answer) = app.post_json("/api/courses/cs/distribute", body).await;
        assert_eq!((status, answer["error"]["code"].as_str()), (status_code, Some(code)), "{body}: {answer}");
    }
}
