//! Limits on parsed values. A table row names one of these for its own field; [`Bounded`] adds the limits every
//! value of a type has, so a new duration setting cannot forget the one-year bound.

use std::path::PathBuf;
use std::time::Duration;

use crate::domain::{IdeAuth, InstanceId, ProxyPath, MAX_DURATION};
use crate::runtime::egress::EgressMode;
use crate::runtime::RuntimeKind;

/// Limits that hold for every setting of a type, whatever its row says.
pub(super) trait Bounded {
    fn bounded(&self) -> Result<(), String> {
        Ok(())
    }
}

/// Every duration goes into deadline and timer arithmetic; one year is far beyond any sensible value and far inside
/// the range of that arithmetic.
impl Bounded for Duration {
    fn bounded(&self) -> Result<(), String> {
        if *self > MAX_DURATION {
            return Err("must be at most one year (365d)".to_owned());
        }
        Ok(())
    }
}

impl Bounded for Option<Duration> {
    fn bounded(&self) -> Result<(), String> {
        self.as_ref().map_or(Ok(()), Bounded::bounded)
    }
}

macro_rules! unbounded {
    ($($t:ty),*) => { $(impl Bounded for $t {})* };
}
unbounded!(
    String,
    Option<String>,
    PathBuf,
    Option<PathBuf>,
    InstanceId,
    Vec<String>,
    bool,
    Option<bool>,
    EgressMode,
    RuntimeKind
);
unbounded!(u16, u32, u64, i64, usize, f64, Option<u64>, Option<usize>, IdeAuth, ProxyPath);

/// For a row whose only limits are its type's.
pub(super) fn any<T>(_: &T) -> Result<(), String> {
    Ok(())
}

/// Zero would make a loop spin or every deadline pass at once.
pub(super) fn positive(d: &Duration) -> Result<(), String> {
    if d.is_zero() {
        return Err("must be more than zero".to_owned());
    }
    Ok(())
}

pub(super) fn at_least_one<T: PartialOrd + From<u8>>(n: &T) -> Result<(), String> {
    if *n < T::from(1) {
        return Err("must be at least 1".to_owned());
    }
    Ok(())
}

pub(super) fn cpus(c: &f64) -> Result<(), String> {
    if !(*c > 0.0 && *c <= 1024.0) {
        return Err("must be more than 0 and at most 1024".to_owned());
    }
    Ok(())
}

pub(super) fn reservation_ratio(r: &f64) -> Result<(), String> {
    if !(*r > 0.0 && *r <= 1.0) {
        return Err("must be more than 0 and at most 1".to_owned());
    }
    Ok(())
}

pub(super) fn docker_memory(bytes: &i64) -> Result<(), String> {
    if *bytes < 6 * 1024 * 1024 {
        return Err("must be at least 6 MiB (Docker's minimum)".to_owned());
    }
    Ok(())
}

pub(super) fn absolute(path: &str) -> Result<(), String> {
    if !path.starts_with('/') {
        return Err("must start with '/'".to_owned());
    }
    Ok(())
}

/// A path inside the container for a bind mount: absolute, and without the `:` that separates a bind's parts.
pub(super) fn mount_path(path: &Option<String>) -> Result<(), String> {
    let Some(path) = path else { return Ok(()) };
    absolute(path)?;
    if path.contains(':') || path.contains(',') {
        return Err("must not contain ':' or ','".to_owned());
    }
    if path.len() > 1024 {
        return Err("must be at most 1024 bytes".to_owned());
    }
    if path.split('/').any(|p| p == "..") {
        return Err("must not contain '..'".to_owned());
    }
    Ok(())
}

pub(super) fn signing_key(key: &Option<String>) -> Result<(), String> {
    if key.as_ref().is_some_and(|k| k.len() < 32) {
        return Err("must be at least 32 characters (e.g. `openssl rand -hex 32`)".to_owned());
    }
    Ok(())
}

/// An environment variable name: what a shell and Docker accept.
pub(super) fn env_name(name: &Option<String>) -> Result<(), String> {
    match name {
        Some(n)
            if n.is_empty()
                || n.starts_with(|c: char| c.is_ascii_digit())
                || !n.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') =>
        {
            Err("must be an environment variable name (letters, digits and `_`, not starting with a digit)".to_owned())
        }
        _ => Ok(()),
    }
}

/// A request's headers fit in a second on any real network; more than a minute only helps a slow client hold a
/// connection.
pub(super) fn header_timeout(d: &Duration) -> Result<(), String> {
    positive(d)?;
    if *d > Duration::from_secs(300) {
        return Err("must be at most 5m".to_owned());
    }
    Ok(())
}

/// A file-system call that takes minutes is a stalled mount, not a slow one.
pub(super) fn storage_timeout(d: &Duration) -> Result<(), String> {
    positive(d)?;
    if *d > Duration::from_secs(600) {
        return Err("must be at most 10m".to_owned());
    }
    Ok(())
}

/// Each one is a thread hanging in the kernel.
pub(super) fn storage_max_blocked(n: &usize) -> Result<(), String> {
    if !(1..=1024).contains(n) {
        return Err("must be between 1 and 1024".to_owned());
    }
    Ok(())
}

/// Renewed every third of it: under a second would be a write every few hundred milliseconds; over five minutes, a
/// dead leader's loops would stand still that long.
pub(super) fn lease_ttl(d: &Duration) -> Result<(), String> {
    if *d < Duration::from_secs(1) || *d > Duration::from_secs(300) {
        return Err("must be between 1s and 5m".to_owned());
    }
    Ok(())
}

/// A Swarm placement constraint: `<attribute>==<value>` or `<attribute>!=<value>` (the engine checks the attribute).
pub(super) fn swarm_constraints(list: &Vec<String>) -> Result<(), String> {
    if list.len() > 32 {
        return Err("at most 32 constraints".to_owned());
    }
    for c in list {
        let (key, value) = c
            .split_once("==")
            .or_else(|| c.split_once("!="))
            .ok_or_else(|| format!("{c:?} is not a constraint; use <attribute>==<value> or <attribute>!=<value>"))?;
        let fine = |t: &str| !t.trim().is_empty() && t.len() <= 256 && !t.chars().any(|ch| ch.is_control());
        if !fine(key) || !fine(value) {
            return Err(format!("{c:?}: both sides must be non-empty text of at most 256 characters"));
        }
    }
    Ok(())
}

/// A spread descriptor names a node attribute: `node.labels.<label>` (or `engine.labels.<label>`).
pub(super) fn swarm_spread(spread: &Option<String>) -> Result<(), String> {
    let Some(s) = spread else { return Ok(()) };
    let label = s.strip_prefix("node.labels.").or_else(|| s.strip_prefix("engine.labels."));
    match label {
        Some(l)
            if !l.is_empty()
                && l.len() <= 128
                && l.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b)) =>
        {
            Ok(())
        }
        _ => Err(format!("{s:?} is not a spread descriptor; use node.labels.<label>, e.g. node.labels.zone")),
    }
}
