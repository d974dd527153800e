//! The Swarm service of a workspace, built from a [`ContainerSpec`]: pure, no engine calls.
//!
//! What Swarm's API 1.41 (Docker 20.10) can and cannot express, compared with `docker.rs`'s container:
//! - limits on CPU, memory and pids (`Resources.Limits.Pids` is new in 1.41) and reservations of CPU and memory, so
//!   the scheduler places by them: memory reserved whole (a node is never promised more memory than it has, so the
//!   kernel's OOM killer is not what decides), CPU a share of the limit (`swarm_cpu_reservation`: an IDE mostly
//!   idles, and CPU time is shared, not lost, when several want it at once);
//! - capabilities dropped (`CapabilityDrop`, 1.41), the open-files limit (`Ulimits`, 1.41), a read-only root, a
//!   tmpfs at `/tmp` with its size and mode, no init, the user, the bind mount;
//! - **no swap limit**: a service cannot set `MemorySwap`, so the engine gives the container as much swap as memory
//!   (swap off on the node makes this moot);
//! - **no `no-new-privileges`**: `Privileges.NoNewPrivileges` came with API 1.46; an older engine would ignore the
//!   field, so it is not sent. With every capability dropped a setuid program gains no capability, but it can still
//!   change its uid inside the container;
//! - **`/tmp` is `noexec`**: Swarm's tmpfs mounts are `noexec` and API 1.41 has no field for mount options
//!   (`TmpfsOptions.Options` came with 1.46), so a program cannot run from `/tmp` as it can under `docker.rs`;
//! - the published port cannot be bound to one address: host mode publishes it on every interface of the node, which
//!   is why the runtime refuses a workspace without its IDE secret.

use std::collections::HashMap;

use bollard::models::{
    EndpointPortConfig, EndpointPortConfigProtocolEnum, EndpointPortConfigPublishModeEnum, EndpointSpec, Limit, Mount,
    MountTmpfsOptions, MountType, NetworkAttachmentConfig, ResourceObject, ResourcesUlimits, ServiceSpec,
    ServiceSpecMode, ServiceSpecModeReplicated, TaskSpec, TaskSpecContainerSpec, TaskSpecPlacement,
    TaskSpecPlacementPreferences, TaskSpecPlacementSpread, TaskSpecResources, TaskSpecRestartPolicy,
    TaskSpecRestartPolicyConditionEnum,
};

use super::{SwarmOptions, NETWORK};
use crate::domain::{InstanceId, StudentId};
use crate::runtime::docker::LABEL_PORT;
use crate::runtime::{
    ContainerSpec, LABEL_INSTANCE, LABEL_MANAGED_BY, LABEL_MANAGED_BY_VALUE, LABEL_SECRET_ENV, LABEL_STUDENT,
};

/// Longest service name Swarm accepts (a DNS label).
const MAX_NAME: usize = 63;
/// Hex digits of the hash that makes a name unique per instance and student.
const HASH_DIGITS: usize = 10;

/// The service name of a student's workspace: `ws-<id>-<hash>`, where `<hash>` is 10 hex digits of BLAKE3 over the
/// instance and the id, and `<id>` is cut so the name fits Swarm's 63 characters.
///
/// Swarm names are DNS labels (`[A-Za-z0-9]`, inner `-` and `_`, at most 63): the container name's `.` between id
/// and instance is not allowed, and a 63-character id would not fit. The hash keeps two instances, and two long ids
/// with one prefix, apart; ownership is still decided by labels, so a collision would be a `Conflict`, never
/// another student's service.
pub fn service_name(instance: &InstanceId, student: &StudentId) -> String {
    let digest = blake3::hash(format!("{instance}/{student}").as_bytes());
    let hash = &digest.to_hex()[..HASH_DIGITS];
    let room = MAX_NAME - "ws-".len() - 1 - HASH_DIGITS;
    // Ids are ASCII (`a-z 0-9 - _`), so cutting at a byte count is cutting at a character.
    let id = student.as_str();
    let id = &id[..id.len().min(room)];
    format!("ws-{id}-{hash}")
}

