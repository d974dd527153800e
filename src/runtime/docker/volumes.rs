//! Named volumes on the engine, for `workspaced migrate --from-volumes` and doctor: list them, tell which
//! containers mount them, and read one as a tar stream through a short-lived helper container of our own.
//!
//! The helper is created and never started: the engine's archive endpoint (`GET /containers/{id}/archive`) mounts
//! a stopped container's volumes to read them, so no command runs, the image needs no tools, and it works the same
//! on a remote engine. The volume is mounted read-only with `nocopy` (an empty volume is never filled from the
//! image) on no network, and the helper carries a label of its own, not our managed-by label, so the reconciler
//! never mistakes it for a workspace.

use std::collections::HashMap;
use std::time::Duration;

use bollard::models::{ContainerCreateBody, HostConfig, Mount, MountType, MountVolumeOptions};
use bollard::query_parameters::{
    CreateContainerOptionsBuilder, DownloadFromContainerOptionsBuilder, ListContainersOptionsBuilder,
    RemoveContainerOptionsBuilder,
};
use futures_util::StreamExt;

use super::{classify, status_of, DockerRuntime};
use crate::runtime::{RuntimeError, LABEL_MANAGED_BY, LABEL_MANAGED_BY_VALUE};

/// Label on the helper containers (value: the volume read), so a leftover is recognisable and removable.
pub const LABEL_VOLUME_READER: &str = "workspaced.volume-reader";

/// Where the helper mounts the volume: a path no image has, so nothing of the image shows through.
const MOUNT_POINT: &str = "/.workspaced-volume";

/// A container that mounts a volume.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct VolumeUser {
    pub id: String,
    pub name: String,
    pub running: bool,
    /// Carries our managed-by label (a workspace of some instance, or one of our helpers).
    pub workspaced: bool,
}

/// A created (never started) helper container with one volume mounted read-only. Remove it with
/// [`VolumeReader::remove`]; a dropped reader leaves the container (labelled [`LABEL_VOLUME_READER`]).
#[derive(Debug)]
pub struct VolumeReader {
    id: String,
    volume: String,
}

impl VolumeReader {
    pub fn volume(&self) -> &str {
        &self.volume
    }
}

impl DockerRuntime {
    /// Names of every volume on the engine, sorted.
    pub async fn volume_names(&self) -> Result<Vec<String>, RuntimeError> {
        let answer = self
            .call("list volumes", self.call_timeout, |d| async move {
                d.list_volumes(None::<bollard::query_parameters::ListVolumesOptions>).await
            })
            .await?
            .map_err(classify)?;
        let mut names: Vec<String> = answer.volumes.unwrap_or_default().into_iter().map(|v| v.name).collect();
        names.sort();
        Ok(names)
    }

    /// Every container (running or not) that mounts `volume`.
    pub async fn volume_users(&self, volume: &str) -> Result<Vec<VolumeUser>, RuntimeError> {
        let filters = HashMap::from([("volume", vec![volume.to_owned()])]);
        let options = ListContainersOptionsBuilder::new().all(true).filters(&filters).build();
        let list = self
            .call("list containers", self.call_timeout, |d| async move { d.list_containers(Some(options)).await })
            .await?
            .map_err(classify)?;
        Ok(list
            .iter()
            .map(|c| VolumeUser {
                id: c.id.clone().unwrap_or_default(),
                name: c
                    .names
                    .as_ref()
                    .and_then(|n| n.first())
                    .map(|n| n.trim_start_matches('/').to_owned())
                    .unwrap_or_default(),
                running: c.state == Some(bollard::models::ContainerSummaryStateEnum::RUNNING),
                workspaced: c
                    .labels
                    .as_ref()
                    .and_then(|l| l.get(LABEL_MANAGED_BY))
                    .is_some_and(|v| v == LABEL_MANAGED_BY_VALUE),
            })
            .collect())
    }

    /// Creates the helper container for `volume` from `image` (which must be present; never pulled).
    pub async fn open_volume(&self, volume: &str, image: &str) -> Result<VolumeReader, RuntimeError> {
        let suffix: u64 = rand::random();
        let name = format!("workspaced-volume-reader-{suffix:016x}");
        let body = ContainerCreateBody {
            image: Some(image.to_owned()),
            labels: Some(HashMap::from([(LABEL_VOLUME_READER.to_owned(), volume.to_owned())])),
            network_disabled: Some(true),
            host_config: Some(HostConfig {
                mounts: Some(vec![Mount {
                    target: Some(MOUNT_POINT.to_owned()),
                    source: Some(volume.to_owned()),
                    typ: Some(MountType::VOLUME),
                    read_only: Some(true),
                    volume_options: Some(MountVolumeOptions { no_copy: Some(true), ..Default::default() }),
                    ..Default::default()
                }]),
                network_mode: Some("none".to_owned()),
                ..Default::default()
            }),
            ..Default::default()
        };
        let options = CreateContainerOptionsBuilder::new().name(&name).build();
        let answer =
            self.call("create container", self.call_timeout, |d| async move {
                d.create_container(Some(options), body).await
            })
            .await?;
        match answer {
            Ok(created) => Ok(VolumeReader { id: created.id, volume: volume.to_owned() }),
            Err(e) if status_of(&e) == Some(404) => Err(RuntimeError::ImageMissing(image.to_owned())),
            Err(e) => Err(classify(e)),
        }
    }

    /// The volume's content as a tar stream (entries `./`, `./a`, ...), chunk by chunk. Each chunk must arrive
    /// within the call timeout; the whole stream has no deadline (a volume can be large).
    pub async fn read_volume<'a>(&'a self, reader: &'a VolumeReader) -> Result<VolumeStream<'a>, RuntimeError> {
        let docker = self.client(tokio::time::Instant::now() + self.call_timeout).await?;
        let options = DownloadFromContainerOptionsBuilder::new().path(&format!("{MOUNT_POINT}/.")).build();
        Ok(VolumeStream {
            inner: docker.download_from_container(&reader.id, Some(options)).boxed(),
            idle: self.call_timeout,
        })
    }

    /// Removes the helper container (the volume stays, as always).
    pub async fn close_volume(&self, reader: VolumeReader) -> Result<(), RuntimeError> {
        let options = RemoveContainerOptionsBuilder::new().force(true).build();
        let id = reader.id.clone();
        match self
            .call(
                "remove container",
                self.call_timeout,
                |d| async move { d.remove_container(&id, Some(options)).await },
            )
            .await?
        {
            Ok(()) => Ok(()),
            Err(e) if status_of(&e) == Some(404) => Ok(()),
            Err(e) => Err(classify(e)),
        }
    }
}

/// A volume's tar stream; see [`DockerRuntime::read_volume`].
pub struct VolumeStream<'a> {
    inner: futures_util::stream::BoxStream<'a, Result<hyper::body::Bytes, bollard::errors::Error>>,
    idle: Duration,
}

impl VolumeStream<'_> {
    /// The next chunk, `None` at the end.
    pub async fn next_chunk(&mut self) -> Option<Result<hyper::body::Bytes, RuntimeError>> {
        match tokio::time::timeout(self.idle, self.inner.next()).await {
            Ok(chunk) => chunk.map(|c| c.map_err(classify)),
            Err(_) => Some(Err(RuntimeError::Unavailable(format!(
                "reading the volume: no data from the engine for {:?}",
                self.idle
            )))),
        }
    }
}
