//! The route table: where each running IDE listens, for the proxy, cached in memory.

use sqlx::Row;

use super::{Store, StoreError};
use crate::domain::{IdeSecret, StudentId};

/// Where a running IDE listens, the secret it wants, and how the proxy forwards to it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    pub port: u16,
    pub secret: Option<IdeSecret>,
    /// Forward `/w/<id>/...` unchanged (`proxy_path = full`) instead of stripping `/w/<id>`; fixed at the start.
    pub full_path: bool,
    /// How the secret is presented to this IDE (its course's `ide_auth`); `None`: the service's setting.
    pub auth: Option<crate::domain::IdeAuth>,
}

impl Route {
    /// An IDE on `port` with `secret`, its path stripped (`proxy_path = strip`).
    pub fn new(port: u16, secret: Option<IdeSecret>) -> Self {
        Self { port, secret, full_path: false, auth: None }
    }
}

#[derive(Debug, Default)]
pub(super) struct Routes {
    ports: std::collections::HashMap<StudentId, Route>,
    /// The cookie names each IDE set (`ide_cookies.rs`), cached beside its route and forgotten with it.
    pub(super) cookies: std::collections::HashMap<StudentId, std::collections::BTreeSet<String>>,
    /// Bumped on every removal; a lookup that read the database before a removal does not cache its answer.
    pub(super) generation: u64,
}

impl Routes {
    pub(super) fn forget(&mut self, student: &StudentId) {
        self.ports.remove(student);
        self.cookies.remove(student);
        self.generation += 1;
    }

    pub(super) fn forget_all(&mut self) {
        self.ports.clear();
        self.cookies.clear();
        self.generation += 1;
    }
}

impl Store {
    /// The host port of the student's IDE and its secret while it runs (`None` otherwise). Answers from memory
    /// after the first lookup; every state change that can release the port forgets the answer first.
    pub async fn route(&self, student: &StudentId) -> Result<Option<Route>, StoreError> {
        let generation = {
            let routes = self.routes.lock().expect("routes lock");
            if let Some(route) = routes.ports.get(student) {
                return Ok(Some(route.clone()));
            }
            routes.generation
        };
        let row = sqlx::query(
            "SELECT host_port, ide_secret, CAST(proxy_full_path AS INTEGER) AS full_path, ide_auth FROM workspaces \
             WHERE student_id = $1 AND status = 'running'",
        )
        .bind(student.as_str())
        .fetch_optional(&self.pool)
        .await?;
        let Some(row) = row else { return Ok(None) };
        let port = row.try_get::<Option<i64>, _>("host_port")?.and_then(|p| u16::try_from(p).ok());
        let secret = row.try_get::<Option<String>, _>("ide_secret")?.and_then(|s: String| IdeSecret::parse(&s));
        let full_path = row.try_get::<i64, _>("full_path")? != 0;
        let Some(port) = port else { return Ok(None) };
        // An unreadable mode falls back to the service's (a secret presented the wrong way opens nothing).
        let auth = row.try_get::<Option<String>, _>("ide_auth")?.and_then(|a| crate::domain::IdeAuth::parse(&a).ok());
        let route = Route { port, secret, full_path, auth };
        let mut routes = self.routes.lock().expect("routes lock");
        if routes.generation == generation {
            routes.ports.insert(student.clone(), route.clone());
        }
        Ok(Some(route))
    }

    /// Forgets the student's route (before a stop, a failure, or any status change).
    pub fn forget_route(&self, student: &StudentId) {
        self.routes.lock().expect("routes lock").forget(student);
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::{store, t};
    use super::super::NewEvent;
    use super::*;
    use crate::domain::EventKind;

    #[tokio::test]
    async fn the_path_mode_of_a_start_is_kept_with_its_route_and_read_back_from_the_database() {
        let (store, _d) = store().await;
        let ev = NewEvent { kind: EventKind::Started, reason: None, message: "started" };
        for (id, full_path) in [("full", true), ("strip", false)] {
            let s = StudentId::parse(id).unwrap();
            store.mark_starting(&s, t(0)).await.unwrap();
            let route = Route { port: 40000, secret: None, full_path, auth: None };
            store.mark_running(&s, "c", &route, t(1), &ev).await.unwrap();
            assert_eq!(store.route(&s).await.unwrap(), Some(route.clone()));
            store.forget_route(&s);
            assert_eq!(store.route(&s).await.unwrap(), Some(route), "from the database, as after a restart");
        }
    }
}
