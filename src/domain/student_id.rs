//! `StudentId` and `InstanceId`: the only way a raw string from outside becomes part of a container name, a label,
//! a host path or a URL. Their constructors validate, so path traversal and name injection are impossible by
//! construction.

use std::fmt;

/// Why a string is not a valid id. The message is safe to show to a client.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct InvalidId(pub &'static str);

/// Longest student id accepted. 63 keeps `ws-<id>` a valid DNS label and Docker name with room for a suffix.
pub const MAX_STUDENT_ID_LEN: usize = 63;

/// A validated student id: 1 to 63 characters from `a-z`, `0-9`, `-` and `_`, starting and ending with a letter or
/// digit. Lowercase only, so that two spellings never map to one folder on a case-insensitive file system.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
#[serde(transparent)]
pub struct StudentId(String);

impl StudentId {
    pub fn parse(raw: &str) -> Result<Self, InvalidId> {
        validate(raw, MAX_STUDENT_ID_LEN, "student id")?;
        Ok(Self(raw.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A validated instance id (the `workspaced.instance` label): same alphabet as a student id, at most 32 characters.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct InstanceId(String);

impl InstanceId {
    pub fn parse(raw: &str) -> Result<Self, InvalidId> {
        validate(raw, 32, "instance id")?;
        Ok(Self(raw.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

pub(super) fn validate(raw: &str, max: usize, _what: &'static str) -> Result<(), InvalidId> {
    if raw.is_empty() {
        return Err(InvalidId("must not be empty"));
    }
    if raw.len() > max {
        return Err(if max == MAX_STUDENT_ID_LEN {
            InvalidId("must be at most 63 characters")
        } else {
            InvalidId("must be at most 32 characters")
        });
    }
    let ok_char = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_';
    if !raw.chars().all(ok_char) {
        return Err(InvalidId("may contain only a-z, 0-9, '-' and '_'"));
    }
    let alnum = |c: Option<char>| c.is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit());
    if !alnum(raw.chars().next()) || !alnum(raw.chars().last()) {
        return Err(InvalidId("must start and end with a letter or a digit"));
    }
    Ok(())
}

impl fmt::Display for StudentId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Display for InstanceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl TryFrom<String> for StudentId {
    type Error = InvalidId;
    fn try_from(raw: String) -> Result<Self, Self::Error> {
        Self::parse(&raw)
    }
}

impl std::str::FromStr for StudentId {
    type Err = InvalidId;
    fn from_str(raw: &str) -> Result<Self, Self::Err> {
        Self::parse(raw)
    }
}

impl<'de> serde::Deserialize<'de> for StudentId {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let raw = String::deserialize(d)?;
        Self::parse(&raw).map_err(|e| serde::de::Error::custom(format!("invalid student id: {e}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ordinary_ids_are_accepted() {
        for ok in ["alice", "s1", "student-42", "a_b", "0", "x".repeat(63).as_str()] {
            assert_eq!(StudentId::parse(ok).unwrap().as_str(), ok);
        }
    }

    #[test]
    fn traversal_separators_and_lookalikes_are_rejected() {
        let long = "a".repeat(64);
        let bad = [
            "",
            "..",
            ".",
            "../etc",
            "a/b",
            "a\\b",
            "a\0b",
            "A",
            "Alice",
            "-a",
            "a-",
            "_a",
            "a.b",
            " a",
            "a b",
            "аlice", // Cyrillic a
            "ａ",    // fullwidth a
            "a\u{200b}",
            long.as_str(),
        ];
        for b in bad {
            assert!(StudentId::parse(b).is_err(), "{b:?} should be rejected");
        }
    }

    #[test]
    fn deserializing_validates() {
        assert!(serde_json::from_str::<StudentId>("\"../x\"").is_err());
        assert_eq!(serde_json::from_str::<StudentId>("\"bob\"").unwrap().as_str(), "bob");
    }
}
