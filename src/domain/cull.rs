//! The cull decision: a pure function of a workspace's times, the clock and the policy. The culler loop around it
//! does the IO; this file only decides, so every branch is unit-tested with plain timestamps.

use std::time::Duration;

use chrono::{DateTime, Utc};

use super::StopReason;

/// When to warn and when to stop. Per workspace: the defaults from settings, with per-workspace overrides applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CullPolicy {
    /// Stop after this long without activity.
    pub idle_timeout: Duration,
    /// Warn this long before the stop.
    pub warning_lead: Duration,
    /// Stop this long after the start whatever the activity (off when `None`).
    pub max_age: Option<Duration>,
    /// `false` exempts the workspace from culling (an exam session, say).
    pub enabled: bool,
}

/// The times of one running workspace that the decision needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CullInput {
    pub last_activity: DateTime<Utc>,
    pub started_at: DateTime<Utc>,
    /// When the current warning was sent, if one was.
    pub warned_at: Option<DateTime<Utc>>,
}

/// When a workspace will be warned and stopped if nothing happens.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Deadlines {
    pub warn_at: DateTime<Utc>,
    pub stop_at: DateTime<Utc>,
    /// What the stop at `stop_at` will be for.
    pub reason: StopReason,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    Keep,
    /// Enter the warning window: tell the student once.
    Warn {
        stop_at: DateTime<Utc>,
        reason: StopReason,
    },
    Stop(StopReason),
}

/// The longest duration accepted from outside (a policy override, a setting): one year. Far beyond any real
/// idle timeout or lifetime, and far inside chrono's range, so deadlines built from it never leave it.
pub const MAX_DURATION: Duration = Duration::from_secs(365 * 24 * 3600);

/// `t + d`, saturating at the end of chrono's range: a duration too long to represent means "never".
fn add(t: DateTime<Utc>, d: Duration) -> DateTime<Utc> {
    chrono::Duration::from_std(d).ok().and_then(|d| t.checked_add_signed(d)).unwrap_or(DateTime::<Utc>::MAX_UTC)
}

/// `t - d`, saturating at the start of chrono's range.
fn sub(t: DateTime<Utc>, d: Duration) -> DateTime<Utc> {
    chrono::Duration::from_std(d).ok().and_then(|d| t.checked_sub_signed(d)).unwrap_or(DateTime::<Utc>::MIN_UTC)
}

/// Overrides of the service's culling defaults, a course's or a workspace's own; `None` follows the layer below.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Overrides {
    pub idle_timeout: Option<Duration>,
    pub max_age: Option<Duration>,
    pub enabled: Option<bool>,
    /// Only a course sets it; a workspace's own overrides leave it to the course or the service.
    pub warning_lead: Option<Duration>,
}

impl Overrides {
    /// These overrides over `below` (a workspace's over its course's): each value set here wins.
    pub fn over(&self, below: &Overrides) -> Overrides {
        Overrides {
            idle_timeout: self.idle_timeout.or(below.idle_timeout),
            max_age: self.max_age.or(below.max_age),
            enabled: self.enabled.or(below.enabled),
            warning_lead: self.warning_lead.or(below.warning_lead),
        }
    }
}

/// The policy for one workspace: the service's defaults with the overrides (a workspace's over its course's). The
/// warning lead never exceeds the idle timeout (a 60 s timeout with a 120 s lead warns at once, not before the last
/// activity).
pub fn effective_policy(defaults: &CullPolicy, o: &Overrides) -> CullPolicy {
    let idle_timeout = o.idle_timeout.unwrap_or(defaults.idle_timeout);
    CullPolicy {
        idle_timeout,
        warning_lead: o.warning_lead.unwrap_or(defaults.warning_lead).min(idle_timeout),
        max_age: o.max_age.or(defaults.max_age),
        enabled: o.enabled.unwrap_or(defaults.enabled),
    }
}

