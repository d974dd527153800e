//! How many proxied requests and WebSockets each student has open, so one student cannot take every connection
//! of the service (thousands of WebSockets, a slowloris through the proxy). A slot is taken before forwarding and
//! given back when the exchange ends: the response body sent or dropped, the WebSocket closed.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use crate::domain::StudentId;

pub struct ConnectionLimits {
    max: usize,
    open: Mutex<HashMap<StudentId, usize>>,
}

/// One open exchange of a student; dropping it frees the slot.
pub struct Slot {
    limits: Arc<ConnectionLimits>,
    student: StudentId,
}

impl ConnectionLimits {
    pub fn new(max: usize) -> Arc<Self> {
        Arc::new(Self { max, open: Mutex::default() })
    }

    /// A slot for `student`, or `None` when the student already has `max` open.
    pub fn try_acquire(self: &Arc<Self>, student: &StudentId) -> Option<Slot> {
        let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        let n = open.entry(student.clone()).or_default();
        if *n >= self.max {
            return None;
        }
        *n += 1;
        Some(Slot { limits: self.clone(), student: student.clone() })
    }

    /// Exchanges the student has open now.
    pub fn open(&self, student: &StudentId) -> usize {
        self.open.lock().unwrap_or_else(|e| e.into_inner()).get(student).copied().unwrap_or(0)
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut open = self.limits.open.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(n) = open.get_mut(&self.student) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                open.remove(&self.student);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_student_gets_at_most_max_slots_and_a_freed_slot_can_be_taken_again() {
        let limits = ConnectionLimits::new(2);
        let (a, b) = (StudentId::parse("a").unwrap(), StudentId::parse("b").unwrap());
        let first = limits.try_acquire(&a).unwrap();
        let _second = limits.try_acquire(&a).unwrap();
        assert!(limits.try_acquire(&a).is_none(), "a third is refused");
        assert!(limits.try_acquire(&b).is_some(), "other students are not affected");
        drop(first);
        assert_eq!(limits.open(&a), 1);
        assert!(limits.try_acquire(&a).is_some());
    }
}
