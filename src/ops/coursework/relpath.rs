//! [`RelPath`]: the path of an assignment folder as it comes from outside, parsed at the edge.

use std::ffi::OsStr;
use std::path::Path;

/// Longest [`RelPath`], in bytes.
pub const MAX_REL_PATH_LEN: usize = 1024;

/// Most names in a [`RelPath`].
pub const MAX_REL_PATH_DEPTH: usize = 32;

/// Longest name in a [`RelPath`], in bytes (`NAME_MAX`).
const MAX_NAME_LEN: usize = 255;

/// A relative path from outside (an assignment folder to distribute or collect): names separated by `/`, no
/// absolute path, no `.`, `..` or empty name, no NUL or other control character, at most [`MAX_REL_PATH_LEN`] bytes
/// and [`MAX_REL_PATH_DEPTH`] names of at most 255 bytes. One trailing `/` is accepted (`assignment-2/`) and dropped.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RelPath(String);

/// Why a [`RelPath`] was refused. Every variant has the stable code `invalid_path`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum RelPathError {
    #[error("the path is empty")]
    Empty,
    #[error("the path must be relative (no leading /)")]
    Absolute,
    #[error("the path must not contain . or .. names")]
    DotName,
    #[error("the path must not contain an empty name (//)")]
    EmptyName,
    #[error("the path must not contain NUL or control characters")]
    ControlCharacter,
    #[error("the path is longer than {MAX_REL_PATH_LEN} bytes")]
    TooLong,
    #[error("the path has more than {MAX_REL_PATH_DEPTH} names")]
    TooDeep,
    #[error("a name in the path is longer than {MAX_NAME_LEN} bytes")]
    NameTooLong,
}

impl RelPathError {
    /// The machine-readable code for an API answer.
    pub fn code(&self) -> &'static str {
        "invalid_path"
    }
}

impl RelPath {
    pub fn parse(raw: &str) -> Result<RelPath, RelPathError> {
        if raw.len() > MAX_REL_PATH_LEN {
            return Err(RelPathError::TooLong);
        }
        if raw.chars().any(char::is_control) {
            return Err(RelPathError::ControlCharacter);
        }
        if raw.starts_with('/') {
            return Err(RelPathError::Absolute);
        }
        let trimmed = raw.strip_suffix('/').unwrap_or(raw);
        if trimmed.is_empty() {
            return Err(RelPathError::Empty);
        }
        let mut depth = 0;
        for name in trimmed.split('/') {
            depth += 1;
            match name {
                "" => return Err(RelPathError::EmptyName),
                "." | ".." => return Err(RelPathError::DotName),
                n if n.len() > MAX_NAME_LEN => return Err(RelPathError::NameTooLong),
                _ => {}
            }
        }
        if depth > MAX_REL_PATH_DEPTH {
            return Err(RelPathError::TooDeep);
        }
        Ok(RelPath(trimmed.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn as_path(&self) -> &Path {
        Path::new(&self.0)
    }

    /// The names, first to last.
    pub fn names(&self) -> impl Iterator<Item = &OsStr> {
        self.0.split('/').map(OsStr::new)
    }
}

impl TryFrom<&str> for RelPath {
    type Error = RelPathError;
    fn try_from(raw: &str) -> Result<Self, Self::Error> {
        RelPath::parse(raw)
    }
}

impl std::fmt::Display for RelPath {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relative_paths_of_assignment_folders_parse() {
        for ok in ["assignment-2", "assignment-2/", "a/b/c.txt", "week 3/ü.py", ".hidden", "a..b"] {
            let p = RelPath::parse(ok).unwrap_or_else(|e| panic!("{ok}: {e}"));
            assert!(!p.as_str().ends_with('/'), "{ok}");
        }
        assert_eq!(RelPath::parse("a/b/").unwrap().names().count(), 2);
    }

    #[test]
    fn bad_relative_paths_are_refused_by_name_with_one_stable_code() {
        let long_name = "x".repeat(256);
        let deep = vec!["d"; MAX_REL_PATH_DEPTH + 1].join("/");
        let long = vec!["abcdefgh"; 120].join("/");
        let cases: &[(&str, RelPathError)] = &[
            ("", RelPathError::Empty),
            ("/", RelPathError::Absolute),
            ("/etc/passwd", RelPathError::Absolute),
            ("..", RelPathError::DotName),
            ("a/../../b", RelPathError::DotName),
            ("./a", RelPathError::DotName),
            ("a/.", RelPathError::DotName),
            ("a//b", RelPathError::EmptyName),
            ("a//", RelPathError::EmptyName),
            ("a\0b", RelPathError::ControlCharacter),
            ("a\nb", RelPathError::ControlCharacter),
            ("a\u{7f}", RelPathError::ControlCharacter),
            (&long_name, RelPathError::NameTooLong),
            (&deep, RelPathError::TooDeep),
            (&long, RelPathError::TooLong),
        ];
        for (raw, want) in cases {
            let got = RelPath::parse(raw);
            assert_eq!(got.as_ref().err(), Some(want), "{raw:?}");
            assert_eq!(got.unwrap_err().code(), "invalid_path");
        }
    }
}