/// The times the decision needs, from what the store holds and the freshest activity in memory (which wins over
/// the last written batch). A record without activity counts from its start, then from its last change.
pub fn cull_input(
    stored_activity: Option<DateTime<Utc>>,
    in_memory: Option<DateTime<Utc>>,
    started_at: Option<DateTime<Utc>>,
    updated_at: DateTime<Utc>,
    warned_at: Option<DateTime<Utc>>,
) -> CullInput {
    let stored = stored_activity.or(started_at).unwrap_or(updated_at);
    let last_activity = in_memory.map_or(stored, |m| m.max(stored));
    CullInput { last_activity, started_at: started_at.unwrap_or(updated_at), warned_at }
}

/// The next deadlines, or `None` when culling is off for this workspace.
pub fn deadlines(w: &CullInput, policy: &CullPolicy) -> Option<Deadlines> {
    if !policy.enabled {
        return None;
    }
    let idle_stop = add(w.last_activity, policy.idle_timeout);
    let (stop_at, reason) = match policy.max_age.map(|m| add(w.started_at, m)) {
        Some(age_stop) if age_stop < idle_stop => (age_stop, StopReason::MaxAge),
        _ => (idle_stop, StopReason::Idle),
    };
    // The lead is never more than the idle timeout (the policy guarantees it), but a stop at the end of time must
    // not warn at its start: then there is no warning before it at all.
    let warn_at = if stop_at == DateTime::<Utc>::MAX_UTC { stop_at } else { sub(stop_at, policy.warning_lead) };
    Some(Deadlines { warn_at, stop_at, reason })
}

