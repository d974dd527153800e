//! Leadership among replicas: one lease in the database says which replica runs the singleton loops (culler,
//! reconciler, usage, webhook delivery). The holder renews it every third of its time to live; a replica that
//! cannot renew stops acting once two thirds have passed, before anyone else may take it over. Each change of
//! holder increments the lease's fence, so two holders can never share a fence number. On SQLite (one process)
//! the one replica always leads.

use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

use crate::clock::Clock;
use crate::store::Store;

/// The lease's name in the `leases` table.
pub const SINGLETONS: &str = "singletons";

/// This replica's view of the lease.
pub struct Leadership {
    /// Always leads (one process on SQLite).
    solo: bool,
    held: AtomicBool,
    fence: AtomicI64,
    renewed: Mutex<Option<Instant>>,
    ttl: Duration,
    /// Who this replica is in the lease table.
    pub holder: String,
    changed: tokio::sync::watch::Sender<bool>,
}

impl Leadership {
    /// A replica that always leads.
    pub fn solo() -> Arc<Self> {
        Arc::new(Self::new(true, Duration::MAX, "solo".to_owned()))
    }

    /// A replica that leads while it holds the lease of `ttl`.
    pub fn shared(ttl: Duration) -> Arc<Self> {
        Arc::new(Self::new(false, ttl, format!("{}-{:08x}", hostname(), rand::random::<u32>())))
    }

    fn new(solo: bool, ttl: Duration, holder: String) -> Self {
        Self {
            solo,
            held: AtomicBool::new(solo),
            fence: AtomicI64::new(0),
            renewed: Mutex::new(None),
            ttl,
            holder,
            changed: tokio::sync::watch::channel(solo).0,
        }
    }

    /// Whether this replica may run the singleton loops now: it holds the lease and renewed it within two thirds
    /// of its time to live.
    pub fn leads(&self) -> bool {
        if self.solo {
            return true;
        }
        let fresh =
            self.renewed.lock().unwrap_or_else(|e| e.into_inner()).is_some_and(|t| t.elapsed() < self.ttl * 2 / 3);
        self.held.load(Ordering::SeqCst) && fresh
    }

    /// The fence of the lease as this replica last held it (0: never).
    pub fn fence(&self) -> i64 {
        self.fence.load(Ordering::SeqCst)
    }

    /// Changes whenever [`Self::leads`] does (checked at each renewal).
    pub fn subscribe(&self) -> tokio::sync::watch::Receiver<bool> {
        self.changed.subscribe()
    }

    fn record(&self, fence: Option<i64>) {
        if let Some(fence) = fence {
            *self.renewed.lock().unwrap_or_else(|e| e.into_inner()) = Some(Instant::now());
            let before = self.fence.swap(fence, Ordering::SeqCst);
            if before != fence {
                tracing::info!(fence, holder = %self.holder, "this replica now runs the singleton loops");
            }
        }
        self.held.store(fence.is_some(), Ordering::SeqCst);
        self.publish();
    }

    fn publish(&self) {
        let leads = self.leads();
        crate::metrics::leadership(leads, self.fence());
        self.changed.send_if_modified(|v| std::mem::replace(v, leads) != leads);
    }
}

/// The host's name, for telling replicas apart in the lease table.
fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().chars().filter(|c| c.is_ascii_alphanumeric() || *c == '-' || *c == '.').collect::<String>())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "replica".to_owned())
}

/// Takes and renews the lease until `shutdown`, then gives it up so another replica takes over at once.
pub async fn run(store: Store, leadership: Arc<Leadership>, clock: Arc<dyn Clock>, shutdown: CancellationToken) {
    if leadership.solo {
        return;
    }
    let every = leadership.ttl / 3;
    loop {
        match store.try_lease(SINGLETONS, &leadership.holder, clock.now(), leadership.ttl).await {
            Ok(fence) => leadership.record(fence),
            Err(e) => {
                tracing::warn!(error = %e, "cannot renew the lease; this replica stops leading when it runs out");
                leadership.publish();
            }
        }
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = tokio::time::sleep(every) => {}
        }
    }
    if leadership.held.swap(false, Ordering::SeqCst) {
        leadership.publish();
        if let Err(e) = store.release_lease(SINGLETONS, &leadership.holder).await {
            tracing::warn!(error = %e, "cannot give up the lease; another replica takes it when it runs out");
        }
    }
}

/// Runs `task` while this replica leads: started when it takes the lease, cancelled when it loses it.
pub async fn while_leading<F, Fut>(leadership: Arc<Leadership>, shutdown: CancellationToken, mut task: F)
where
    F: FnMut(CancellationToken) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let mut changes = leadership.subscribe();
    loop {
        while !leadership.leads() {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                r = changes.changed() => if r.is_err() { return },
            }
        }
        let stop = shutdown.child_token();
        let run = task(stop.clone());
        tokio::pin!(run);
        loop {
            tokio::select! {
                () = &mut run => break,
                r = changes.changed() => {
                    if r.is_err() || !leadership.leads() {
                        stop.cancel();
                        (&mut run).await;
                        break;
                    }
                }
            }
        }
        if shutdown.is_cancelled() {
            return;
        }
    }
}
