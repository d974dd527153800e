//! What admission control needs of the store: how many workspaces hold or wait for resources, across every replica.

use sqlx::Row;

use super::{Store, StoreError};
use crate::domain::StudentId;

impl Store {
    /// Workspaces other than `student`'s that are queued, starting, running or stopping: what a running cap counts.
    /// Read under the installation-wide capacity lock, with the status write that follows, so two replicas never
    /// both take the last place.
    pub async fn count_busy_except(&self, student: &StudentId) -> Result<usize, StoreError> {
        let n: i64 = sqlx::query(
            "SELECT COUNT(*) AS n FROM workspaces WHERE status NOT IN ('stopped', 'failed') AND student_id <> $1",
        )
        .bind(student.as_str())
        .fetch_one(&self.pool)
        .await?
        .try_get("n")?;
        Ok(usize::try_from(n).unwrap_or(0))
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::{store, t};
    use crate::domain::StudentId;

    #[tokio::test]
    async fn busy_workspaces_are_counted_and_the_asker_is_not() {
        let (store, _d) = store().await;
        let (a, b, c) =
            (StudentId::parse("a").unwrap(), StudentId::parse("b").unwrap(), StudentId::parse("c").unwrap());
        assert_eq!(store.count_busy_except(&a).await.unwrap(), 0);
        store.mark_queued(&a, t(0)).await.unwrap();
        store.mark_starting(&b, t(0)).await.unwrap();
        store.mark_starting(&c, t(0)).await.unwrap();
        store.mark_failed(&c, "no", t(1)).await.unwrap();
        assert_eq!(store.count_busy_except(&a).await.unwrap(), 1, "b starting; a asks; c failed");
        assert_eq!(store.count_busy_except(&c).await.unwrap(), 2, "a queued and b starting");
    }
}
