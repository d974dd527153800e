//! Erasure: the one removal of a workspace's record, for retention rules and erasure requests. Its events stay (the
//! audit log), with one more that says it was deleted.

use chrono::{DateTime, Utc};

use super::events::insert_event;
use super::{NewEvent, Store, StoreError};
use crate::domain::StudentId;

impl Store {
    /// Removes the student's record if it is stopped or failed, recording `event` in the same transaction. False
    /// when there is no such record (none, or one that is not stopped).
    pub async fn delete_workspace(
        &self,
        student: &StudentId,
        event: &NewEvent<'_>,
        now: DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        self.forget_route(student);
        let mut tx = self.pool.begin().await?;
        let gone = sqlx::query("DELETE FROM workspaces WHERE student_id = $1 AND status IN ('stopped', 'failed')")
            .bind(student.as_str())
            .execute(&mut *tx)
            .await?
            .rows_affected();
        if gone == 0 {
            return Ok(false);
        }
        sqlx::query("DELETE FROM ide_cookies WHERE student_id = $1").bind(student.as_str()).execute(&mut *tx).await?;
        let id = insert_event(&mut tx, student, event, now).await?;
        tx.commit().await?;
        self.announce_all(id).await;
        self.route_changed(student).await;
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::{store, t};
    use super::super::NewEvent;
    use crate::domain::{EventKind, StopReason, StudentId};

    #[tokio::test]
    async fn only_a_stopped_record_is_deleted_and_its_events_stay_with_one_more() {
        let (store, _d) = store().await;
        let s = StudentId::parse("erase-me").unwrap();
        let deleted = NewEvent { kind: EventKind::Deleted, reason: None, message: "deleted" };
        assert!(!store.delete_workspace(&s, &deleted, t(0)).await.unwrap(), "no record");
        store.mark_starting(&s, t(1)).await.unwrap();
        assert!(!store.delete_workspace(&s, &deleted, t(2)).await.unwrap(), "not while starting");
        store.mark_stopped(&s, StopReason::User, t(3)).await.unwrap();
        assert!(store.delete_workspace(&s, &deleted, t(4)).await.unwrap());
        assert!(store.get(&s).await.unwrap().is_none());
        let kinds: Vec<_> = store.events(Some(&s), 0, 10).await.unwrap().iter().map(|e| e.kind).collect();
        assert_eq!(kinds.last(), Some(&EventKind::Deleted), "{kinds:?}");
    }
}
