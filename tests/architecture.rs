//! Architecture rules, checked on the source like rust-analyzer's `tidy` tests: each fails when a rule written in
//! ARCHITECTURE.md stops being true, and says where.

use std::path::{Path, PathBuf};

fn src() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

/// Every `.rs` file under `dir`, with its text, `#[cfg(test)]` modules left out (tests may do what code may not).
fn sources(dir: &Path) -> Vec<(PathBuf, String)> {
    let mut out = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(d) = pending.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                pending.push(p);
            } else if p.extension().is_some_and(|x| x == "rs") {
                let text = std::fs::read_to_string(&p).unwrap();
                let code = match text.find("#[cfg(test)]") {
                    Some(i) => text[..i].to_owned(),
                    None => text,
                };
                out.push((p, code));
            }
        }
    }
    out.sort();
    out
}

fn rel(p: &Path) -> String {
    p.strip_prefix(src()).unwrap().display().to_string()
}

/// Lines of `code` that mention `needle` outside comments.
fn mentions(code: &str, needle: &str) -> Vec<String> {
    code.lines().filter(|l| !l.trim_start().starts_with("//") && l.contains(needle)).map(str::to_owned).collect()
}

fn violations(files: &[(PathBuf, String)], allowed: impl Fn(&str) -> bool, needle: &str) -> Vec<String> {
    let mut bad = Vec::new();
    for (p, code) in files {
        let r = rel(p);
        if allowed(&r) {
            continue;
        }
        for l in mentions(code, needle) {
            bad.push(format!("{r}: {}", l.trim()));
        }
    }
    bad
}

#[test]
fn only_the_runtime_talks_to_docker() {
    let bad = violations(&sources(&src()), |r| r.starts_with("runtime/"), "bollard");
    assert!(bad.is_empty(), "bollard outside runtime/:\n{}", bad.join("\n"));
}

#[test]
fn ops_knows_nothing_of_http_or_the_lifecycle() {
    let files = sources(&src().join("ops"));
    for needle in ["axum", "crate::http", "crate::lifecycle", "crate::workspaces"] {
        let bad = violations(&files, |_| false, needle);
        assert!(bad.is_empty(), "{needle} in ops/:\n{}", bad.join("\n"));
    }
}

#[test]
fn the_domain_does_no_io() {
    let files = sources(&src().join("domain"));
    for needle in ["std::fs", "std::net", "tokio", "reqwest", "sqlx", "async fn", "Utc::now", "SystemTime", "std::env"]
    {
        let bad = violations(&files, |_| false, needle);
        assert!(bad.is_empty(), "{needle} in domain/:\n{}", bad.join("\n"));
    }
}

/// The store's public methods whose SQL changes something, and those that change the `workspaces` table.
fn store_writers() -> (Vec<String>, Vec<String>) {
    let (mut any, mut rows) = (Vec::new(), Vec::new());
    for (_, code) in sources(&src().join("store")) {
        // Each function's text runs from its `fn` to the next one.
        for part in code.split("fn ").skip(1) {
            let name: String = part.chars().take_while(|c| c.is_alphanumeric() || *c == '_').collect();
            let upper = part.to_uppercase();
            if ["INSERT ", "UPDATE ", "DELETE "].iter().any(|w| upper.contains(w)) {
                any.push(name.clone());
            }
            if ["UPDATE WORKSPACES", "INSERT INTO WORKSPACES", "DELETE FROM WORKSPACES"]
                .iter()
                .any(|w| upper.contains(w))
            {
                rows.push(name);
            }
        }
    }
    (any, rows)
}

#[test]
fn http_never_writes_through_the_store() {
    let (writers, _) = store_writers();
    assert!(writers.iter().any(|w| w == "mark_running"), "the writer list is read from the store: {writers:?}");
    let files = sources(&src().join("http"));
    let mut bad = violations(&files, |_| false, ".store()");
    for w in &writers {
        bad.extend(violations(&files, |_| false, &format!(".{w}(")));
    }
    assert!(bad.is_empty(), "http/ writes through the store (go through the lifecycle):\n{}", bad.join("\n"));
}

