//! The route table: where each running IDE listens, for the proxy, cached in memory.

use sqlx::Row;

use super::{Store, StoreError};
use crate::domain::{IdeSecret, StudentId};

/// Where a running IDE listens, the secret it wants, and how the proxy forwards to it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    /// The node the port is published on (a Swarm task's node address, checked before it was stored); `None`:
    /// 127.0.0.1, this machine.
    pub host: Option<String>,
    pub port: u16,
    pub secret: Option<IdeSecret>,
    /// Forward `/w/<id>/...` unchanged (`proxy_path = full`) instead of stripping `/w/<id>`; fixed at the start.
    pub full_path: bool,
    /// How the secret is presented to this IDE (its course's `ide_auth`); `None`: the service's setting.
    pub auth: Option<crate::domain::IdeAuth>,
}

impl Route {
    /// An IDE on 127.0.0.1:`port` with `secret`, its path stripped (`proxy_path = strip`).
    pub fn new(port: u16, secret: Option<IdeSecret>) -> Self {
        Self { host: None, port, secret, full_path: false, auth: None }
    }

    /// The host to connect to: the node's address, or 127.0.0.1.
    pub fn upstream_host(&self) -> &str {
        self.host.as_deref().unwrap_or(crate::domain::LOOPBACK)
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
    /// The host and port of the student's IDE and its secret while it runs (`None` otherwise). Answers from memory
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
            "SELECT host_port, host_addr, ide_secret, CAST(proxy_full_path AS INTEGER) AS full_path, ide_auth \
             FROM workspaces WHERE student_id = $1 AND status = 'running'",
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
        let host = row.try_get::<Option<String>, _>("host_addr")?;
        let route = Route { host, port, secret, full_path, auth };
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
            let route = Route { host: None, port: 40000, secret: None, full_path, auth: None };
            store.mark_running(&s, "c", &route, t(1), &ev).await.unwrap();
            assert_eq!(store.route(&s).await.unwrap(), Some(route.clone()));
            store.forget_route(&s);
            assert_eq!(store.route(&s).await.unwrap(), Some(route), "from the database, as after a restart");
        }
    }

    /// On both stores (PostgreSQL with `WORKSPACED_TEST_POSTGRES`): a start's host is kept with its port, read back
    /// through the cache and from the database, listed for the IDE polls, moved by the reconciler's write, and gone
    /// with the stop.
    #[tokio::test]
    async fn a_routes_host_is_stored_cached_read_back_and_cleared_with_the_port() {
        let (store, _d) = store().await;
        let ev = NewEvent { kind: EventKind::Started, reason: None, message: "started" };
        let s = StudentId::parse("ada").unwrap();
        store.mark_starting(&s, t(0)).await.unwrap();
        let route = Route { host: Some("10.0.1.5".into()), ..Route::new(40000, None) };
        store.mark_running(&s, "svc-1", &route, t(1), &ev).await.unwrap();
        assert_eq!(store.route(&s).await.unwrap(), Some(route.clone()));
        assert_eq!(store.route(&s).await.unwrap().unwrap().upstream_host(), "10.0.1.5", "from the cache");
        store.forget_route(&s);
        assert_eq!(store.route(&s).await.unwrap(), Some(route.clone()), "from the database, as after a restart");
        let rec = store.get(&s).await.unwrap().unwrap();
        assert_eq!((rec.host_addr.as_deref(), rec.host_port), (Some("10.0.1.5"), Some(40000)));
        let listed = store.running_ports().await.unwrap();
        let expected =
            super::super::RunningPort { student: s.clone(), port: Some(40000), host: Some("10.0.1.5".into()) };
        assert_eq!(listed, vec![expected]);

        // The reconciler moves it, only for the container that runs; the cached route goes with the write.
        store.set_route_host(&s, "svc-other", Some("10.0.9.9")).await.unwrap();
        assert_eq!(store.route(&s).await.unwrap().unwrap().host.as_deref(), Some("10.0.1.5"), "another container");
        store.set_route_host(&s, "svc-1", Some("localhost")).await.unwrap();
        assert_eq!(store.route(&s).await.unwrap().unwrap().host.as_deref(), Some("localhost"));
        store.set_route_host(&s, "svc-1", None).await.unwrap();
        assert_eq!(store.route(&s).await.unwrap().unwrap().upstream_host(), "127.0.0.1");

        store.set_route_host(&s, "svc-1", Some("10.0.1.5")).await.unwrap();
        store.mark_stopped(&s, crate::domain::StopReason::User, t(2)).await.unwrap();
        assert_eq!(store.route(&s).await.unwrap(), None);
        let rec = store.get(&s).await.unwrap().unwrap();
        assert_eq!((rec.host_addr, rec.host_port), (None, None), "cleared with the port");
        store.set_route_host(&s, "svc-1", Some("10.0.1.5")).await.unwrap();
        assert_eq!(store.get(&s).await.unwrap().unwrap().host_addr, None, "no host for a stopped workspace");
    }
}
