//! A read-only view of the store. The lifecycle hands this out; it is the only door to the store that HTTP
//! handlers, the proxy and the loops get, so nothing but the lifecycle can change a workspace.

use super::{Event, Store, StoreError, WorkspaceRecord};
use crate::auth::Generation;
use crate::domain::{Status, StudentId};

/// Reads, and only reads. Cheap to clone (the store's pool is shared), so a stream may keep one.
#[derive(Clone)]
pub struct Reads {
    pub(super) store: Store,
}

impl Store {
    /// This store, read-only.
    pub fn reads(&self) -> Reads {
        Reads { store: self.clone() }
    }
}

impl Reads {
    pub async fn get(&self, student: &StudentId) -> Result<Option<WorkspaceRecord>, StoreError> {
        self.store.get(student).await
    }

    /// All workspaces, or those with one status, ordered by student id.
    pub async fn list(&self, status: Option<Status>) -> Result<Vec<WorkspaceRecord>, StoreError> {
        self.store.list(status).await
    }

    /// The host port of the student's IDE while it runs (from memory after the first lookup).
    pub async fn route(&self, student: &StudentId) -> Result<Option<super::Route>, StoreError> {
        self.store.route(student).await
    }

    /// Events after `after_id`, oldest first, optionally for one student.
    pub async fn events(
        &self,
        student: Option<&StudentId>,
        after_id: i64,
        limit: i64,
    ) -> Result<Vec<Event>, StoreError> {
        self.store.events(student, after_id, limit).await
    }

    /// Changes whenever an event is recorded (its value: the newest event id).
    pub fn subscribe_events(&self) -> tokio::sync::watch::Receiver<i64> {
        self.store.subscribe_events()
    }

    pub async fn ping(&self) -> Result<(), StoreError> {
        self.store.ping().await
    }

    /// The id and role of the unrevoked API key with this hash.
    pub async fn find_api_key(&self, key_hash: &str) -> Result<Option<(String, crate::domain::Role)>, StoreError> {
        self.store.find_api_key(key_hash).await
    }

    pub async fn session_generation(&self, student: &StudentId) -> Result<Generation, StoreError> {
        self.store.session_generation(student).await
    }

    pub async fn get_course(
        &self,
        course: &crate::domain::CourseId,
    ) -> Result<Option<super::CourseRecord>, StoreError> {
        self.store.get_course(course).await
    }

    pub async fn list_courses(&self) -> Result<Vec<super::CourseRecord>, StoreError> {
        self.store.list_courses().await
    }

    /// Workspaces per course, and the busy ones among them.
    pub async fn course_counts(&self) -> Result<Vec<(crate::domain::CourseId, super::CourseCounts)>, StoreError> {
        self.store.course_counts().await
    }

    /// The workspaces of one course, by student id.
    pub async fn list_in_course(&self, course: &crate::domain::CourseId) -> Result<Vec<WorkspaceRecord>, StoreError> {
        self.store.list_in_course(course).await
    }

    pub async fn job_state(&self, name: &str) -> Result<i64, StoreError> {
        self.store.job_state(name).await
    }
}