#[test]
fn only_the_lifecycle_writes_workspace_rows() {
    let (_, rows) = store_writers();
    assert!(rows.iter().any(|w| w == "mark_stopped"), "the row writers are read from the store: {rows:?}");
    // `activity.rs` is the lifecycle's in-memory activity (a private field of `Lifecycle`), written in batches.
    let allowed = |r: &str| r.starts_with("lifecycle/") || r.starts_with("store/") || r == "activity.rs";
    let files = sources(&src());
    let mut bad = Vec::new();
    for w in &rows {
        bad.extend(violations(&files, allowed, &format!(".{w}(")));
    }
    assert!(bad.is_empty(), "workspace rows written outside lifecycle/:\n{}", bad.join("\n"));
}

#[test]
fn every_place_architecture_md_names_exists() {
    let doc = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("ARCHITECTURE.md")).unwrap();
    let section =
        doc.split("## Where things happen").nth(1).expect("ARCHITECTURE.md has a 'Where things happen' section");
    let section = section.split("\n## ").next().unwrap();
    let mut checked = 0;
    for line in section.lines().filter(|l| l.starts_with("| ") && l.contains("`src/")) {
        let cells: Vec<&str> = line.split('|').map(str::trim).collect();
        let file = cells[2].trim_matches('`');
        let func = cells[3].trim_matches('`');
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(file);
        let text = std::fs::read_to_string(&path)
            .unwrap_or_else(|_| panic!("{file} (named for {:?}) does not exist", cells[1]));
        let name = func.rsplit("::").next().unwrap();
        assert!(text.contains(&format!("fn {name}")), "{file} has no fn {name} (named for {:?})", cells[1]);
        checked += 1;
    }
    assert!(checked >= 8, "the section names at least the eight places the architecture issue lists; found {checked}");
}

#[test]
fn the_big_modules_stay_small() {
    for file in ["cli/mod.rs", "config/mod.rs", "store/mod.rs", "lifecycle/mod.rs"] {
        let text = std::fs::read_to_string(src().join(file)).unwrap_or_else(|e| panic!("{file}: {e}"));
        let n = text.lines().count();
        assert!(n <= 350, "{file} has {n} lines; split it by what it holds");
    }
}

/// Functions longer than this need a reason in their doc comment (a line with "Long because").
const LONG_FUNCTION: usize = 80;

#[test]
fn long_functions_say_why() {
    let mut bad = Vec::new();
    for (path, code) in sources(&src()) {
        let lines: Vec<&str> = code.lines().collect();
        let mut i = 0;
        while i < lines.len() {
            let l = lines[i].trim_start();
            let is_fn = (l.starts_with("fn ") || l.starts_with("pub ") || l.starts_with("async fn "))
                && l.contains("fn ")
                && !l.trim_end().ends_with(';');
            if !is_fn {
                i += 1;
                continue;
            }
            let (mut depth, mut opened, mut j) = (0i64, false, i);
            while j < lines.len() {
                depth += lines[j].matches('{').count() as i64 - lines[j].matches('}').count() as i64;
                opened |= lines[j].contains('{');
                if opened && depth <= 0 {
                    break;
                }
                j += 1;
            }
            let len = j + 1 - i;
            let doc: String =
                lines[..i].iter().rev().take_while(|l| l.trim_start().starts_with("///")).copied().collect();
            if len > LONG_FUNCTION && !doc.contains("Long because") {
                bad.push(format!("{}:{} ({len} lines): {}", rel(&path), i + 1, l.trim()));
            }
            i = if opened { j + 1 } else { i + 1 };
        }
    }
    assert!(bad.is_empty(), "functions over {LONG_FUNCTION} lines without a reason:\n{}", bad.join("\n"));
}
