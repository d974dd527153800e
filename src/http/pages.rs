//! Server-rendered pages, embedded in the binary: the launcher (also the stopped page) and plain messages.

use axum::http::StatusCode;

use crate::domain::StudentId;

const LAUNCHER: &str = include_str!("assets/launcher.html");
const MESSAGE: &str = include_str!("assets/message.html");
/// The script the proxy adds to the IDE's page: warning overlay, countdown, stopped page, input heartbeats.
pub const IDE_SCRIPT: &str = include_str!("assets/ide.js");
/// The admin dashboard: a static page; its data comes from the API with the admin key the operator pastes.
pub const ADMIN_PAGE: &str = include_str!("assets/admin.html");
/// The JS SDK for LMS pages.
pub const SDK_SCRIPT: &str = include_str!("assets/sdk.js");

/// Escapes text for HTML content and attribute values.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// The launcher: shows the workspace's state live (queued, starting, stopped and why), starts it, opens the IDE.
/// `base` is the workspace's URL path with its final slash (`/w/alice/`, or `/` in host mode).
pub fn launcher_page(student: &crate::domain::StudentId, base: &str) -> String {
    // A student id is [a-z0-9_-] only; escaping keeps that true even if the rules change.
    LAUNCHER.replace("{{STUDENT}}", &escape(student.as_str())).replace("{{BASE}}", &escape(base))
}

/// A launch link opened in a browser signed in to another student's workspace: switch, or keep the current one.
pub fn other_session_page(current: &StudentId, asked: &StudentId, confirm_url: &str, keep_url: &str) -> String {
    let (current, asked) = (escape(current.as_str()), escape(asked.as_str()));
    format!(
        r#"<!doctype html><html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width">
<title>Switch workspace?</title></head><body style="font-family:system-ui,sans-serif;max-width:36rem;margin:4rem auto;padding:0 1rem">
<h1>Switch workspace?</h1>
<p id="other-session">This browser is signed in to the workspace of <strong>{current}</strong>. The link you opened is for
<strong>{asked}</strong>. Switching signs this browser out of {current}'s workspace.</p>
<p><a id="switch" href="{confirm}">Open {asked}'s workspace</a> &nbsp; <a id="keep" href="{keep}">Stay in {current}'s</a></p>
</body></html>"#,
        confirm = escape(confirm_url),
        keep = escape(keep_url),
    )
}

/// A short page for an error a person sees (401, 403, 504...).
pub fn message_page(status: StatusCode, code: &str, message: &str) -> String {
    let title = match status {
        StatusCode::UNAUTHORIZED => "Sign in again",
        StatusCode::FORBIDDEN => "Not your workspace",
        StatusCode::GATEWAY_TIMEOUT | StatusCode::BAD_GATEWAY => "The workspace is not answering",
        _ => "Something went wrong",
    };
    MESSAGE
        .replace("{{TITLE}}", title)
        .replace("{{MESSAGE}}", &escape(message))
        .replace("{{CODE}}", &escape(code))
        .replace("{{STATUS}}", status.as_str())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pages_escape_what_they_show() {
        let p = message_page(StatusCode::FORBIDDEN, "forbidden", "<script>x</script>");
        assert!(p.contains("&lt;script&gt;") && !p.contains("<script>x"));
        assert!(p.contains("Not your workspace"));
        let l = launcher_page(&crate::domain::StudentId::parse("alice").unwrap(), "/w/alice/");
        assert!(l.contains("\"alice\"") && l.contains("\"/w/alice/\"") && !l.contains("{{"));
    }
}
