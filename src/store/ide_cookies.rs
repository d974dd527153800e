//! The names of the cookies each student's IDE set: the proxy forwards only those of the browser's cookies (see
//! `proxy::CookieJar`). In the database, so that a restart and every replica forward the same ones; cached in memory
//! beside the route (and forgotten with it), so a proxied request costs no database write and, once cached, no read.

use std::collections::BTreeSet;

use sqlx::Row;

use super::{Store, StoreError};
use crate::domain::StudentId;

/// Cookie names kept per student; an IDE that sets more has the first-sorted ones forgotten first.
pub const MAX_IDE_COOKIES: usize = 64;
/// Longest cookie name learnt; a cookie with a longer name never reaches the IDE.
pub const MAX_IDE_COOKIE_NAME: usize = 128;

impl Store {
    /// The names of the cookies the student's IDE has set. From memory after the first read.
    pub async fn ide_cookie_names(&self, student: &StudentId) -> Result<BTreeSet<String>, StoreError> {
        let generation = {
            let routes = self.routes.lock().expect("routes lock");
            if let Some(names) = routes.cookies.get(student) {
                return Ok(names.clone());
            }
            routes.generation
        };
        let rows = sqlx::query("SELECT name FROM ide_cookies WHERE student_id = $1 ORDER BY name LIMIT $2")
            .bind(student.as_str())
            .bind(MAX_IDE_COOKIES as i64)
            .fetch_all(&self.pool)
            .await?;
        let names = rows.iter().map(|r| r.try_get::<String, _>("name")).collect::<Result<BTreeSet<_>, _>>()?;
        let mut routes = self.routes.lock().expect("routes lock");
        if routes.generation == generation {
            routes.cookies.insert(student.clone(), names.clone());
        }
        Ok(names)
    }

    /// Remembers the names of cookies the student's IDE just set. Writes only when one is new (a name longer than
    /// [`MAX_IDE_COOKIE_NAME`] is ignored); past [`MAX_IDE_COOKIES`] the first-sorted names are forgotten. Kept only
    /// while the workspace has a record; [`Store::delete_workspace`] removes them with it.
    pub async fn learn_ide_cookie_names(&self, student: &StudentId, names: &[String]) -> Result<(), StoreError> {
        let known = self.ide_cookie_names(student).await?;
        let fresh: BTreeSet<&String> =
            names.iter().filter(|n| !n.is_empty() && n.len() <= MAX_IDE_COOKIE_NAME && !known.contains(*n)).collect();
        if fresh.is_empty() {
            return Ok(());
        }
        let mut kept: BTreeSet<&String> = known.iter().chain(fresh.iter().copied()).collect();
        while kept.len() > MAX_IDE_COOKIES {
            kept.pop_first();
        }
        let mut tx = self.pool.begin().await?;
        for gone in known.iter().filter(|n| !kept.contains(n)) {
            sqlx::query("DELETE FROM ide_cookies WHERE student_id = $1 AND name = $2")
                .bind(student.as_str())
                .bind(gone)
                .execute(&mut *tx)
                .await?;
        }
        for name in fresh.iter().filter(|n| kept.contains(*n)) {
            sqlx::query(
                "INSERT INTO ide_cookies (student_id, name) SELECT $1, $2 \
                 WHERE EXISTS (SELECT 1 FROM workspaces WHERE student_id = $3) ON CONFLICT (student_id, name) DO NOTHING",
            )
            .bind(student.as_str())
            .bind(name.as_str())
            .bind(student.as_str())
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        // Read again here and on the other replicas (their caches may hold the names without this one).
        self.route_changed(student).await;
        Ok(())
    }
}

/// The proxy's cookie memory is the store. A failure is logged (never the names: the IDE chose them) and the
/// request goes on with what is known.
#[async_trait::async_trait]
impl crate::proxy::CookieJar for Store {
    async fn names(&self, owner: &str) -> BTreeSet<String> {
        let Ok(student) = StudentId::parse(owner) else { return BTreeSet::new() };
        self.ide_cookie_names(&student).await.unwrap_or_else(|e| {
            tracing::warn!(student = %student, error = %e, "cannot read the IDE's cookie names");
            BTreeSet::new()
        })
    }