/// Keep, warn (once per warning window) or stop, with the reason.
pub fn decide(w: &CullInput, now: DateTime<Utc>, policy: &CullPolicy) -> Decision {
    let Some(d) = deadlines(w, policy) else { return Decision::Keep };
    if now >= d.stop_at {
        return Decision::Stop(d.reason);
    }
    // A warning counts for the window it was sent in: activity after it opens a new window.
    let already_warned = w.warned_at.is_some_and(|at| at >= w.last_activity && at >= d.warn_at);
    if now >= d.warn_at && !already_warned {
        return Decision::Warn { stop_at: d.stop_at, reason: d.reason };
    }
    Decision::Keep
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn t(s: i64) -> DateTime<Utc> {
        Utc.timestamp_opt(1_800_000_000 + s, 0).unwrap()
    }

    fn policy() -> CullPolicy {
        CullPolicy {
            idle_timeout: Duration::from_secs(900),
            warning_lead: Duration::from_secs(120),
            max_age: None,
            enabled: true,
        }
    }

    fn ws(last: i64, warned: Option<i64>) -> CullInput {
        CullInput { last_activity: t(last), started_at: t(0), warned_at: warned.map(t) }
    }

    #[test]
    fn a_recently_active_workspace_is_kept() {
        assert_eq!(decide(&ws(0, None), t(779), &policy()), Decision::Keep);
    }

    #[test]
    fn thirteen_idle_minutes_bring_exactly_one_warning() {
        let p = policy();
        assert_eq!(decide(&ws(0, None), t(780), &p), Decision::Warn { stop_at: t(900), reason: StopReason::Idle });
        assert_eq!(decide(&ws(0, Some(780)), t(800), &p), Decision::Keep, "no second warning in one window");
    }

    #[test]
    fn fifteen_idle_minutes_stop_for_idle() {
        assert_eq!(decide(&ws(0, Some(780)), t(900), &policy()), Decision::Stop(StopReason::Idle));
        assert_eq!(decide(&ws(0, None), t(5000), &policy()), Decision::Stop(StopReason::Idle), "even if never warned");
    }

    #[test]
    fn activity_after_a_warning_moves_the_deadline_and_rearms_the_warning() {
        let p = policy();
        // Warned at 780, active at 850: the stop moves to 1750, the warning to 1630.
        assert_eq!(decide(&ws(850, Some(780)), t(900), &p), Decision::Keep);
        assert_eq!(
            decide(&ws(850, Some(780)), t(1630), &p),
            Decision::Warn { stop_at: t(1750), reason: StopReason::Idle }
        );
    }

    #[test]
    fn max_age_stops_an_active_workspace() {
        let p = CullPolicy { max_age: Some(Duration::from_secs(3600)), ..policy() };
        assert_eq!(
            decide(&ws(3500, None), t(3480), &p),
            Decision::Warn { stop_at: t(3600), reason: StopReason::MaxAge }
        );
        assert_eq!(decide(&ws(3590, Some(3480)), t(3600), &p), Decision::Stop(StopReason::MaxAge));
        assert_eq!(
            decide(&ws(100, None), t(1000), &p),
            Decision::Stop(StopReason::Idle),
            "idle comes first when earlier"
        );
    }

    #[test]
    fn culling_can_be_switched_off_per_workspace() {
        let p = CullPolicy { enabled: false, ..policy() };
        assert_eq!(decide(&ws(0, None), t(100_000), &p), Decision::Keep);
        assert_eq!(deadlines(&ws(0, None), &p), None);
    }

    #[test]
    fn deadlines_follow_the_last_activity() {
        let d = deadlines(&ws(60, None), &policy()).unwrap();
        assert_eq!((d.warn_at, d.stop_at, d.reason), (t(840), t(960), StopReason::Idle));
    }

    fn extreme(idle: Duration, max_age: Option<Duration>) -> CullPolicy {
        CullPolicy { idle_timeout: idle, warning_lead: Duration::from_secs(120), max_age, enabled: true }
    }

    #[test]
    fn durations_beyond_chronos_range_mean_never_and_do_not_panic() {
        let p = extreme(Duration::from_secs(u64::MAX), Some(Duration::MAX));
        let d = deadlines(&ws(0, None), &p).unwrap();
        assert_eq!((d.stop_at, d.warn_at), (DateTime::<Utc>::MAX_UTC, DateTime::<Utc>::MAX_UTC));
        assert_eq!(decide(&ws(0, None), t(10_000_000), &p), Decision::Keep);
    }

    #[test]
    fn the_reported_overflowing_overrides_saturate_instead_of_wrapping() {
        // The values from the security report: 10^13 s idle and 2^63/1000 s of max age.
        let p = extreme(Duration::from_secs(10_000_000_000_000), Some(Duration::from_secs(9_223_372_036_854_776)));
        let d = deadlines(&ws(0, None), &p).unwrap();
        assert_eq!(d.stop_at, DateTime::<Utc>::MAX_UTC, "a wrapped max age would have stopped in the past");
        assert_eq!(decide(&ws(0, None), t(1), &p), Decision::Keep);
    }

    #[test]
    fn times_at_the_ends_of_chronos_range_do_not_panic() {
        let end = CullInput {
            last_activity: DateTime::<Utc>::MAX_UTC,
            started_at: DateTime::<Utc>::MAX_UTC,
            warned_at: Some(DateTime::<Utc>::MAX_UTC),
        };
        let p = CullPolicy { max_age: Some(MAX_DURATION), ..policy() };
        assert_eq!(deadlines(&end, &p).map(|d| d.stop_at), Some(DateTime::<Utc>::MAX_UTC));
        assert_eq!(decide(&end, DateTime::<Utc>::MAX_UTC, &p), Decision::Stop(StopReason::Idle));
        let start = CullInput {
            last_activity: DateTime::<Utc>::MIN_UTC,
            started_at: DateTime::<Utc>::MIN_UTC,
            warned_at: None,
        };
        let p = CullPolicy { warning_lead: Duration::MAX, ..p };
        let d = deadlines(&start, &p).unwrap();
        assert_eq!(d.warn_at, DateTime::<Utc>::MIN_UTC, "a lead longer than all of time saturates at the start");
        assert_eq!(decide(&start, DateTime::<Utc>::MAX_UTC, &p), Decision::Stop(StopReason::Idle));
    }

    #[test]
    fn the_maximum_duration_stays_far_inside_chronos_range() {
        let p = extreme(MAX_DURATION, Some(MAX_DURATION));
        let d = deadlines(&ws(0, None), &p).unwrap();
        assert_eq!(d.stop_at, t(31_536_000));
        assert_eq!(d.warn_at, t(31_536_000 - 120));
    }
}
