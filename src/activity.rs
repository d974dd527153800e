//! Activity of running workspaces, kept in memory and written to the store in batches. A heartbeat is a map
//! update (microseconds); the flusher writes what changed about once a second, so a crash loses at most one batch
//! of activity and never a workspace. Only running workspaces have an entry: the lifecycle adds and removes them.

use std::collections::HashMap;
use std::sync::Mutex;

use chrono::{DateTime, Utc};

use crate::domain::StudentId;
use crate::store::{from_ms, ms, Store, StoreError};

#[derive(Debug, Clone, Copy, Default)]
struct Slot {
    /// Latest activity, epoch ms.
    last_ms: i64,
    /// Latest time code-server reported an open connection (a tab), epoch ms.
    ide_ms: Option<i64>,
    /// Something not yet written to the store.
    dirty: bool,
}

/// What a touch found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Touch {
    /// Recorded; the workspace's latest activity is now this.
    Recorded(DateTime<Utc>),
    /// No running workspace by that id.
    NotRunning,
}

#[derive(Debug, Default)]
pub struct Activity {
    slots: Mutex<HashMap<StudentId, Slot>>,
}

/// One row of a batch to write; the type lives in the store, which writes it.
pub use crate::store::PendingActivity as Pending;

impl Activity {
    /// A workspace is running with this latest activity.
    pub fn register(&self, student: &StudentId, last: DateTime<Utc>, ide: Option<DateTime<Utc>>) {
        let slot = Slot { last_ms: ms(last), ide_ms: ide.map(ms), dirty: false };
        self.slots.lock().expect("activity lock").insert(student.clone(), slot);
    }

    /// A workspace stopped: forget it (pending activity of a stopped workspace has nothing to keep alive).
    pub fn unregister(&self, student: &StudentId) {
        self.slots.lock().expect("activity lock").remove(student);
    }

    /// Records activity at `at` for a running workspace. Never moves activity back.
    pub fn touch(&self, student: &StudentId, at: DateTime<Utc>) -> Touch {
        let mut slots = self.slots.lock().expect("activity lock");
        let Some(slot) = slots.get_mut(student) else { return Touch::NotRunning };
        let at = ms(at);
        if at > slot.last_ms {
            slot.last_ms = at;
            slot.dirty = true;
        }
        Touch::Recorded(from_ms(slot.last_ms))
    }

    /// Like [`Activity::touch`] for a workspace the caller knows is running (its route is on record): one started by
    /// another replica gets an entry here on its first activity, which the flush then writes like any other.
    pub fn touch_running(&self, student: &StudentId, at: DateTime<Utc>) -> DateTime<Utc> {
        let mut slots = self.slots.lock().expect("activity lock");
        let slot = slot_of(&mut slots, student);
        let at = ms(at);
        if at > slot.last_ms {
            slot.last_ms = at;
            slot.dirty = true;
        }
        from_ms(slot.last_ms)
    }

    /// Records that the IDE had an open connection at `at` (code-server's own heartbeat). Kept apart from activity.
    /// The caller knows the workspace runs (the culler polls those on record), so a workspace started by another
    /// replica gets an entry, with no activity of its own yet (the store's is newer, and the later one counts).
    pub fn ide_seen(&self, student: &StudentId, at: DateTime<Utc>) {
        let mut slots = self.slots.lock().expect("activity lock");
        let slot = slot_of(&mut slots, student);
        let at = ms(at);
        if slot.ide_ms.is_none_or(|v| at > v) {
            slot.ide_ms = Some(at);
            slot.dirty = true;
        }
    }

    /// Latest activity of a running workspace.
    pub fn last(&self, student: &StudentId) -> Option<DateTime<Utc>> {
        self.slots.lock().expect("activity lock").get(student).map(|s| from_ms(s.last_ms))
    }

