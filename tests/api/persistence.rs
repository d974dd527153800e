//! The seeds' persistence check and the container's limits, with the real code-server image.

use std::os::unix::fs::MetadataExt;

use crate::helpers::*;

#[tokio::test]
async fn files_written_in_the_ide_survive_stop_and_start() {
    let app = spawn_app_with(|s| s.workspace.image = CODE_SERVER_IMAGE.to_owned()).await;
    let ws = app.start("persist-1").await;
    assert_eq!(ws["status"], "running");
    let container = ws["container_id"].as_str().unwrap().to_owned();

    docker_exec(&container, "echo 'print(42)' > /home/coder/project/main.py");
    let host_file = app.student_dir("persist-1").join("main.py");
    let meta = std::fs::metadata(&host_file).expect("file visible on the host");
    assert_eq!((meta.uid(), meta.gid()), (1000, 1000));
    assert_eq!(std::fs::read_to_string(&host_file).unwrap(), "print(42)\n");

    let stopped = app.stop("persist-1").await;
    assert_eq!(stopped["status"], "stopped");
    assert_eq!(stopped["stop_reason"], "user");
    assert!(app.containers().is_empty(), "container removed on stop");
    assert!(host_file.exists(), "a stop never deletes files");

    let again = app.start("persist-1").await;
    assert_ne!(again["container_id"].as_str().unwrap(), container, "a new container");
    let content = docker_exec(again["container_id"].as_str().unwrap(), "cat /home/coder/project/main.py");
    assert_eq!(content, "print(42)\n");
}

#[tokio::test]
async fn the_code_server_container_has_the_configured_limits_user_labels_and_loopback_port() {
    let app = spawn_app_with(|s| s.workspace.image = CODE_SERVER_IMAGE.to_owned()).await;
    let ws = app.start("limits-1").await;
    let c = app.inspect(ws["container_id"].as_str().unwrap());
    let hc = &c["HostConfig"];
    assert_eq!(hc["NanoCpus"], 1_000_000_000i64);
    assert_eq!(hc["Memory"], 1i64 << 30);
    assert_eq!(hc["MemorySwap"], 1i64 << 30, "swap equal to memory: no swap");
    assert_eq!(hc["PidsLimit"], 1024);
    assert!(hc["SecurityOpt"].to_string().contains("no-new-privileges"));
    assert_eq!(c["Config"]["User"], "1000:1000");
    let labels = &c["Config"]["Labels"];
    assert_eq!(labels["workspaced.managed-by"], "workspaced");
    assert_eq!(labels["workspaced.student"], "limits-1");
    assert_eq!(labels["workspaced.instance"], app.instance.as_str());
    assert!(c["Name"].as_str().unwrap().starts_with("/ws-limits-1"));
    // On the workspaces' network, where containers cannot reach each other (checked on the network's settings:
    // tests send no traffic to container addresses).
    assert_eq!(hc["NetworkMode"], "workspaced-isolated");
    let out =
        std::process::Command::new("docker").args(["network", "inspect", "workspaced-isolated"]).output().unwrap();
    let net: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(net[0]["Options"]["com.docker.network.bridge.enable_icc"], "false", "{net}");
    let bindings = hc["PortBindings"]["8080/tcp"].as_array().unwrap();
    assert!(!bindings.is_empty());
    for b in bindings {
        assert_eq!(b["HostIp"], "127.0.0.1", "published on loopback only");
    }
    for b in c["NetworkSettings"]["Ports"]["8080/tcp"].as_array().unwrap() {
        assert_eq!(b["HostIp"], "127.0.0.1");
    }
    // The project folder and the IDE state (settings, extensions), both bind mounts, nothing else.
    let mounts = c["Mounts"].as_array().unwrap();
    let mut targets: Vec<&str> = mounts.iter().map(|m| m["Destination"].as_str().unwrap()).collect();
    targets.sort();
    assert_eq!(targets, ["/home/coder/.local/share/code-server", "/home/coder/project"]);
    assert!(mounts.iter().all(|m| m["Type"] == "bind"), "{mounts:?}");

    // code-server itself answers through the published port, but without the workspace's secret (only the proxy
    // has it) it shows its login page, not the IDE.
    let url = format!("http://127.0.0.1:{}/", ws["host_port"]);
    let r = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
        .get(&url)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 302);
    assert!(r.headers()["location"].to_str().unwrap().contains("login"));
}
