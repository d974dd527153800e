//! One lock per student: operations on one student run one at a time, different students in parallel.
//! Entries are dropped when nobody holds or waits for them, so the map stays as small as the work in flight.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio::sync::{Mutex as AsyncMutex, OwnedMutexGuard};

use crate::domain::StudentId;

/// Serializes the operations on one student. The lifecycle holds one behind this trait, so a lock shared by
/// several processes (a database lock, for replicas) can stand in for the in-process one.
#[async_trait::async_trait]
pub trait StudentLocker: Send + Sync {
    /// Waits for the student's lock; it is held until the guard is dropped.
    async fn lock(&self, student: &StudentId) -> LockGuard;
    /// The lock if nobody holds it now (the reconciler skips students that are busy: their operation is the one
    /// making things right).
    async fn try_lock(&self, student: &StudentId) -> Option<LockGuard>;
    /// How many operations hold or wait for this student's lock (best effort: for tests and metrics).
    fn contenders(&self, student: &StudentId) -> usize;
    /// The installation-wide lock held around admission's capacity check and the status write after it, so that
    /// `max_running` is a total over every replica.
    async fn capacity(&self) -> LockGuard;
    /// One of `n` start slots shared by every replica, if one is free now, so that `max_concurrent_starts` is a
    /// total; `None` when all are taken.
    async fn try_start_slot(&self, n: usize) -> Option<LockGuard>;
}

