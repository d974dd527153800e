//! Workspace states, stop reasons and event kinds, with their stable string forms (stored and sent as JSON).

use std::fmt;
use std::str::FromStr;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown value {0:?}")]
pub struct UnknownVariant(pub String);

macro_rules! string_enum {
    ($(#[$m:meta])* $name:ident { $($variant:ident => $s:literal),+ $(,)? }) => {
        $(#[$m])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum $name { $($variant),+ }

        // JSON goes through `as_str` too, so a variant has exactly one string everywhere (a derive would turn
        // `EventKind::Orphan` into "orphan" while the database and the webhook say "orphan_removed").
        impl serde::Serialize for $name {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> { s.serialize_str(self.as_str()) }
        }

        impl<'de> serde::Deserialize<'de> for $name {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = <std::borrow::Cow<'de, str> as serde::Deserialize>::deserialize(d)?;
                s.parse().map_err(serde::de::Error::custom)
            }
        }

        impl $name {
            pub const ALL: &'static [$name] = &[$($name::$variant),+];
            pub fn as_str(self) -> &'static str {
                match self { $($name::$variant => $s),+ }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result { f.write_str(self.as_str()) }
        }

        impl FromStr for $name {
            type Err = UnknownVariant;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                match s { $($s => Ok($name::$variant),)+ _ => Err(UnknownVariant(s.to_owned())) }
            }
        }
    };
}

string_enum! {
    /// Where a workspace is in its life: `stopped -> starting -> running -> stopping -> stopped`, or `failed`.
    /// `queued` is a start waiting for admission.
    Status {
        Stopped => "stopped",
        Queued => "queued",
        Starting => "starting",
        Running => "running",
        Stopping => "stopping",
        Failed => "failed",
    }
}

impl Status {
    /// Whether a container may exist for the workspace, or is about to, so its folder may change under a reader:
    /// everything but `stopped` and `failed` (a `queued` start comes up as soon as it is admitted).
    pub fn is_busy(self) -> bool {
        !matches!(self, Status::Stopped | Status::Failed)
    }
}

string_enum! {
    /// Why a workspace stopped. Recorded with every stop and sent with every stop notification.
    StopReason {
        User => "user",
        Admin => "admin",
        Idle => "idle",
        MaxAge => "max_age",
        Lost => "lost",
        Shutdown => "shutdown",
        Quota => "quota",
    }
}

impl StopReason {
    /// The sentence shown to students and sent to the LMS.
    pub fn message(self) -> &'static str {
        match self {
            StopReason::User => "Workspace stopped on request.",
            StopReason::Admin => "Workspace stopped by an administrator.",
            StopReason::Idle => "Workspace stopped due to inactivity.",
            StopReason::MaxAge => "Workspace stopped because it reached its maximum lifetime.",
            StopReason::Lost => "Workspace stopped unexpectedly: its container disappeared.",
            StopReason::Shutdown => "Workspace stopped because the service shut down.",
            StopReason::Quota => {
                "Workspace stopped because its files are over the disk limit. Remove files to start it again."
            }
        }
    }
}

string_enum! {
    /// What an event records. Events are the audit log and the source of notifications.
    EventKind {
        Starting => "starting",
        Started => "started",
        StartFailed => "start_failed",
        Stopped => "stopped",
        Warning => "warning",
        Orphan => "orphan_removed",
        Adopted => "adopted",
        QuotaExceeded => "quota_exceeded",
        Deleted => "deleted",
        StaffAccess => "staff_access",
    }
}

string_enum! {
    /// Why an event happened, in its `reason` column: a stop reason for stops and warnings, or what a failure,
    /// an orphan removal or a quota event was about.
    EventReason {
        User => "user",
        Admin => "admin",
        Idle => "idle",
        MaxAge => "max_age",
        Lost => "lost",
        Shutdown => "shutdown",
        StartFailed => "start_failed",
        Orphan => "orphan",
        DiskSoftQuota => "disk_soft_quota",
        Quota => "quota",
    }
}

impl From<StopReason> for EventReason {
    fn from(r: StopReason) -> Self {
        match r {
            StopReason::User => EventReason::User,
            StopReason::Admin => EventReason::Admin,
            StopReason::Idle => EventReason::Idle,
            StopReason::MaxAge => EventReason::MaxAge,
            StopReason::Lost => EventReason::Lost,
            StopReason::Shutdown => EventReason::Shutdown,
            StopReason::Quota => EventReason::Quota,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn string_forms_round_trip() {
        for s in Status::ALL {
            assert_eq!(s.as_str().parse::<Status>().unwrap(), *s);
            assert_eq!(serde_json::to_string(s).unwrap(), format!("\"{}\"", s.as_str()));
        }
        for r in StopReason::ALL {
            assert_eq!(r.as_str().parse::<StopReason>().unwrap(), *r);
        }
        assert!("bogus".parse::<Status>().is_err());
    }

    #[test]
    fn json_uses_the_stored_string_of_every_variant() {
        for k in EventKind::ALL {
            assert_eq!(serde_json::to_string(k).unwrap(), format!("\"{}\"", k.as_str()));
            assert_eq!(serde_json::from_str::<EventKind>(&format!("\"{k}\"")).unwrap(), *k);
        }
        assert!(serde_json::from_str::<EventKind>("\"orphan\"").is_err());
    }

    #[test]
    fn every_stop_reason_is_an_event_reason_with_the_same_string() {
        for r in StopReason::ALL {
            assert_eq!(EventReason::from(*r).as_str(), r.as_str());
        }
    }

    #[test]
    fn only_stopped_and_failed_workspaces_are_not_busy() {
        let idle: Vec<Status> = Status::ALL.iter().copied().filter(|s| !s.is_busy()).collect();
        assert_eq!(idle, [Status::Stopped, Status::Failed]);
    }

    #[test]
    fn idle_stop_says_inactivity() {
        assert_eq!(StopReason::Idle.message(), "Workspace stopped due to inactivity.");
    }
}
