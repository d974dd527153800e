//! What a service's task says about the workspace: pure reading of the engine's task and node objects, no calls.
//!
//! A workspace's service has one replica and no restart policy, so it has at most one task that matters: the newest
//! (highest version). Its state is the engine's word (`pending`, `running`, `failed`, ...), with the reason added
//! when it ended (`failed: task: non-zero exit (137)`), and a task whose node is down or gone is `lost` with the
//! node named: the engine still calls such a task `running` until the node comes back.

use std::collections::HashMap;

use bollard::models::{Node, NodeState, Task, TaskState};

/// Where a task stands, for `ensure_running`'s wait and for the reported info.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Phase {
    /// Not placed or not started yet; `unplaceable` carries the scheduler's "no suitable node" message.
    Waiting { state: String, unplaceable: Option<String> },
    /// Running on a ready node, with the published port once the engine reports it.
    Running { port: Option<u16>, node: String, container: Option<String> },
    /// Ended, refused, or on a node that is down: it will not run again. `why` says what happened.
    Ended { state: String, why: String },
}

/// The task that matters: the newest one by version.
pub(super) fn newest(tasks: &[Task]) -> Option<&Task> {
    tasks.iter().max_by_key(|t| t.version.as_ref().and_then(|v| v.index).unwrap_or(0))
}

fn word(state: Option<&TaskState>) -> String {
    state.map(ToString::to_string).unwrap_or_else(|| "new".to_owned())
}

/// The phase of `task`, judged with what the engine says about its node.
pub(super) fn phase(task: &Task, nodes: &HashMap<String, Node>, container_port: Option<u16>) -> Phase {
    let status = task.status.as_ref();
    let state = status.and_then(|s| s.state.as_ref());
    let err = status.and_then(|s| s.err.clone()).filter(|e| !e.is_empty());
    let message = status.and_then(|s| s.message.clone()).unwrap_or_default();
    match state {
        Some(TaskState::RUNNING) => {
            let node_id = task.node_id.clone().unwrap_or_default();
            match nodes.get(&node_id) {
                Some(n) if node_ready(n) => Phase::Running {
                    port: published_port(task, container_port),
                    node: node_id,
                    container: status.and_then(|s| s.container_status.as_ref()).and_then(|c| c.container_id.clone()),
                },
                Some(n) => Phase::Ended {
                    state: "lost".to_owned(),
                    why: format!("its node {} is {}", node_name(n), node_state(n)),
                },
                None => Phase::Ended { state: "lost".to_owned(), why: format!("its node {node_id} left the swarm") },
            }
        }
        Some(
            TaskState::COMPLETE
            | TaskState::SHUTDOWN
            | TaskState::FAILED
            | TaskState::REJECTED
            | TaskState::ORPHANED
            | TaskState::REMOVE,
        ) => Phase::Ended { state: word(state), why: err.unwrap_or(message) },
        _ => {
            let unplaceable = err.filter(|e| e.contains("no suitable node"));
            Phase::Waiting { state: word(state), unplaceable }
        }
    }
}

/// The state word of a phase as `ContainerInfo::state` carries it, with the reason of an end.
pub(super) fn state_text(phase: &Phase) -> String {
    match phase {
        Phase::Waiting { state, .. } => state.clone(),
        Phase::Running { .. } => "running".to_owned(),
        Phase::Ended { state, why } if why.is_empty() => state.clone(),
        Phase::Ended { state, why } => format!("{state}: {why}"),
    }
}

/// The host port the engine published for `container_port/tcp` (any published TCP port without one).
fn published_port(task: &Task, container_port: Option<u16>) -> Option<u16> {
    let ports = task.status.as_ref()?.port_status.as_ref()?.ports.as_ref()?;
    ports
        .iter()
        .filter(|p| p.protocol.as_ref().is_none_or(|proto| proto.to_string() == "tcp"))
        .filter(|p| container_port.is_none_or(|c| p.target_port == Some(i64::from(c))))
        .find_map(|p| p.published_port.and_then(|n| u16::try_from(n).ok()).filter(|n| *n != 0))
}

fn node_ready(n: &Node) -> bool {
    n.status.as_ref().and_then(|s| s.state.as_ref()) == Some(&NodeState::READY)
}

fn node_state(n: &Node) -> String {
    n.status.as_ref().and_then(|s| s.state.as_ref()).map(ToString::to_string).unwrap_or_else(|| "unknown".to_owned())
}

/// `hostname (address)`, as an operator finds the node.
pub(super) fn node_name(n: &Node) -> String {
    let host = n.description.as_ref().and_then(|d| d.hostname.clone()).unwrap_or_default();
    let addr = node_addr(n).unwrap_or_default();
    format!("{host} ({addr})")
}

/// The address the node is reached at (`Status.Addr`, what it advertised). A manager may report `0.0.0.0` there
/// (moby/moby#35437); its manager address (`ManagerStatus.Addr`, `ip:2377`) names it then. Unchecked: the lifecycle
/// checks it before it is used (`domain::parse_upstream_host`).
pub(super) fn node_addr(n: &Node) -> Option<String> {
    let addr = n.status.as_ref().and_then(|s| s.addr.clone()).filter(|a| !a.is_empty());
    match addr.as_deref() {
        Some("0.0.0.0") | None => {
            let manager = n.manager_status.as_ref().and_then(|m| m.addr.as_deref());
            let host = manager.map(|m| {
                let host = m.rsplit_once(':').map_or(m, |(h, _)| h);
                host.strip_prefix('[').and_then(|h| h.strip_suffix(']')).unwrap_or(host).to_owned()
            });
            host.filter(|h| !h.is_empty()).or(addr)
        }
        Some(_) => addr,
    }
}

