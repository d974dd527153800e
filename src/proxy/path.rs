//! Which workspace a request is for, decided once on a normalized path so that no spelling (`%2F`, `..`, `//`,
//! `%2e%2e`) can name one student and reach another.

/// The workspace a request names and what to forward.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// The id segment, percent-decoded, not yet validated (a session check compares it as is).
    pub student: String,
    /// The prefix the IDE is served under (`/w/alice`, or empty in host mode).
    pub prefix: String,
    /// The path to forward (always starts with `/`), still percent-encoded; `None` for `/w/alice` without the slash.
    pub rest: Option<String>,
}

/// Path mode: `/w/{id}/{rest}` after normalization.
pub fn path_target(raw_path: &str) -> Option<Target> {
    let path = normalize(raw_path);
    let after = path.strip_prefix("/w/")?;
    let (seg, rest) = match after.find('/') {
        Some(i) => (&after[..i], Some(after[i..].to_owned())),
        None => (after, None),
    };
    if seg.is_empty() {
        return None;
    }
    let student = percent_decode(seg);
    Some(Target { prefix: format!("/w/{seg}"), student, rest })
}

/// Host mode: `{id}.{suffix}` names the workspace and the whole path is forwarded.
pub fn host_target(host: &str, suffix: &str, raw_path: &str) -> Option<Target> {
    let host = host.rsplit_once(':').filter(|(_, p)| p.chars().all(|c| c.is_ascii_digit())).map_or(host, |(h, _)| h);
    let host = host.to_ascii_lowercase();
    let id = host.strip_suffix(suffix)?.strip_suffix('.')?;
    if id.is_empty() || id.contains('.') {
        return None;
    }
    Some(Target { student: id.to_owned(), prefix: String::new(), rest: Some(normalize(raw_path)) })
}

/// Collapses repeated slashes and resolves `.` and `..` segments (also when written `%2e`), the way a browser
/// would before sending; a `..` never climbs above the root.
pub fn normalize(path: &str) -> String {
    let mut out: Vec<&str> = Vec::new();
    let segments: Vec<&str> = path.split('/').collect();
    let last = segments.len().saturating_sub(1);
    let mut trailing = false;
    for (i, seg) in segments.iter().enumerate() {
        let dots = percent_decode(seg);
        match dots.as_str() {
            "" => trailing = i == last && i > 0,
            "." => trailing = i == last,
            ".." => {
                out.pop();
                trailing = i == last;
            }
            _ => {
                out.push(seg);
                trailing = false;
            }
        }
    }
    let mut s = String::with_capacity(path.len());
    for seg in &out {
        s.push('/');
        s.push_str(seg);
    }
    if trailing || s.is_empty() {
        s.push('/');
    }
    s
}

/// Decodes `%XX` escapes (invalid escapes stay as they are; the result is lossy UTF-8).
pub fn percent_decode(s: &str) -> String {
    if !s.contains('%') {
        return s.to_owned();
    }
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() {
            if let (Some(h), Some(l)) = (hex(b[i + 1]), hex(b[i + 2])) {
                out.push(h * 16 + l);
                i += 3;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn hex(c: u8) -> Option<u8> {
    (c as char).to_digit(16).map(|d| d as u8)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalizes_like_a_browser() {
        assert_eq!(normalize("/w/a/"), "/w/a/");
        assert_eq!(normalize("/w/a"), "/w/a");
        assert_eq!(normalize("//w//b/"), "/w/b/");
        assert_eq!(normalize("/w/a/../b/"), "/w/b/");
        assert_eq!(normalize("/w/a/%2e%2e/b/x"), "/w/b/x");
        assert_eq!(normalize("/w/a/%2E%2E/b"), "/w/b");
        assert_eq!(normalize("/../../w/b/./"), "/w/b/");
        assert_eq!(normalize("/"), "/");
        assert_eq!(normalize(""), "/");
        assert_eq!(normalize("/w/a/static/x.js"), "/w/a/static/x.js");
    }

    #[test]
    fn the_id_segment_is_decoded_and_kept_apart_from_the_rest() {
        let t = path_target("/w/alice/stable-1/static/out.js").unwrap();
        assert_eq!(
            (t.student.as_str(), t.prefix.as_str(), t.rest.as_deref()),
            ("alice", "/w/alice", Some("/stable-1/static/out.js"))
        );
        assert_eq!(path_target("/w/alice").unwrap().rest, None);
        assert_eq!(path_target("/w/a%2Fb/").unwrap().student, "a/b");
        assert_eq!(path_target("/w/%61lice/").unwrap().student, "alice");
        assert_eq!(path_target("/w/B/").unwrap().student, "B");
        assert_eq!(path_target("/w/alice/../bob/").unwrap().student, "bob");
        assert_eq!(path_target("//w//bob/").unwrap().student, "bob");
        assert_eq!(path_target("/api/workspaces"), None);
        assert_eq!(path_target("/wx/alice/"), None);
        assert_eq!(path_target("/w/"), None, "no id: not a workspace (and no redirect loop)");
        assert_eq!(path_target("/w//"), None);
    }

    #[test]
    fn host_mode_takes_the_first_label() {
        let t = host_target("Alice.ws.example.org:443", "ws.example.org", "/a//b").unwrap();
        assert_eq!((t.student.as_str(), t.rest.as_deref()), ("alice", Some("/a/b")));
        assert_eq!(host_target("ws.example.org", "ws.example.org", "/"), None);
        assert_eq!(host_target("a.b.ws.example.org", "ws.example.org", "/"), None);
        assert_eq!(host_target("evilws.example.org", "ws.example.org", "/"), None);
        assert_eq!(percent_decode("%zz%4"), "%zz%4");
    }
}