    async fn learn(&self, owner: &str, names: &[String]) {
        let Ok(student) = StudentId::parse(owner) else { return };
        if let Err(e) = self.learn_ide_cookie_names(&student, names).await {
            tracing::warn!(student = %student, error = %e, "cannot record the IDE's cookie names");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::{store, t};
    use super::super::NewEvent;
    use super::*;
    use crate::domain::{EventKind, StopReason};

    fn names(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[tokio::test]
    async fn names_are_kept_per_student_bounded_and_go_with_the_workspace() {
        let (store, _d) = store().await;
        let (alice, bob) = (StudentId::parse("alice").unwrap(), StudentId::parse("bob").unwrap());
        store.learn_ide_cookie_names(&alice, &names(&["_xsrf"])).await.unwrap();
        assert!(store.ide_cookie_names(&alice).await.unwrap().is_empty(), "no record, nothing kept");

        for s in [&alice, &bob] {
            store.mark_starting(s, t(0)).await.unwrap();
        }
        store.learn_ide_cookie_names(&alice, &names(&["_xsrf", "", &"x".repeat(129)])).await.unwrap();
        assert_eq!(store.ide_cookie_names(&alice).await.unwrap(), BTreeSet::from(["_xsrf".to_owned()]));
        assert!(store.ide_cookie_names(&bob).await.unwrap().is_empty(), "one IDE's names are not another's");

        // Past the bound the first-sorted names go, in the database too.
        let many: Vec<String> = (0..MAX_IDE_COOKIES + 5).map(|i| format!("c{i:03}")).collect();
        store.learn_ide_cookie_names(&alice, &many).await.unwrap();
        let kept = store.ide_cookie_names(&alice).await.unwrap();
        assert_eq!(kept.len(), MAX_IDE_COOKIES);
        assert!(kept.contains("_xsrf") || !kept.contains("c000"), "the first-sorted went first: {kept:?}");
        store.forget_route(&alice);
        assert_eq!(store.ide_cookie_names(&alice).await.unwrap(), kept, "the database holds what memory held");

        store.mark_stopped(&alice, StopReason::User, t(1)).await.unwrap();
        let deleted = NewEvent { kind: EventKind::Deleted, reason: None, message: "deleted" };
        assert!(store.delete_workspace(&alice, &deleted, t(2)).await.unwrap());
        assert!(store.ide_cookie_names(&alice).await.unwrap().is_empty(), "forgotten with the workspace");
        let rows = sqlx::query("SELECT COUNT(*) AS n FROM ide_cookies WHERE student_id = 'alice'")
            .fetch_one(&store.pool)
            .await
            .unwrap();
        assert_eq!(rows.try_get::<i64, _>("n").unwrap(), 0);
    }

    /// Two stores on one PostgreSQL database, as two replicas have (skipped without `WORKSPACED_TEST_POSTGRES`: on
    /// SQLite there is one process).
    #[tokio::test]
    async fn a_name_learnt_by_one_replica_reaches_the_other_whose_cache_held_the_old_names() {
        let Ok(server) = std::env::var("WORKSPACED_TEST_POSTGRES") else { return };
        let url = super::super::testing::fresh_postgres_database(&server).await;
        let (a, b) = (Store::connect(&url).await.unwrap(), Store::connect(&url).await.unwrap());
        let s = StudentId::parse("rep").unwrap();
        a.mark_starting(&s, t(0)).await.unwrap();
        assert!(b.ide_cookie_names(&s).await.unwrap().is_empty(), "b caches no names");
        a.learn_ide_cookie_names(&s, &names(&["_xsrf"])).await.unwrap();
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
        while !b.ide_cookie_names(&s).await.unwrap().contains("_xsrf") {
            assert!(tokio::time::Instant::now() < deadline, "b never saw the name a learnt");
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    }
}
