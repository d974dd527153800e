//! Changes told to every replica on one PostgreSQL database (`LISTEN`/`NOTIFY`): a workspace whose route changed,
//! so each proxy forgets its cached port, and a new event, so each event stream (SSE, webhook) wakes up. On SQLite
//! there is one process and nothing to tell.

use std::sync::{Arc, Weak};
use std::time::Duration;

use sqlx::Row;

use super::{routes::Routes, Backend, Store, StoreError};
use crate::domain::StudentId;

const ROUTES: &str = "workspaced_routes";
const EVENTS: &str = "workspaced_events";

impl Store {
    /// After a status change of `student` committed: forget the route here, and tell the other replicas.
    pub(super) async fn route_changed(&self, student: &StudentId) {
        self.forget_route(student);
        self.tell(ROUTES, student.as_str()).await;
    }

    /// After an event committed: wake the listeners here and on the other replicas.
    pub(super) async fn announce_all(&self, id: i64) {
        self.announce(id);
        self.tell(EVENTS, &id.to_string()).await;
    }

    async fn tell(&self, channel: &str, payload: &str) {
        if self.backend != Backend::Postgres {
            return;
        }
        // `pg_notify` returns `void`, which the `Any` driver cannot read: select a number.
        let sent = sqlx::query("SELECT 1 AS sent FROM (SELECT pg_notify($1, $2)) AS n")
            .bind(channel)
            .bind(payload)
            .execute(&self.pool)
            .await;
        if let Err(e) = sent {
            // The others' caches then stay as they are until their next miss; the write itself is done.
            tracing::warn!(channel, error = %e, "cannot tell the other replicas of a change");
        }
    }

    /// Listens for the other replicas' changes, for as long as this store is in use.
    pub(super) async fn listen(&self, url: &str) -> Result<(), StoreError> {
        let mut listener = subscribe(url).await?;
        let routes = Arc::downgrade(&self.routes);
        let store = WeakStore { routes, latest: Arc::downgrade(&self.latest_event), pool: self.pool.clone() };
        let url = url.to_owned();
        tokio::spawn(async move {
            loop {
                match listener.try_recv().await {
                    Ok(Some(n)) => {
                        if !store.apply(n.channel(), n.payload()) {
                            return; // the store is gone
                        }
                        continue;
                    }
                    Ok(None) => tracing::warn!("lost the change notifications of the other replicas; reconnecting"),
                    Err(e) => tracing::warn!(error = %e, "cannot listen for the other replicas' changes; reconnecting"),
                }
                // The cached routes stay meanwhile: the proxy keeps serving running workspaces while the database is
                // away, and a route that went stale opens no other IDE (each carries the secret of its own start).
                listener = loop {
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    if store.routes.strong_count() == 0 {
                        return;
                    }
                    match subscribe(&url).await {
                        Ok(l) => break l,
                        Err(e) => tracing::debug!(error = %e, "cannot listen again yet"),
                    }
                };
                // What was said in between is lost: forget every route and look at the newest event again.
                if !store.resync().await {
                    return;
                }
                tracing::info!("listening to the other replicas' changes again");
            }
        });
        Ok(())
    }
}

/// A connection that listens on both channels.
async fn subscribe(url: &str) -> Result<sqlx::postgres::PgListener, StoreError> {
    let mut listener = sqlx::postgres::PgListener::connect(url).await?;
    listener.listen_all([ROUTES, EVENTS]).await?;
    Ok(listener)
}

/// What the listener needs of a store, without keeping it alive.
struct WeakStore {
    routes: Weak<std::sync::Mutex<Routes>>,
    latest: Weak<tokio::sync::watch::Sender<i64>>,
    pool: sqlx::AnyPool,
}

impl WeakStore {
    /// Applies one notification; false when the store is gone.
    fn apply(&self, channel: &str, payload: &str) -> bool {
        let (Some(routes), Some(latest)) = (self.routes.upgrade(), self.latest.upgrade()) else { return false };
        match channel {
            ROUTES => {
                if let Ok(student) = StudentId::parse(payload) {
                    routes.lock().expect("routes lock").forget(&student);
                }
            }
            EVENTS => {
                if let Ok(id) = payload.parse::<i64>() {
                    latest.send_if_modified(|v| std::mem::replace(v, (*v).max(id)) != (*v).max(id));
                }
            }
            _ => {}
        }
        true
    }

    async fn resync(&self) -> bool {
        let Some(routes) = self.routes.upgrade() else { return false };
        routes.lock().expect("routes lock").forget_all();
        let newest = sqlx::query("SELECT COALESCE(MAX(id), 0) AS m FROM events").fetch_one(&self.pool).await;
        if let (Ok(row), Some(latest)) = (newest, self.latest.upgrade()) {
            if let Ok(id) = row.try_get::<i64, _>("m") {
                latest.send_if_modified(|v| std::mem::replace(v, (*v).max(id)) != (*v).max(id));
            }
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::{fresh_postgres_database, t};
    use super::super::{NewEvent, Store};
    use crate::domain::{EventKind, StopReason, StudentId};
    use std::time::Duration;

    /// Two stores on one PostgreSQL database, as two replicas have (the SQLite run has no second process to tell).
    async fn two_replicas() -> Option<(Store, Store)> {
        let server = std::env::var("WORKSPACED_TEST_POSTGRES").ok()?;
        let url = fresh_postgres_database(&server).await;
        Some((Store::connect(&url).await.unwrap(), Store::connect(&url).await.unwrap()))
    }

    #[tokio::test]
    async fn a_change_on_one_replica_empties_the_others_route_cache_and_wakes_its_event_stream() {
        let Some((a, b)) = two_replicas().await else { return };
        let s = StudentId::parse("cached").unwrap();
        let started = NewEvent { kind: EventKind::Started, reason: None, message: "started" };
        a.mark_starting(&s, t(0)).await.unwrap();
        let route = crate::store::Route { host: Some("10.0.1.5".into()), ..crate::store::Route::new(40001, None) };
        a.mark_running(&s, "c1", &route, t(1), &started).await.unwrap();
        let mut events = b.subscribe_events();
        let seen = *events.borrow_and_update();
        assert_eq!(b.route(&s).await.unwrap(), Some(route), "b caches the route, host and port");

        // Replica a's reconciler records another host; b forgets the cached one.
        a.set_route_host(&s, "c1", Some("10.0.1.6")).await.unwrap();
        let mut moved = false;
        for _ in 0..200 {
            if b.route(&s).await.unwrap().and_then(|r| r.host).as_deref() == Some("10.0.1.6") {
                moved = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert!(moved, "b still routes to the old host");

        // Replica a stops the workspace; b learns it without reading the row again.
        a.mark_stopping(&s, StopReason::User, t(2)).await.unwrap();
        a.mark_stopped(&s, StopReason::User, t(3)).await.unwrap();
        let mut forgotten = false;
        for _ in 0..200 {
            if b.route(&s).await.unwrap().is_none() {
                forgotten = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert!(forgotten, "b still routes to the stopped workspace's port");
        let woke = tokio::time::timeout(Duration::from_secs(10), events.changed()).await;
        assert!(woke.is_ok(), "b's event stream was not woken by a's event");
        assert!(*events.borrow() > seen);
    }
}
