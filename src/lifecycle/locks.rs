//! One lock per student: operations on one student run one at a time, different students in parallel.
//! Entries are dropped when nobody holds or waits for them, so the map stays as small as the work in flight.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio::sync::{Mutex as AsyncMutex, OwnedMutexGuard};

use crate::domain::StudentId;

#[derive(Default)]
pub struct StudentLocks {
    map: Mutex<HashMap<StudentId, Arc<AsyncMutex<()>>>>,
}

/// Held while one operation on a student runs.
pub struct StudentGuard<'a> {
    locks: &'a StudentLocks,
    student: StudentId,
    guard: Option<OwnedMutexGuard<()>>,
}

impl StudentLocks {
    pub async fn lock(&self, student: &StudentId) -> StudentGuard<'_> {
        let m = {
            let mut map = self.map.lock().expect("lock map");
            map.entry(student.clone()).or_default().clone()
        };
        let guard = m.lock_owned().await;
        StudentGuard { locks: self, student: student.clone(), guard: Some(guard) }
    }

    /// The lock if nobody holds it now (the reconciler skips students that are busy: their operation is the one
    /// making things right).
    pub fn try_lock(&self, student: &StudentId) -> Option<StudentGuard<'_>> {
        let m = {
            let mut map = self.map.lock().expect("lock map");
            map.entry(student.clone()).or_default().clone()
        };
        match m.try_lock_owned() {
            Ok(guard) => Some(StudentGuard { locks: self, student: student.clone(), guard: Some(guard) }),
            Err(_) => {
                // Forget the entry again if we were the only other holder of it.
                let mut map = self.map.lock().expect("lock map");
                if map.get(student).is_some_and(|m| Arc::strong_count(m) == 1) {
                    map.remove(student);
                }
                None
            }
        }
    }

    /// How many operations hold or wait for this student's lock.
    pub fn contenders(&self, student: &StudentId) -> usize {
        self.map.lock().expect("lock map").get(student).map_or(0, |m| Arc::strong_count(m) - 1)
    }

    /// Number of students with an operation running or waiting (for tests and metrics).
    pub fn in_use(&self) -> usize {
        self.map.lock().expect("lock map").len()
    }
}

impl Drop for StudentGuard<'_> {
    fn drop(&mut self) {
        drop(self.guard.take());
        let mut map = self.locks.map.lock().expect("lock map");
        // Only the map holds the mutex now: nobody runs or waits, so forget it.
        if map.get(&self.student).is_some_and(|m| Arc::strong_count(m) == 1) {
            map.remove(&self.student);
        }
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