/// Held while one operation on a student runs; dropping it releases the lock.
pub struct LockGuard(#[allow(dead_code)] Box<dyn Send + Sync>);

impl LockGuard {
    pub fn new(inner: impl Send + Sync + 'static) -> Self {
        Self(Box::new(inner))
    }
}

type LockMap = Arc<Mutex<HashMap<StudentId, Arc<AsyncMutex<()>>>>>;

/// One lock per student in this process: different students run in parallel.
#[derive(Default)]
pub struct StudentLocks {
    map: LockMap,
    capacity: Arc<AsyncMutex<()>>,
}

/// The in-process guard: forgets the student's entry when nobody else holds or waits for it.
struct Held {
    map: LockMap,
    student: StudentId,
    guard: Option<OwnedMutexGuard<()>>,
}

fn entry(map: &LockMap, student: &StudentId) -> Arc<AsyncMutex<()>> {
    map.lock().unwrap_or_else(|e| e.into_inner()).entry(student.clone()).or_default().clone()
}

/// Forgets the student's mutex when only the map holds it: nobody runs or waits.
fn forget_if_idle(map: &LockMap, student: &StudentId) {
    let mut map = map.lock().unwrap_or_else(|e| e.into_inner());
    if map.get(student).is_some_and(|m| Arc::strong_count(m) == 1) {
        map.remove(student);
    }
}

#[async_trait::async_trait]
impl StudentLocker for StudentLocks {
    async fn lock(&self, student: &StudentId) -> LockGuard {
        let guard = entry(&self.map, student).lock_owned().await;
        LockGuard::new(Held { map: self.map.clone(), student: student.clone(), guard: Some(guard) })
    }

    async fn try_lock(&self, student: &StudentId) -> Option<LockGuard> {
        self.try_lock_now(student)
    }

    fn contenders(&self, student: &StudentId) -> usize {
        self.map.lock().unwrap_or_else(|e| e.into_inner()).get(student).map_or(0, |m| Arc::strong_count(m) - 1)
    }

    async fn capacity(&self) -> LockGuard {
        LockGuard::new(self.capacity.clone().lock_owned().await)
    }

    /// One process: admission's own semaphore already is the total.
    async fn try_start_slot(&self, _n: usize) -> Option<LockGuard> {
        Some(LockGuard::new(()))
    }
}

impl StudentLocks {
    /// The lock if nobody in this process holds it now.
    pub fn try_lock_now(&self, student: &StudentId) -> Option<LockGuard> {
        match entry(&self.map, student).try_lock_owned() {
            Ok(guard) => {
                Some(LockGuard::new(Held { map: self.map.clone(), student: student.clone(), guard: Some(guard) }))
            }
            Err(_) => {
                forget_if_idle(&self.map, student);
                None
            }
        }
    }

    /// Number of students with an operation running or waiting (for tests and metrics).
    pub fn in_use(&self) -> usize {
        self.map.lock().unwrap_or_else(|e| e.into_inner()).len()
    }
}

/// The lock of replicas sharing one PostgreSQL database: the in-process lock first (so one process asks the database
/// once per student at a time), then the student's advisory lock in the database, held until the guard is dropped.
pub struct SharedLocks {
    local: StudentLocks,
    store: crate::store::Store,
    instance: crate::domain::InstanceId,
}

impl SharedLocks {
    pub fn new(store: crate::store::Store, instance: crate::domain::InstanceId) -> Self {
        Self { local: StudentLocks::default(), store, instance }
    }

    /// The advisory lock key of a student: 64 bits of a hash of the instance and the id, so two installations on
    /// one database never share a lock.
    fn key(&self, student: &StudentId) -> i64 {
        key_of(&format!("workspaced-lock\0{}\0{}", self.instance, student))
    }

    /// The key of an installation-wide lock (a prefix no student key has).
    fn admission_key(&self, name: &str) -> i64 {
        key_of(&format!("workspaced-admission\0{}\0{}", self.instance, name))
    }

    /// Waits for the advisory lock `key`, retrying while the database is away: what it guards must not run without it.
    async fn advisory_lock(&self, key: i64, what: &str) -> crate::store::AdvisoryLock {
        let mut pause = std::time::Duration::from_millis(50);
        loop {
            match self.store.advisory_lock(key).await {
                Ok(held) => return held,
                Err(e) => {
                    tracing::warn!(lock = what, error = %e, "cannot take a lock in the database; retrying");
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(std::time::Duration::from_secs(2));
                }
            }
        }
    }
}

/// 64 bits of a hash of `name`: an advisory lock key.
fn key_of(name: &str) -> i64 {
    let hash = blake3::hash(name.as_bytes());
    let mut first = [0u8; 8];
    first.copy_from_slice(&hash.as_bytes()[..8]);
    i64::from_le_bytes(first)
}

#[async_trait::async_trait]
impl StudentLocker for SharedLocks {
    async fn lock(&self, student: &StudentId) -> LockGuard {
        let local = self.local.lock(student).await;
        // Nothing may run on the student without the lock: wait for the database.
        let shared = self.advisory_lock(self.key(student), "student").await;
        LockGuard::new((local, shared))
    }

    async fn try_lock(&self, student: &StudentId) -> Option<LockGuard> {
        let local = self.local.try_lock_now(student)?;
        match self.store.try_advisory_lock(self.key(student)).await {
            Ok(Some(shared)) => Some(LockGuard::new((local, shared))),
            Ok(None) => None,
            Err(e) => {
                tracing::warn!(student = %student, error = %e, "cannot ask the database for the student's lock");
                None
            }
        }
    }

    fn contenders(&self, student: &StudentId) -> usize {
        self.local.contenders(student)
    }

    async fn capacity(&self) -> LockGuard {
        let local = self.local.capacity().await;
        let shared = self.advisory_lock(self.admission_key("capacity"), "capacity").await;
        LockGuard::new((local, shared))
    }

    async fn try_start_slot(&self, n: usize) -> Option<LockGuard> {
        // From a random slot on, so that replicas do not all ask for slot 0 first.
        let first = rand::random::<u32>() as usize % n.max(1);
        let keys: Vec<i64> =
            (0..n.max(1)).map(|i| self.admission_key(&format!("start-slot\0{}", (first + i) % n.max(1)))).collect();
        match self.store.try_advisory_lock_any(&keys).await {
            Ok(held) => held.map(|(_, lock)| LockGuard::new(lock)),
            Err(e) => {
                tracing::warn!(error = %e, "cannot ask the database for a start slot");
                None
            }
        }
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        drop(self.guard.take());
        forget_if_idle(&self.map, &self.student);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    #[tokio::test]
    async fn one_student_at_a_time_and_the_map_empties() {
        let locks = Arc::new(StudentLocks::default());
        let inside = Arc::new(AtomicUsize::new(0));
        let max = Arc::new(AtomicUsize::new(0));
        let s = StudentId::parse("a").unwrap();
        let tasks: Vec<_> = (0..8)
            .map(|_| {
                let (locks, inside, max, s) = (locks.clone(), inside.clone(), max.clone(), s.clone());
                tokio::spawn(async move {
                    let _g = locks.lock(&s).await;
                    let n = inside.fetch_add(1, Ordering::SeqCst) + 1;
                    max.fetch_max(n, Ordering::SeqCst);
                    tokio::time::sleep(Duration::from_millis(5)).await;
                    inside.fetch_sub(1, Ordering::SeqCst);
                })
            })
            .collect();
        for t in tasks {
            t.await.unwrap();
        }
        assert_eq!(max.load(Ordering::SeqCst), 1);
        assert_eq!(locks.in_use(), 0);
    }

    #[tokio::test]
    async fn different_students_do_not_wait_for_each_other() {
        let locks = StudentLocks::default();
        let _a = locks.lock(&StudentId::parse("a").unwrap()).await;
        let b = tokio::time::timeout(Duration::from_millis(100), locks.lock(&StudentId::parse("b").unwrap())).await;
        assert!(b.is_ok());
    }
}