/// The container of `task` when it runs on node `node` (`None` elsewhere, or not running).
pub(super) fn running_container_on(task: &Task, node: &str) -> Option<String> {
    let status = task.status.as_ref()?;
    if status.state != Some(TaskState::RUNNING) || task.node_id.as_deref() != Some(node) {
        return None;
    }
    status.container_status.as_ref()?.container_id.clone().filter(|c| !c.is_empty())
}

#[cfg(test)]
mod tests {
    use bollard::models::{
        EndpointPortConfig, EndpointPortConfigProtocolEnum, NodeDescription, NodeStatus, ObjectVersion, PortStatus,
        TaskStatus,
    };

    use super::*;

    fn node(id: &str, state: NodeState) -> (String, Node) {
        let n = Node {
            id: Some(id.to_owned()),
            status: Some(NodeStatus { state: Some(state), addr: Some("10.0.1.5".to_owned()), ..Default::default() }),
            description: Some(NodeDescription { hostname: Some("node-b".to_owned()), ..Default::default() }),
            ..Default::default()
        };
        (id.to_owned(), n)
    }

    fn task(version: u64, state: TaskState, err: Option<&str>, port: Option<i64>) -> Task {
        Task {
            version: Some(ObjectVersion { index: Some(version) }),
            node_id: Some("n1".to_owned()),
            status: Some(TaskStatus {
                state: Some(state),
                err: err.map(str::to_owned),
                port_status: port.map(|p| PortStatus {
                    ports: Some(vec![EndpointPortConfig {
                        protocol: Some(EndpointPortConfigProtocolEnum::TCP),
                        target_port: Some(8080),
                        published_port: Some(p),
                        ..Default::default()
                    }]),
                }),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn a_running_task_on_a_ready_node_has_its_published_port() {
        let nodes = HashMap::from([node("n1", NodeState::READY)]);
        let t = task(3, TaskState::RUNNING, None, Some(30001));
        assert_eq!(
            phase(&t, &nodes, Some(8080)),
            Phase::Running { port: Some(30001), node: "n1".into(), container: None }
        );
        assert!(matches!(phase(&t, &nodes, Some(9999)), Phase::Running { port: None, .. }));
    }

    #[test]
    fn a_running_task_on_a_down_or_vanished_node_is_lost_with_the_node_named() {
        let t = task(3, TaskState::RUNNING, None, Some(30001));
        let down = phase(&t, &HashMap::from([node("n1", NodeState::DOWN)]), Some(8080));
        assert_eq!(state_text(&down), "lost: its node node-b (10.0.1.5) is down");
        let gone = phase(&t, &HashMap::new(), Some(8080));
        assert_eq!(state_text(&gone), "lost: its node n1 left the swarm");
    }

    #[test]
    fn an_ended_task_says_why_and_an_unplaceable_one_carries_the_schedulers_verdict() {
        let nodes = HashMap::from([node("n1", NodeState::READY)]);
        let failed = phase(&task(5, TaskState::FAILED, Some("task: non-zero exit (137)"), None), &nodes, None);
        assert_eq!(state_text(&failed), "failed: task: non-zero exit (137)");
        let pending = task(2, TaskState::PENDING, Some("no suitable node (insufficient resources on 1 node)"), None);
        match phase(&pending, &nodes, None) {
            Phase::Waiting { state, unplaceable: Some(why) } => {
                assert_eq!(state, "pending");
                assert!(why.contains("insufficient resources"));
            }
            other => panic!("{other:?}"),
        }
        let starting = phase(&task(2, TaskState::STARTING, None, None), &nodes, None);
        assert_eq!(starting, Phase::Waiting { state: "starting".into(), unplaceable: None });
    }

    #[test]
    fn a_node_is_named_by_its_advertised_address_or_a_managers_by_its_manager_address() {
        let (_, mut n) = node("n1", NodeState::READY);
        assert_eq!(node_addr(&n).as_deref(), Some("10.0.1.5"));
        n.status.as_mut().unwrap().addr = Some("0.0.0.0".into());
        assert_eq!(node_addr(&n).as_deref(), Some("0.0.0.0"), "no better name: left for the lifecycle to refuse");
        n.manager_status =
            Some(bollard::models::ManagerStatus { addr: Some("10.0.1.7:2377".into()), ..Default::default() });
        assert_eq!(node_addr(&n).as_deref(), Some("10.0.1.7"));
        n.manager_status =
            Some(bollard::models::ManagerStatus { addr: Some("[2001:db8::7]:2377".into()), ..Default::default() });
        assert_eq!(node_addr(&n).as_deref(), Some("2001:db8::7"));
    }

    #[test]
    fn only_a_running_task_on_the_node_asked_about_names_its_container() {
        let mut t = task(3, TaskState::RUNNING, None, Some(30001));
        t.status.as_mut().unwrap().container_status =
            Some(bollard::models::ContainerStatus { container_id: Some("c0ffee".into()), ..Default::default() });
        assert_eq!(running_container_on(&t, "n1").as_deref(), Some("c0ffee"));
        assert_eq!(running_container_on(&t, "n2"), None, "another node's container is not this engine's");
        t.status.as_mut().unwrap().state = Some(TaskState::SHUTDOWN);
        assert_eq!(running_container_on(&t, "n1"), None);
    }

    #[test]
    fn the_newest_task_is_the_one_with_the_highest_version() {
        let tasks = [task(3, TaskState::FAILED, None, None), task(9, TaskState::RUNNING, None, None)];
        assert_eq!(newest(&tasks).and_then(|t| t.version.as_ref()?.index), Some(9));
        assert!(newest(&[]).is_none());
    }
}
