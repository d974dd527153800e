//! The route table: where each running IDE listens, for the proxy, cached in memory.

use sqlx::Row;

use super::{Store, StoreError};
use crate::domain::StudentId;

#[derive(Debug, Default)]
pub(super) struct Routes {
    ports: std::collections::HashMap<StudentId, u16>,
    /// Bumped on every removal; a lookup that read the database before a removal does not cache its answer.
    generation: u64,
}

impl Store {
    /// The host port of the student's IDE while it runs (`None` otherwise). Answers from memory after the first
    /// lookup; every state change that can release the port forgets the answer first.
    pub async fn route(&self, student: &StudentId) -> Result<Option<u16>, StoreError> {
        let generation = {
            let routes = self.routes.lock().expect("routes lock");
            if let Some(port) = routes.ports.get(student) {
                return Ok(Some(*port));
            }
            routes.generation
        };
        let row = sqlx::query("SELECT host_port FROM workspaces WHERE student_id = ? AND status = 'running'")
            .bind(student.as_str())
            .fetch_optional(&self.pool)
            .await?;
        let port = row
            .map(|r| r.try_get::<Option<i64>, _>("host_port"))
            .transpose()?
            .flatten()
            .and_then(|p| u16::try_from(p).ok());
        if let Some(port) = port {
            let mut routes = self.routes.lock().expect("routes lock");
            if routes.generation == generation {
                routes.ports.insert(student.clone(), port);
            }
        }
        Ok(port)
    }

    /// Forgets the student's route (before a stop, a failure, or any status change).
    pub fn forget_route(&self, student: &StudentId) {
        let mut routes = self.routes.lock().expect("routes lock");
        routes.ports.remove(student);
        routes.generation += 1;
    }
}
