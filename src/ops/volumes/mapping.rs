//! Which volume belongs to which student: a name pattern (`ws-{student}-data`, with `*` for any run of
//! characters) or a CSV map (`volume,student_id`). Pure: no IO.
//!
//! A volume is mapped only when exactly one reading names a valid student and no other volume names the same
//! student; everything else is reported (ambiguous, invalid id, two volumes for one student) and never copied.

use std::collections::{BTreeMap, BTreeSet};

use crate::domain::StudentId;

/// The default pattern: the seeds' system names each volume `${containerName}-data` with `ws-<student>` containers.
pub const DEFAULT_PATTERN: &str = "ws-{student}-data";

const PLACEHOLDER: &str = "{student}";

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum MappingError {
    #[error("the pattern {0:?} must contain {{student}} exactly once")]
    Placeholder(String),
    #[error(
        "the pattern {0:?} has two wildcards or a wildcard next to {{student}}: its readings cannot be told apart"
    )]
    Wildcards(String),
    #[error("map line {line}: {why}")]
    MapLine { line: usize, why: String },
}

impl MappingError {
    /// A stable machine-readable code.
    pub fn code(&self) -> &'static str {
        match self {
            MappingError::Placeholder(_) | MappingError::Wildcards(_) => "invalid_pattern",
            MappingError::MapLine { .. } => "invalid_map",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    Literal(String),
    /// `*`: one or more characters.
    Any,
    Student,
}

/// A parsed volume name pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VolumePattern {
    parts: Vec<Part>,
}

impl VolumePattern {
    pub fn parse(raw: &str) -> Result<Self, MappingError> {
        if raw.matches(PLACEHOLDER).count() != 1 {
            return Err(MappingError::Placeholder(raw.to_owned()));
        }
        let mut parts = Vec::new();
        let (before, after) = raw.split_once(PLACEHOLDER).ok_or_else(|| MappingError::Placeholder(raw.to_owned()))?;
        push_literal_and_stars(&mut parts, before);
        parts.push(Part::Student);
        push_literal_and_stars(&mut parts, after);
        // `**` or `*{student}`: every split is a reading, so the pattern would call every volume ambiguous.
        if parts
            .windows(2)
            .any(|w| matches!((&w[0], &w[1]), (Part::Any, Part::Any | Part::Student) | (Part::Student, Part::Any)))
        {
            return Err(MappingError::Wildcards(raw.to_owned()));
        }
        Ok(Self { parts })
    }

    /// Every distinct text `{student}` can stand for in `volume` (empty: the volume does not match).
    pub fn readings(&self, volume: &str) -> BTreeSet<String> {
        let mut out = BTreeSet::new();
        matches(&self.parts, volume, None, &mut out);
        out
    }
}

fn push_literal_and_stars(parts: &mut Vec<Part>, text: &str) {
    for (i, piece) in text.split('*').enumerate() {
        if i > 0 {
            parts.push(Part::Any);
        }
        if !piece.is_empty() {
            parts.push(Part::Literal(piece.to_owned()));
        }
    }
}

/// Backtracking over the parts; volume names are short (the engine allows 255 characters at most in practice).
fn matches(parts: &[Part], rest: &str, student: Option<&str>, out: &mut BTreeSet<String>) {
    let Some((first, tail)) = parts.split_first() else {
        if rest.is_empty() {
            if let Some(s) = student {
                out.insert(s.to_owned());
            }
        }
        return;
    };
    match first {
        Part::Literal(l) => {
            if let Some(r) = rest.strip_prefix(l.as_str()) {
                matches(tail, r, student, out);
            }
        }
        Part::Any | Part::Student => {
            for (i, _) in rest.char_indices().skip(1).chain(std::iter::once((rest.len(), ' '))) {
                let (taken, r) = rest.split_at(i);
                if taken.is_empty() {
                    continue;
                }
                let s = if *first == Part::Student { Some(taken) } else { student };
                matches(tail, r, s, out);
            }
        }
    }
}

/// Parses a CSV map: one `volume,student_id` per line; blank lines, `#` comments and a `volume,student_id`
/// header are skipped. Any other malformed line refuses the whole map (nothing is copied).
pub fn parse_map(text: &str) -> Result<Vec<(String, String)>, MappingError> {
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let fields: Vec<&str> = line.split(',').map(str::trim).collect();
        if i == 0 && fields == ["volume", "student_id"] {
            continue;
        }
        match fields.as_slice() {
            [volume, student] if !volume.is_empty() && !student.is_empty() => {
                out.push(((*volume).to_owned(), (*student).to_owned()))
            }
            _ => {
                return Err(MappingError::MapLine {
                    line: i + 1,
                    why: "expected two non-empty fields `volume,student_id`".to_owned(),
                })
            }
        }
    }
    Ok(out)
}

/// Where the mapping comes from.
#[derive(Debug, Clone)]
pub enum Source {
    Pattern(VolumePattern),
    /// `(volume, raw student id)` pairs from a map file.
    Map(Vec<(String, String)>),
}

/// One volume's mapping.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Mapped {
    Student(StudentId),
    /// More than one reading of the pattern is a valid id (the readings are listed), or the map names the volume
    /// on two lines with different students.
    Ambiguous(Vec<String>),
    /// The only reading is not a valid student id (the raw text and why).
    InvalidId {
        raw: String,
        why: String,
    },
    /// Another volume maps to the same student (the other volumes are listed).
    SameStudent {
        student: StudentId,
        others: Vec<String>,
    },
    /// The map names a volume the engine does not have.
    Missing,
}

