//! The read model: what a workspace looks like right now, combining its record with what lives in memory
//! (fresher activity, the queue, measured disk use) and the policy in force. HTTP builds its answers from this.

use chrono::{DateTime, Utc};

use super::Lifecycle;
use crate::domain::{cull_input, deadlines, effective_policy, CullInput, CullPolicy, Deadlines, Overrides, Status};
use crate::store::WorkspaceRecord;
use crate::usage::Measured;

/// A workspace as it stands now.
#[derive(Debug, Clone)]
pub struct Live {
    /// The freshest activity: the record's or the newer one in memory.
    pub last_activity: Option<DateTime<Utc>>,
    pub ide_connected_at: Option<DateTime<Utc>>,
    pub policy: CullPolicy,
    /// While running: when the warning and the stop come if nothing happens.
    pub deadlines: Option<Deadlines>,
    /// While queued: the 1-based place in the start queue and a rough wait.
    pub queue_position: Option<usize>,
    pub queue_estimate_seconds: Option<u64>,
    pub usage: Option<Measured>,
}

impl Lifecycle {
    /// The service's culling defaults.
    pub fn default_policy(&self) -> CullPolicy {
        let c = &self.settings.cull;
        CullPolicy { idle_timeout: c.idle_timeout, warning_lead: c.warning_lead, max_age: c.max_age, enabled: true }
    }

    /// The policy in force for a workspace: the defaults, under its course's values (as of its last start), under
    /// its own overrides.
    pub fn policy_of(&self, rec: &WorkspaceRecord) -> CullPolicy {
        let o = &rec.overrides;
        let own =
            Overrides { idle_timeout: o.idle_timeout, max_age: o.max_age, enabled: o.cull_enabled, warning_lead: None };
        effective_policy(&self.default_policy(), &own.over(&rec.course_policy))
    }

    /// What the cull decision sees for a workspace now.
    pub(super) fn cull_input_of(&self, rec: &WorkspaceRecord) -> CullInput {
        let in_memory = self.activity.last(&rec.student_id);
        cull_input(rec.last_activity, in_memory, rec.started_at, rec.updated_at, rec.warned_at)
    }

    /// The running workspaces on record, every replica's, with their IDE's host and port: three columns, not whole
    /// records (the IDE polls and the engine's stats run over all of them).
    pub async fn running_ports(&self) -> Result<Vec<crate::store::RunningPort>, super::LifecycleError> {
        Ok(self.store.running_ports().await?)
    }

    /// The record combined with what is known in memory now.
    pub fn live(&self, rec: &WorkspaceRecord) -> Live {
        let policy = self.policy_of(rec);
        let last_activity = match (rec.last_activity, self.activity.last(&rec.student_id)) {
            (Some(a), Some(b)) => Some(a.max(b)),
            (a, b) => a.or(b),
        };
        let deadlines = (rec.status == Status::Running).then(|| deadlines(&self.cull_input_of(rec), &policy)).flatten();
        let queue_position = if rec.status == Status::Queued { self.admission.position(&rec.student_id) } else { None };
        Live {
            last_activity,
            ide_connected_at: self.activity.ide_connected_at(&rec.student_id).or(rec.ide_connected_at),
            policy,
            deadlines,
            queue_position,
            queue_estimate_seconds: queue_position.map(|p| self.admission.estimate(p).as_secs()),
            usage: self.usage.get(&rec.student_id),
        }
    }
}
