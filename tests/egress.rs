//! The egress rules against the real engine and the real `iptables` of this machine. They only list and compare
//! rules: no packet is sent to a link-local address or to port 2049.
//!
//! The real chain (`WORKSPACED-EGRESS` in `DOCKER-USER`) is shared by every workspaced on the engine, so the tests
//! install into it but never remove from it; removal is tested on chains of the test's own, which no packet reaches
//! (nothing jumps to their parent).

use std::process::Command;
use std::time::Duration;

use workspaced::domain::InstanceId;
use workspaced::runtime::docker::DockerRuntime;
use workspaced::runtime::egress::{self, Firewall};

const CALL_TIMEOUT: Duration = Duration::from_secs(20);

fn hex() -> String {
    format!("{:08x}", rand::random::<u32>())
}

fn iptables_s(chain: &str) -> String {
    let out = Command::new("iptables").args(["-w", "10", "-S", chain]).output().expect("iptables runs");
    assert!(out.status.success(), "iptables -S {chain}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

fn iptables(args: &[&str]) {
    let out = Command::new("iptables").args(["-w", "10"]).args(args).output().expect("iptables runs");
    assert!(out.status.success(), "iptables {args:?}: {}", String::from_utf8_lossy(&out.stderr));
}

/// Lines of `listing` that carry every one of `words`.
fn lines_with<'a>(listing: &'a str, words: &[&str]) -> Vec<&'a str> {
    listing.lines().filter(|l| words.iter().all(|w| l.split_whitespace().any(|x| x == *w))).collect()
}

/// Two chains of the test's own: a parent standing in for `DOCKER-USER` (nothing jumps to it) and ours.
struct TestChains(Firewall);

impl TestChains {
    fn new() -> Self {
        let id = hex();
        let fw = Firewall { parent: format!("WSDT-{id}-P"), chain: format!("WSDT-{id}-E") };
        iptables(&["-N", &fw.parent]);
        // Like Docker's own `DOCKER-USER` on older engines: a RETURN at the end, which our jump must precede.
        iptables(&["-A", &fw.parent, "-j", "RETURN"]);
        Self(fw)
    }
}

impl Drop for TestChains {
    fn drop(&mut self) {
        let _ = self.0.remove();
        let _ = Command::new("iptables").args(["-w", "10", "-F", &self.0.parent]).status();
        let _ = Command::new("iptables").args(["-w", "10", "-X", &self.0.parent]).status();
    }
}

#[tokio::test]
async fn once_the_network_is_prepared_docker_user_jumps_to_rules_dropping_link_local_and_nfs_from_its_bridge() {
    let instance = InstanceId::parse(&format!("t{}", hex())).unwrap();
    let runtime = DockerRuntime::connect(instance, CALL_TIMEOUT).await.expect("the engine is reachable");
    runtime.prepare_network().await.expect("the network is ready");
    let bridge = runtime.network_bridge().await.unwrap().expect("the network exists");
    assert!(
        std::path::Path::new("/sys/class/net").join(&bridge).exists(),
        "the bridge interface derived from the network ({bridge}) is a real interface"
    );

    let parent = iptables_s(egress::PARENT);
    let jump = lines_with(&parent, &["-A", "DOCKER-USER", "-j", "WORKSPACED-EGRESS"]);
    assert_eq!(jump.len(), 1, "one jump from DOCKER-USER:\n{parent}");
    let jump_at = parent.lines().position(|l| l == jump[0]).unwrap();
    let return_at = parent.lines().position(|l| l.starts_with("-A DOCKER-USER -j RETURN"));
    assert!(return_at.is_none_or(|r| jump_at < r), "the jump comes before Docker's RETURN:\n{parent}");

    let chain = iptables_s(egress::CHAIN);
    let link_local = lines_with(&chain, &["-A", "WORKSPACED-EGRESS", "-i", &bridge, "-d", "169.254.0.0/16", "DROP"]);
    let tcp = lines_with(&chain, &["-A", "WORKSPACED-EGRESS", "-i", &bridge, "tcp", "2049", "DROP"]);
    let udp = lines_with(&chain, &["-A", "WORKSPACED-EGRESS", "-i", &bridge, "udp", "2049", "DROP"]);
    assert_eq!((link_local.len(), tcp.len(), udp.len()), (1, 1, 1), "each drop rule once, for {bridge}:\n{chain}");
    assert!(chain.lines().filter(|l| l.starts_with("-A")).all(|l| l.contains("--comment \"workspaced: ")));

    // Installing again, from this process or another runtime, adds nothing.
    let fw = Firewall::default();
    let b = bridge.clone();
    let added = tokio::task::spawn_blocking(move || fw.install(&b)).await.unwrap().unwrap();
    assert!(added.is_empty(), "a second install added {added:?}");
    let other = DockerRuntime::connect(InstanceId::parse(&format!("t{}", hex())).unwrap(), CALL_TIMEOUT).await.unwrap();
    other.prepare_network().await.unwrap();
    assert_eq!(iptables_s(egress::CHAIN), chain, "the chain is unchanged");
    assert_eq!(lines_with(&iptables_s(egress::PARENT), &["-j", "WORKSPACED-EGRESS"]).len(), 1);
    assert!(Firewall::default().missing(&bridge).unwrap().is_empty());
}

