//! Text to typed values. Every setting's text goes through one of these, whether it came from an environment variable
//! or from `workspaced.toml` (whose values are turned into the same text first, see [`toml_text`]).

use std::fmt::Display;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use crate::domain::InstanceId;
use crate::runtime::egress::EgressMode;

/// The text an environment variable would hold for a TOML value: numbers and booleans as written, an array of strings
/// as a JSON array (which the list parsers accept from the environment as well).
pub(super) fn toml_text(value: &toml::Value) -> Result<String, String> {
    match value {
        toml::Value::String(s) => Ok(s.clone()),
        toml::Value::Integer(n) => Ok(n.to_string()),
        toml::Value::Float(f) => Ok(f.to_string()),
        toml::Value::Boolean(b) => Ok(b.to_string()),
        toml::Value::Array(items) => {
            let words: Option<Vec<&str>> = items.iter().map(toml::Value::as_str).collect();
            let words = words.ok_or("an array must hold only strings")?;
            serde_json::to_string(&words).map_err(|e| e.to_string())
        }
        other => Err(format!("a {} is not a setting value; use a string, number, boolean or array", other.type_str())),
    }
}

pub(super) fn text(v: &str) -> Result<String, String> {
    Ok(v.to_owned())
}

pub(super) fn path(v: &str) -> Result<PathBuf, String> {
    Ok(PathBuf::from(v))
}

/// Empty means unset, so a blank line in an env file or `key = ""` in TOML switches a feature off rather than
/// configuring an empty URL or key.
pub(super) fn optional_text(v: &str) -> Result<Option<String>, String> {
    Ok(Some(v.to_owned()).filter(|v| !v.is_empty()))
}

pub(super) fn optional_path(v: &str) -> Result<Option<PathBuf>, String> {
    Ok(optional_text(v)?.map(PathBuf::from))
}

pub(super) fn instance(v: &str) -> Result<InstanceId, String> {
    InstanceId::parse(v).map_err(|e| e.to_string())
}

pub(super) fn egress_mode(v: &str) -> Result<EgressMode, String> {
    v.parse()
}

pub(super) fn proxy_path(v: &str) -> Result<crate::domain::ProxyPath, String> {
    v.parse()
}

pub(super) fn runtime_kind(v: &str) -> Result<crate::runtime::RuntimeKind, String> {
    v.parse()
}

/// A comma-separated list (or a JSON array), each item trimmed, empty items dropped.
pub(super) fn comma_list(v: &str) -> Result<Vec<String>, String> {
    let items = list(v, |v| v.split(',').map(str::to_owned).collect())?;
    Ok(items.into_iter().map(|i| i.trim().to_owned()).filter(|i| !i.is_empty()).collect())
}

pub(super) fn number<T: FromStr>(v: &str) -> Result<T, String>
where
    T::Err: Display,
{
    v.trim().parse().map_err(|e: T::Err| e.to_string())
}

/// A count, or `off`/`none`/empty for no limit.
pub(super) fn optional_count(v: &str) -> Result<Option<usize>, String> {
    match v.trim() {
        "" | "off" | "none" => Ok(None),
        n => number(n).map(Some),
    }
}

pub(super) fn bool(v: &str) -> Result<bool, String> {
    match v.trim().to_ascii_lowercase().as_str() {
        "1" | "true" | "yes" | "on" => Ok(true),
        "0" | "false" | "no" | "off" => Ok(false),
        other => Err(format!("not a boolean: {other:?}; use true or false")),
    }
}

/// A boolean, or `auto`/empty for "decide from other settings".
pub(super) fn optional_bool(v: &str) -> Result<Option<bool>, String> {
    match v.trim() {
        "" | "auto" => Ok(None),
        other => bool(other).map(Some),
    }
}

/// Parses `15m`, `90s`, `2s`, `1h 30m`, `500ms`; a bare number means seconds.
pub fn parse_duration(v: &str) -> Result<Duration, String> {
    let v = v.trim();
    if let Ok(secs) = v.parse::<u64>() {
        return Ok(Duration::from_secs(secs));
    }
    humantime::parse_duration(v).map_err(|e| format!("not a duration ({e}); use e.g. 15m, 90s, 2s"))
}

