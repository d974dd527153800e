//! How the proxy hands a request's path to a student's IDE, and the per-student values a command may name.

use std::fmt;
use std::str::FromStr;

use super::StudentId;

/// What the IDE sees of `/w/<id>/...` (setting `proxy_path`; fixed for a workspace at its start).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ProxyPath {
    /// `/w/<id>` is taken off: the IDE is served at its own `/` (code-server, which uses relative URLs).
    #[default]
    Strip,
    /// The whole path is forwarded, as JupyterHub's proxy does: for an IDE told its base URL
    /// (`--ServerApp.base_url={base_url}`) that writes absolute URLs (`/w/<id>/static/...`).
    Full,
}

impl ProxyPath {
    pub fn is_full(self) -> bool {
        self == Self::Full
    }
}

impl FromStr for ProxyPath {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "strip" => Ok(Self::Strip),
            "full" => Ok(Self::Full),
            other => Err(format!("not a proxy path mode: {other:?}; use strip or full")),
        }
    }
}

impl fmt::Display for ProxyPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Strip => "strip",
            Self::Full => "full",
        })
    }
}

/// The path a student's IDE is served under, both slashes included: `/w/<id>/`.
pub fn base_url(student: &StudentId) -> String {
    format!("/w/{student}/")
}

/// One element of a configured command (or environment), with `{student_id}` and `{base_url}` replaced. Built from
/// the [`StudentId`] alone, whose characters (`a-z 0-9 - _`) need no quoting anywhere; other braces stay as written.
pub fn substitute(template: &str, student: &StudentId) -> String {
    template.replace("{student_id}", student.as_str()).replace("{base_url}", &base_url(student))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_mode_reads_strip_or_full_and_nothing_else() {
        assert_eq!("strip".parse::<ProxyPath>(), Ok(ProxyPath::Strip));
        assert_eq!(" FULL ".parse::<ProxyPath>(), Ok(ProxyPath::Full));
        assert!("prefix".parse::<ProxyPath>().is_err());
        assert!("".parse::<ProxyPath>().is_err());
        assert_eq!(ProxyPath::default(), ProxyPath::Strip);
        assert_eq!(ProxyPath::Full.to_string(), "full");
    }

    #[test]
    fn a_command_names_the_student_and_its_base_url() {
        let s = StudentId::parse("cs101-alice").unwrap();
        assert_eq!(substitute("--ServerApp.base_url={base_url}", &s), "--ServerApp.base_url=/w/cs101-alice/");
        assert_eq!(substitute("{student_id}:{student_id}", &s), "cs101-alice:cs101-alice");
        assert_eq!(substitute("{other} {{student_id}}", &s), "{other} {cs101-alice}");
        assert_eq!(substitute("plain", &s), "plain");
    }
}