#[test]
fn installing_twice_adds_nothing_a_missing_rule_is_named_and_put_back_and_removal_takes_only_our_chain() {
    let t = TestChains::new();
    let fw = &t.0;
    let bridge = "wsdt0";

    let missing = fw.missing(bridge).unwrap();
    assert_eq!(missing.len(), 4, "nothing installed yet: the jump and the three drops are missing");
    let out = Command::new("iptables").args(["-w", "10", "-S", &fw.chain]).output().unwrap();
    assert!(!out.status.success(), "looking (check mode, the doctor) creates nothing");
    let added = fw.install(bridge).unwrap();
    assert_eq!(added.len(), 4);
    let parent = iptables_s(&fw.parent);
    let chain = iptables_s(&fw.chain);
    assert!(parent.lines().nth(1).is_some_and(|l| l.ends_with(&format!("-j {}", fw.chain))), "jump first:\n{parent}");
    assert_eq!(chain.lines().filter(|l| l.starts_with("-A")).count(), 3, "{chain}");

    assert!(fw.install(bridge).unwrap().is_empty(), "a second install adds nothing");
    assert_eq!((iptables_s(&fw.parent), iptables_s(&fw.chain)), (parent.clone(), chain.clone()));
    assert!(fw.missing(bridge).unwrap().is_empty());

    // Another bridge (a network recreated under another name) gets rules of its own beside the first.
    assert_eq!(fw.install("wsdt1").unwrap().len(), 3, "the jump is shared");

    // A rule someone deleted is named, and only it is put back.
    let udp = fw.rules(bridge).into_iter().find(|r| r.spec.iter().any(|w| w == "udp")).unwrap();
    let mut args = vec!["-D", udp.chain.as_str()];
    args.extend(udp.spec.iter().map(String::as_str));
    iptables(&args);
    assert!(lines_with(&iptables_s(&fw.chain), &["-i", bridge, "udp"]).is_empty(), "deleted");
    let missing = fw.missing(bridge).unwrap();
    assert_eq!(missing.len(), 1, "{missing:?}");
    assert!(missing[0].spec.iter().any(|w| w == "udp"));
    assert_eq!(fw.install(bridge).unwrap(), missing);

    fw.remove().unwrap();
    let out = Command::new("iptables").args(["-w", "10", "-S", &fw.chain]).output().unwrap();
    assert!(!out.status.success(), "the chain is gone");
    assert!(!iptables_s(&fw.parent).contains(&fw.chain), "no jump left");
    assert!(fw.remove().is_ok(), "removing again is a no-op");
}

#[test]
fn a_parent_chain_that_does_not_exist_is_an_error_not_a_chain_we_create() {
    let id = hex();
    let fw = Firewall { parent: format!("WSDT-{id}-N"), chain: format!("WSDT-{id}-F") };
    let e = fw.install("wsdt0").unwrap_err();
    assert!(matches!(e, egress::EgressError::NoParent(ref p) if *p == fw.parent), "{e}");
    assert!(matches!(fw.missing("wsdt0"), Err(egress::EgressError::NoParent(_))));
    let out = Command::new("iptables").args(["-w", "10", "-S", &fw.chain]).output().unwrap();
    assert!(!out.status.success(), "no chain was made");
}
