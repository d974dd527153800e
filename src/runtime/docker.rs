//! Docker implementation of [`Runtime`] via bollard. (Being written; see runtime/mod.rs for the contract.)

use std::time::Duration;

use async_trait::async_trait;

use super::{ContainerInfo, ContainerSpec, Runtime, RuntimeError};
use crate::domain::{InstanceId, StudentId};

/// Talks to the local Docker engine over its Unix socket (or `DOCKER_HOST`), API version negotiated.
pub struct DockerRuntime {
    instance: InstanceId,
    call_timeout: Duration,
}

impl DockerRuntime {
    /// Connects and negotiates the API version with the engine. `call_timeout` bounds every daemon call.
    pub async fn connect(instance: InstanceId, call_timeout: Duration) -> Result<Self, RuntimeError> {
        let _ = (&instance, call_timeout);
        todo!()
    }
}

#[async_trait]
impl Runtime for DockerRuntime {
    async fn ping(&self) -> Result<(), RuntimeError> {
        todo!()
    }
    async fn ensure_running(&self, _spec: &ContainerSpec) -> Result<ContainerInfo, RuntimeError> {
        todo!()
    }
    async fn stop(&self, _student: &StudentId, _grace: Duration) -> Result<(), RuntimeError> {
        todo!()
    }
    async fn remove_by_id(&self, _container_id: &str, _grace: Duration) -> Result<(), RuntimeError> {
        todo!()
    }
    async fn inspect(&self, _student: &StudentId) -> Result<Option<ContainerInfo>, RuntimeError> {
        todo!()
    }
    async fn list_owned(&self) -> Result<Vec<ContainerInfo>, RuntimeError> {
        todo!()
    }
}