    /// Latest open-tab sighting of a running workspace.
    pub fn ide_connected_at(&self, student: &StudentId) -> Option<DateTime<Utc>> {
        self.slots.lock().expect("activity lock").get(student).and_then(|s| s.ide_ms).map(from_ms)
    }

    pub fn is_running(&self, student: &StudentId) -> bool {
        self.slots.lock().expect("activity lock").contains_key(student)
    }

    /// Students with an entry (running workspaces).
    pub fn running(&self) -> Vec<StudentId> {
        self.slots.lock().expect("activity lock").keys().cloned().collect()
    }

    /// Takes what changed since the last call.
    pub fn take_pending(&self) -> Vec<Pending> {
        let mut slots = self.slots.lock().expect("activity lock");
        slots
            .iter_mut()
            .filter(|(_, s)| s.dirty)
            .map(|(id, s)| {
                s.dirty = false;
                Pending {
                    student: id.clone(),
                    last_activity: from_ms(s.last_ms),
                    ide_connected_at: s.ide_ms.map(from_ms),
                }
            })
            .collect()
    }

    /// Writes what changed to the store in one transaction of few statements (`Store::write_activity_batch`: one
    /// per 500 rows, not a round trip per row). On failure the batch is marked dirty again.
    pub async fn flush(&self, store: &Store) -> Result<usize, StoreError> {
        let batch = self.take_pending();
        if batch.is_empty() {
            return Ok(0);
        }
        if let Err(e) = store.write_activity_batch(&batch).await {
            let mut slots = self.slots.lock().expect("activity lock");
            for p in &batch {
                if let Some(s) = slots.get_mut(&p.student) {
                    s.dirty = true;
                }
            }
            return Err(e);
        }
        Ok(batch.len())
    }
}

/// The student's entry, made when missing. No copy of the id on the way of a heartbeat to a known entry.
fn slot_of<'a>(slots: &'a mut HashMap<StudentId, Slot>, student: &StudentId) -> &'a mut Slot {
    if !slots.contains_key(student) {
        slots.insert(student.clone(), Slot::default());
    }
    slots.get_mut(student).expect("just inserted")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: i64) -> DateTime<Utc> {
        from_ms(1_800_000_000_000 + s * 1000)
    }

    #[test]
    fn touches_count_only_for_running_workspaces_and_never_go_back() {
        let a = Activity::default();
        let s = StudentId::parse("a").unwrap();
        assert_eq!(a.touch(&s, t(1)), Touch::NotRunning);
        a.register(&s, t(0), None);
        assert_eq!(a.touch(&s, t(5)), Touch::Recorded(t(5)));
        assert_eq!(a.touch(&s, t(3)), Touch::Recorded(t(5)));
        assert_eq!(a.take_pending().len(), 1);
        assert!(a.take_pending().is_empty(), "a batch is taken once");
        a.unregister(&s);
        assert_eq!(a.touch(&s, t(9)), Touch::NotRunning);
    }

    #[test]
    fn a_workspace_started_elsewhere_gets_an_entry_at_its_first_activity() {
        let a = Activity::default();
        let s = StudentId::parse("elsewhere").unwrap();
        assert_eq!(a.touch_running(&s, t(7)), t(7));
        assert_eq!(a.touch(&s, t(9)), Touch::Recorded(t(9)));
        let pending = a.take_pending();
        assert_eq!((pending.len(), pending[0].last_activity), (1, t(9)), "written by the next flush");
        a.unregister(&s);
        assert_eq!(a.touch(&s, t(10)), Touch::NotRunning);
    }

    #[test]
    fn ide_sightings_are_kept_apart_from_activity() {
        let a = Activity::default();
        let s = StudentId::parse("a").unwrap();
        a.register(&s, t(0), None);
        a.ide_seen(&s, t(50));
        assert_eq!(a.last(&s), Some(t(0)));
        assert_eq!(a.ide_connected_at(&s), Some(t(50)));
    }
}