/// Maps the engine's volumes; volumes the pattern does not match are left out. Sorted by volume name.
pub fn plan(volumes: &[String], source: &Source) -> Vec<(String, Mapped)> {
    let mut rows: BTreeMap<String, Mapped> = BTreeMap::new();
    match source {
        Source::Pattern(p) => {
            for v in volumes {
                let readings = p.readings(v);
                if readings.is_empty() {
                    continue;
                }
                let valid: Vec<StudentId> = readings.iter().filter_map(|r| StudentId::parse(r).ok()).collect();
                let mapped = match (valid.as_slice(), readings.len()) {
                    ([one], 1) => Mapped::Student(one.clone()),
                    ([], 1) => {
                        let raw = readings.into_iter().next().unwrap_or_default();
                        let why = StudentId::parse(&raw).err().map(|e| e.to_string()).unwrap_or_default();
                        Mapped::InvalidId { raw, why }
                    }
                    ([one], _) => Mapped::Student(one.clone()),
                    ([], _) => Mapped::InvalidId {
                        raw: readings.into_iter().collect::<Vec<_>>().join(" | "),
                        why: "no reading is a valid student id".to_owned(),
                    },
                    (many, _) => Mapped::Ambiguous(many.iter().map(ToString::to_string).collect()),
                };
                rows.insert(v.clone(), mapped);
            }
        }
        Source::Map(pairs) => {
            let present: BTreeSet<&str> = volumes.iter().map(String::as_str).collect();
            let mut by_volume: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
            for (v, s) in pairs {
                by_volume.entry(v.as_str()).or_default().insert(s.as_str());
            }
            for (v, students) in by_volume {
                let mapped = if students.len() > 1 {
                    Mapped::Ambiguous(students.iter().map(|s| (*s).to_owned()).collect())
                } else if !present.contains(v) {
                    Mapped::Missing
                } else {
                    let raw = students.into_iter().next().unwrap_or_default();
                    match StudentId::parse(raw) {
                        Ok(id) => Mapped::Student(id),
                        Err(e) => Mapped::InvalidId { raw: raw.to_owned(), why: e.to_string() },
                    }
                };
                rows.insert(v.to_owned(), mapped);
            }
        }
    }
    // Two volumes for one student: neither is copied (which one holds the real work is the operator's call).
    let mut by_student: BTreeMap<StudentId, Vec<String>> = BTreeMap::new();
    for (v, m) in &rows {
        if let Mapped::Student(s) = m {
            by_student.entry(s.clone()).or_default().push(v.clone());
        }
    }
    for (student, vols) in by_student.into_iter().filter(|(_, v)| v.len() > 1) {
        for v in &vols {
            let others = vols.iter().filter(|o| *o != v).cloned().collect();
            rows.insert(v.clone(), Mapped::SameStudent { student: student.clone(), others });
        }
    }
    rows.into_iter().collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(s: &str) -> Mapped {
        Mapped::Student(StudentId::parse(s).unwrap())
    }

    #[test]
    fn the_default_pattern_reads_one_student_per_volume() {
        let p = VolumePattern::parse(DEFAULT_PATTERN).unwrap();
        let vols: Vec<String> = ["ws-alice-data", "ws-bob-smith-data", "other", "ws-Bad-data", "ws--data"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let rows = plan(&vols, &Source::Pattern(p));
        assert_eq!(rows.len(), 3, "{rows:?}");
        assert_eq!(rows[0].0, "ws-Bad-data");
        assert!(matches!(rows[0].1, Mapped::InvalidId { .. }));
        assert_eq!(rows[1], ("ws-alice-data".to_owned(), id("alice")));
        assert_eq!(rows[2], ("ws-bob-smith-data".to_owned(), id("bob-smith")));
    }

    #[test]
    fn a_volume_a_wildcard_can_split_two_ways_is_ambiguous() {
        let p = VolumePattern::parse("ws-*-{student}-data").unwrap();
        assert_eq!(p.readings("ws-c1-alice-data"), BTreeSet::from(["alice".to_owned()]));
        let rows = plan(&["ws-c1-a-b-data".to_owned()], &Source::Pattern(p));
        assert_eq!(rows[0].1, Mapped::Ambiguous(vec!["a-b".to_owned(), "b".to_owned()]));
    }

    #[test]
    fn bad_patterns_and_map_lines_are_refused() {
        assert_eq!(VolumePattern::parse("ws-data").unwrap_err().code(), "invalid_pattern");
        assert!(VolumePattern::parse("{student}-{student}").is_err());
        assert!(VolumePattern::parse("ws-*{student}").is_err());
        assert_eq!(parse_map("volume,student_id\nv1,alice\n\n# c\nv2 , bob\n").unwrap().len(), 2);
        assert_eq!(
            parse_map("v1,alice\nv2\n").unwrap_err(),
            MappingError::MapLine { line: 2, why: "expected two non-empty fields `volume,student_id`".to_owned() }
        );
    }

    #[test]
    fn two_volumes_for_one_student_are_both_held_back() {
        let map = parse_map("v1,alice\nv2,alice\nv3,bob\nv3,carol\nv4,dave\n").unwrap();
        let vols: Vec<String> = ["v1", "v2", "v3"].iter().map(|s| s.to_string()).collect();
        let rows = plan(&vols, &Source::Map(map));
        assert!(matches!(&rows[0].1, Mapped::SameStudent { others, .. } if others == &["v2".to_owned()]));
        assert!(matches!(&rows[1].1, Mapped::SameStudent { .. }));
        assert!(matches!(&rows[2].1, Mapped::Ambiguous(v) if v.len() == 2));
        assert_eq!(rows[3], ("v4".to_owned(), Mapped::Missing));
    }
}
