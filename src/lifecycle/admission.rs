//! Admission control for starts: at most `max_concurrent_starts` starts talk to the engine at once (it serializes
//! much of its work anyway, and a burst of 200 starts would otherwise all time out together); the rest wait in a
//! bounded FIFO queue whose positions the status API shows. Only a full queue is refused.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};

use crate::domain::StudentId;

pub struct Admission {
    permits: Arc<Semaphore>,
    concurrency: usize,
    max_queued: usize,
    /// Waiting students with the signal that calls their start off (a stop of a queued workspace).
    waiting: Mutex<VecDeque<(StudentId, Arc<Notify>)>>,
    /// Moving average of recent start durations, in ms, for queue estimates.
    avg_start_ms: AtomicU64,
}

/// A place in the queue; leaving it (admitted or given up) removes the student from the queue.
pub struct Ticket<'a> {
    admission: &'a Admission,
    student: StudentId,
    cancel: Arc<Notify>,
}

impl Admission {
    pub fn new(concurrency: usize, max_queued: usize) -> Self {
        Self {
            permits: Arc::new(Semaphore::new(concurrency.max(1))),
            concurrency: concurrency.max(1),
            max_queued,
            waiting: Mutex::new(VecDeque::new()),
            avg_start_ms: AtomicU64::new(2000),
        }
    }

    /// A permit at once, when one is free and nobody waits.
    pub fn try_admit(&self) -> Option<OwnedSemaphorePermit> {
        if !self.waiting.lock().expect("queue lock").is_empty() {
            return None;
        }
        self.permits.clone().try_acquire_owned().ok()
    }

    /// Joins the queue, or `None` when it is full.
    pub fn enqueue(&self, student: &StudentId) -> Option<Ticket<'_>> {
        let mut q = self.waiting.lock().expect("queue lock");
        if q.len() >= self.max_queued {
            return None;
        }
        let cancel = Arc::new(Notify::new());
        q.push_back((student.clone(), cancel.clone()));
        Some(Ticket { admission: self, student: student.clone(), cancel })
    }

    /// Waits for a permit (FIFO: tokio's semaphore is fair), or `None` when the start was called off with
    /// [`Admission::cancel`] while it waited.
    /// The ticket stays in the queue (and keeps its place on show) until dropped.
    pub async fn admit(&self, ticket: &Ticket<'_>) -> Option<OwnedSemaphorePermit> {
        tokio::select! {
            p = self.permits.clone().acquire_owned() => Some(p.expect("semaphore never closed")),
            _ = ticket.cancelled() => None,
        }
    }

    /// Calls off the queued start of `student`, if there is one; returns whether there was.
    pub fn cancel(&self, student: &StudentId) -> bool {
        let q = self.waiting.lock().expect("queue lock");
        match q.iter().find(|(s, _)| s == student) {
            Some((_, n)) => {
                // A stored permit: the waiter sees it even if it has not started waiting yet.
                n.notify_one();
                true
            }
            None => false,
        }
    }

    /// 1-based position of a waiting student.
    pub fn position(&self, student: &StudentId) -> Option<usize> {
        self.waiting.lock().expect("queue lock").iter().position(|(s, _)| s == student).map(|p| p + 1)
    }

    pub fn queued(&self) -> usize {
        self.waiting.lock().expect("queue lock").len()
    }

    /// Starts under way right now.
    pub fn in_flight(&self) -> usize {
        self.concurrency - self.permits.available_permits()
    }

    /// Rough time until a student at `position` is ready.
    pub fn estimate(&self, position: usize) -> Duration {
        let rounds = position.div_ceil(self.concurrency) as u64 + 1;
        Duration::from_millis(rounds * self.avg_start_ms.load(Ordering::Relaxed))
    }

    /// Feeds the estimate with a finished start.
    pub fn record_start(&self, took: Duration) {
        let ms = took.as_millis() as u64;
        let old = self.avg_start_ms.load(Ordering::Relaxed);
        self.avg_start_ms.store((old * 4 + ms) / 5, Ordering::Relaxed);
    }
}

impl Ticket<'_> {
    /// Resolves when a stop called this start off (at once if it already did).
    pub async fn cancelled(&self) {
        self.cancel.notified().await
    }
}

impl Drop for Ticket<'_> {
    fn drop(&mut self) {
        let mut q = self.admission.waiting.lock().expect("queue lock");
        if let Some(i) = q.iter().position(|(s, _)| *s == self.student) {
            q.remove(i);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn waiters_get_positions_in_order_and_the_queue_is_bounded() {
        let a = Admission::new(1, 2);
        let held = a.try_admit().expect("first is admitted at once");
        let (x, y, z) =
            (StudentId::parse("x").unwrap(), StudentId::parse("y").unwrap(), StudentId::parse("z").unwrap());
        let tx = a.enqueue(&x).unwrap();
        let ty = a.enqueue(&y).unwrap();
        assert!(a.enqueue(&z).is_none(), "queue of 2 is full");
        assert_eq!((a.position(&x), a.position(&y)), (Some(1), Some(2)));
        assert!(a.try_admit().is_none());
        drop(ty);
        assert_eq!(a.position(&y), None, "giving up leaves the queue");
        drop(held);
        let _p = a.admit(&tx).await.expect("admitted");
        assert_eq!(a.queued(), 1, "a ticket keeps its place until dropped");
        drop(tx);
        assert_eq!(a.queued(), 0);
        assert_eq!(a.in_flight(), 1);
    }

    #[tokio::test]
    async fn a_cancelled_waiter_leaves_the_queue_without_a_permit() {
        let a = Admission::new(1, 4);
        let _held = a.try_admit().unwrap();
        let x = StudentId::parse("x").unwrap();
        let t = a.enqueue(&x).unwrap();
        assert!(a.cancel(&x));
        assert!(a.admit(&t).await.is_none());
        drop(t);
        assert_eq!(a.queued(), 0);
        assert!(!a.cancel(&x), "nothing left to cancel");
    }
}