/// A duration, or `off`/`none`/`0`/empty for none.
pub fn parse_optional_duration(v: &str) -> Result<Option<Duration>, String> {
    match v.trim() {
        "" | "off" | "none" | "0" => Ok(None),
        other => parse_duration(other).map(Some),
    }
}

/// Parses a byte size the way Docker does: `1g`, `512m`, `1GiB`, `2048k`, or plain bytes.
pub fn parse_bytes(v: &str) -> Result<i64, String> {
    let t = v.trim().to_ascii_lowercase();
    let digits_end = t.find(|c: char| !c.is_ascii_digit() && c != '.').unwrap_or(t.len());
    let (num, unit) = t.split_at(digits_end);
    let num: f64 = num.parse().map_err(|_| format!("not a size: {v:?}; use e.g. 1g or 512m"))?;
    let mult: f64 = match unit.trim() {
        "" | "b" => 1.0,
        "k" | "kb" | "kib" => 1024.0,
        "m" | "mb" | "mib" => 1024.0 * 1024.0,
        "g" | "gb" | "gib" => 1024.0 * 1024.0 * 1024.0,
        "t" | "tb" | "tib" => 1024.0 * 1024.0 * 1024.0 * 1024.0,
        other => return Err(format!("unknown unit {other:?}; use k, m or g")),
    };
    let bytes = num * mult;
    if !(bytes >= 1.0 && bytes < i64::MAX as f64) {
        return Err(format!("size out of range: {v:?}"));
    }
    Ok(bytes as i64)
}

pub(super) fn size(v: &str) -> Result<u64, String> {
    parse_bytes(v).map(|b| b.max(0) as u64)
}

/// A size, or `off`/`none`/`0`/empty for none.
pub fn parse_optional_bytes(v: &str) -> Result<Option<u64>, String> {
    match v.trim() {
        "" | "off" | "none" | "0" => Ok(None),
        other => size(other).map(Some),
    }
}

/// A JSON array of strings (how a TOML array arrives), or else the words `split` finds.
fn list(v: &str, split: impl Fn(&str) -> Vec<String>) -> Result<Vec<String>, String> {
    let v = v.trim();
    if v.starts_with('[') {
        serde_json::from_str(v).map_err(|e| format!("not a JSON array of strings: {e}"))
    } else {
        Ok(split(v))
    }
}

/// Command and arguments: a JSON array (an empty argument is kept), or space-separated words.
pub(super) fn command(v: &str) -> Result<Vec<String>, String> {
    list(v, |v| v.split_whitespace().map(str::to_owned).collect())
}

/// Origins compare exactly with a browser's `Origin` header, which never has a trailing `/` or spaces.
pub(super) fn origins(v: &str) -> Result<Vec<String>, String> {
    let origins = list(v, |v| v.split(',').map(str::to_owned).collect())?
        .into_iter()
        .map(|o| o.trim().trim_end_matches('/').to_owned());
    Ok(origins.filter(|o| !o.is_empty()).collect())
}

/// Hosts compare in lower case, and the suffix is joined to a student id with a `.` of its own.
pub(super) fn host_suffix(v: &str) -> Result<Option<String>, String> {
    optional_text(&v.trim().trim_start_matches('.').to_ascii_lowercase())
}

pub(super) fn ide_auth(v: &str) -> Result<crate::domain::IdeAuth, String> {
    crate::domain::IdeAuth::parse(v)
}

/// A host name as browsers send it in `Host`: lower case; a port may follow.
pub(super) fn host(v: &str) -> Result<Option<String>, String> {
    let v = v.trim().to_ascii_lowercase();
    if v.bytes().any(|b| !(b.is_ascii_alphanumeric() || b"-.:[]".contains(&b))) {
        return Err("must be a host name, with an optional `:port` (no scheme, no path)".to_owned());
    }
    optional_text(&v)
}
