//! `CourseId`: a course's id, with the rules of a student id, so it can name a row, a folder and a label alike.

use std::fmt;

use super::student_id::validate;
use super::{InvalidId, MAX_STUDENT_ID_LEN};

/// A validated course id: 1 to 63 characters from `a-z`, `0-9`, `-` and `_`, starting and ending with a letter or
/// digit (the student-id rules).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
#[serde(transparent)]
pub struct CourseId(String);

impl CourseId {
    pub fn parse(raw: &str) -> Result<Self, InvalidId> {
        validate(raw, MAX_STUDENT_ID_LEN, "course id")?;
        Ok(Self(raw.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for CourseId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::str::FromStr for CourseId {
    type Err = InvalidId;
    fn from_str(raw: &str) -> Result<Self, Self::Err> {
        Self::parse(raw)
    }
}

impl<'de> serde::Deserialize<'de> for CourseId {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let raw = String::deserialize(d)?;
        Self::parse(&raw).map_err(|e| serde::de::Error::custom(format!("invalid course id: {e}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn course_ids_follow_the_student_id_rules() {
        for ok in ["cs101", "math-2", "a_b", "0"] {
            assert_eq!(CourseId::parse(ok).unwrap().as_str(), ok);
        }
        for bad in ["", "CS101", "../x", "a/b", "-a", "a-", "é", &"x".repeat(64)] {
            assert!(CourseId::parse(bad).is_err(), "{bad:?} accepted");
        }
        assert!(serde_json::from_str::<CourseId>("\"a b\"").is_err());
    }
}