/// Our labels on the service and on its task's container: managed-by, instance, student, the container port and
/// the variable of the secret, forced to their true values over whatever the spec carries.
pub(super) fn labels(instance: &InstanceId, spec: &ContainerSpec) -> HashMap<String, String> {
    let mut labels: HashMap<String, String> = spec.labels.clone().into_iter().collect();
    labels.insert(LABEL_MANAGED_BY.to_owned(), LABEL_MANAGED_BY_VALUE.to_owned());
    labels.insert(LABEL_INSTANCE.to_owned(), instance.to_string());
    labels.insert(LABEL_STUDENT.to_owned(), spec.student.to_string());
    labels.insert(LABEL_PORT.to_owned(), spec.container_port.to_string());
    if let Some(secret) = &spec.secret {
        labels.insert(LABEL_SECRET_ENV.to_owned(), secret.name.clone());
    }
    labels
}

/// The service for `spec`: one replica, never restarted by the engine (restarts are the lifecycle's decision),
/// limits, the memory reserved whole and the CPU in part ([`cpu_reservation`]), the hardening Swarm can express, the bind mount of `host_dir`, our network, and
/// the IDE port published in host mode on a port the engine picks.
pub(super) fn service_spec(
    instance: &InstanceId,
    spec: &ContainerSpec,
    host_dir: &str,
    state_dir: Option<&str>,
    o: &SwarmOptions,
) -> ServiceSpec {
    let labels = labels(instance, spec);
    let mut env = spec.env.clone();
    if let Some(secret) = &spec.secret {
        env.push(format!("{}={}", secret.name, secret.value.expose()));
    }
    let positive = |v: i64| (v > 0).then_some(v);
    let mut mounts = vec![Mount {
        target: Some(spec.mount_target.clone()),
        source: Some(host_dir.to_owned()),
        typ: Some(MountType::BIND),
        read_only: Some(false),
        ..Default::default()
    }];
    // The student's IDE state, kept apart from the project folder.
    if let (Some(source), Some((_, target))) = (state_dir, &spec.state_dir) {
        mounts.push(Mount {
            target: Some(target.clone()),
            source: Some(source.to_owned()),
            typ: Some(MountType::BIND),
            read_only: Some(false),
            ..Default::default()
        });
    }
    if let Some(size) = spec.hardening.tmp_size {
        mounts.push(Mount {
            target: Some("/tmp".to_owned()),
            typ: Some(MountType::TMPFS),
            // Sticky and world-writable like any /tmp (docker.rs: mode=1777).
            tmpfs_options: Some(MountTmpfsOptions {
                size_bytes: i64::try_from(size).ok(),
                mode: Some(0o1777),
                ..Default::default()
            }),
            ..Default::default()
        });
    }
    let nofile = i64::try_from(spec.hardening.nofile).ok();
    let container = TaskSpecContainerSpec {
        image: Some(spec.image.clone()),
        labels: Some(labels.clone()),
        // Swarm's `Command` replaces the entrypoint; `Args` is what `docker run IMAGE args...` (and docker.rs's
        // `Cmd`) replaces.
        args: (!spec.command.is_empty()).then(|| spec.command.clone()),
        env: Some(env),
        user: (!spec.user.is_empty()).then(|| spec.user.clone()),
        read_only: Some(spec.hardening.read_only_root),
        mounts: Some(mounts),
        stop_grace_period: Some(i64::try_from(o.stop_grace.as_nanos()).unwrap_or(i64::MAX)),
        init: Some(false),
        capability_drop: spec.hardening.cap_drop_all.then(|| vec!["ALL".to_owned()]),
        ulimits: Some(vec![ResourcesUlimits { name: Some("nofile".to_owned()), soft: nofile, hard: nofile }]),
        ..Default::default()
    };
    let resources = TaskSpecResources {
        limits: Some(Limit {
            nano_cpus: positive(spec.nano_cpus),
            memory_bytes: positive(spec.memory_bytes),
            pids: positive(spec.pids_limit),
        }),
        reservations: Some(ResourceObject {
            nano_cpus: positive(cpu_reservation(spec.nano_cpus, o.cpu_reservation)),
            memory_bytes: positive(spec.memory_bytes),
            ..Default::default()
        }),
        ..Default::default()
    };
    let preferences = o.spread.as_ref().map(|d| {
        vec![TaskSpecPlacementPreferences {
            spread: Some(TaskSpecPlacementSpread { spread_descriptor: Some(d.clone()) }),
        }]
    });
    ServiceSpec {
        name: Some(service_name(instance, &spec.student)),
        labels: Some(labels),
        task_template: Some(TaskSpec {
            container_spec: Some(container),
            resources: Some(resources),
            restart_policy: Some(TaskSpecRestartPolicy {
                condition: Some(TaskSpecRestartPolicyConditionEnum::NONE),
                ..Default::default()
            }),
            placement: Some(TaskSpecPlacement {
                constraints: (!o.constraints.is_empty()).then(|| o.constraints.clone()),
                preferences,
                ..Default::default()
            }),
            networks: Some(vec![NetworkAttachmentConfig { target: Some(NETWORK.to_owned()), ..Default::default() }]),
            ..Default::default()
        }),
        mode: Some(ServiceSpecMode {
            replicated: Some(ServiceSpecModeReplicated { replicas: Some(1) }),
            ..Default::default()
        }),
        endpoint_spec: Some(EndpointSpec {
            ports: Some(vec![EndpointPortConfig {
                protocol: Some(EndpointPortConfigProtocolEnum::TCP),
                target_port: Some(i64::from(spec.container_port)),
                published_port: None,
                publish_mode: Some(EndpointPortConfigPublishModeEnum::HOST),
                ..Default::default()
            }]),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// The CPU a workspace reserves: `ratio` of its limit, at least one nano-CPU of a positive limit (a reservation of
/// 0 would be none at all), never more than the limit.
pub(super) fn cpu_reservation(limit_nano_cpus: i64, ratio: f64) -> i64 {
    if limit_nano_cpus <= 0 {
        return 0;
    }
    let share = (limit_nano_cpus as f64 * ratio.clamp(0.0, 1.0)).round() as i64;
    share.clamp(1, limit_nano_cpus)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cpu_reservation_is_a_share_of_the_limit_and_never_none_or_more() {
        assert_eq!(cpu_reservation(1_000_000_000, 0.25), 250_000_000);
        assert_eq!(cpu_reservation(2_500_000_000, 1.0), 2_500_000_000);
        assert_eq!(cpu_reservation(3, 0.01), 1, "a positive limit keeps a reservation");
        assert_eq!(cpu_reservation(0, 0.5), 0, "no limit, no reservation");
        assert_eq!(cpu_reservation(1_000, 7.0), 1_000, "never above the limit");
    }

    fn valid_swarm_name(n: &str) -> bool {
        // swarmkit's rule: `^[a-zA-Z0-9](?:[-_]*[A-Za-z0-9]+)*$`, at most 63 characters.
        let b = n.as_bytes();
        !b.is_empty()
            && b.len() <= 63
            && b[0].is_ascii_alphanumeric()
            && b[b.len() - 1].is_ascii_alphanumeric()
            && b.iter().all(|c| c.is_ascii_alphanumeric() || *c == b'-' || *c == b'_')
    }

    #[test]
    fn service_names_are_valid_for_swarm_unique_per_instance_and_stable() {
        let default = InstanceId::parse("default").unwrap();
        let course = InstanceId::parse("course-7").unwrap();
        let long = StudentId::parse(&format!("a{}", "b_-".repeat(20) + "z")).unwrap();
        let short = StudentId::parse("alice").unwrap();
        for (i, s) in [(&default, &short), (&course, &short), (&default, &long), (&course, &long)] {
            let name = service_name(i, s);
            assert!(valid_swarm_name(&name), "{name}");
            assert_eq!(name, service_name(i, s), "the same name every time");
        }
        assert_ne!(service_name(&default, &short), service_name(&course, &short));
        assert!(service_name(&default, &short).starts_with("ws-alice-"));
        // Two ids that share their first 49 characters still get two names.
        let a = StudentId::parse(&format!("{}a", "x".repeat(60))).unwrap();
        let b = StudentId::parse(&format!("{}b", "x".repeat(60))).unwrap();
        assert_ne!(service_name(&default, &a), service_name(&default, &b));
        assert_eq!(service_name(&default, &a).len(), 63);
    }
}
