//! The workspaces' egress policy: iptables rules that drop what a student's terminal must never reach through the
//! host, link-local addresses (`169.254.0.0/16`: the cloud's instance metadata service and its credentials) and
//! NFS (TCP and UDP port 2049 on any address: an EFS mount target trusts any client that reaches it, root included).
//!
//! The rules sit in a chain of their own ([`CHAIN`]), jumped to from the first line of `DOCKER-USER`, the chain Docker
//! evaluates before its own forwarding rules and never rewrites. Each rule matches packets coming in from the
//! workspaces' bridge (`-i <bridge>`), so other containers and the host are untouched, and carries a `workspaced:`
//! comment. `iptables -S WORKSPACED-EGRESS` lists them. Installing is idempotent (each rule is checked with `-C`
//! before it is added) and serialized between processes by a lock file, so two instances on one engine never
//! duplicate a rule.
//!
//! We shell out to `iptables`, the program Docker itself drives, so the rules land in whichever backend (nft or
//! legacy) Docker's own rules are in; a library would have to pick one. This module never talks to the engine: the
//! caller (`docker.rs`) says which bridge the network uses ([`bridge_interface`]).

use std::fmt;
use std::io;
use std::process::Command;
use std::str::FromStr;

/// Our chain, jumped to from [`PARENT`].
pub const CHAIN: &str = "WORKSPACED-EGRESS";
/// Docker's chain for user rules, evaluated first in `FORWARD`.
pub const PARENT: &str = "DOCKER-USER";
/// The interface name workspaced gives the workspaces' bridge when it creates the network (at most 15 characters).
pub const BRIDGE: &str = "wsd-isolated";
/// The network option that names the bridge interface.
pub const BRIDGE_NAME_OPTION: &str = "com.docker.network.bridge.name";
/// Serializes installs between processes (and between runtimes of one process).
const LOCK_FILE: &str = "/run/workspaced-egress.lock";
/// Seconds `iptables -w` waits for the xtables lock held by another program (Docker, firewalld).
const XTABLES_WAIT: &str = "10";

/// What workspaced does about the egress rules (setting `egress_rules`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum EgressMode {
    /// Install the rules when the network is first used (needs root or `CAP_NET_ADMIN`); a failure is logged loudly.
    #[default]
    Install,
    /// Only check that they are present and log what is missing.
    Check,
    /// Leave the firewall alone: the operator manages it (a remote engine, a host firewall of its own).
    Off,
}

impl FromStr for EgressMode {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "install" => Ok(Self::Install),
            "check" => Ok(Self::Check),
            "off" => Ok(Self::Off),
            other => Err(format!("not an egress mode: {other:?}; use install, check or off")),
        }
    }
}

impl fmt::Display for EgressMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Install => "install",
            Self::Check => "check",
            Self::Off => "off",
        })
    }
}

/// The bridge interface of a Docker bridge network: the name given at creation (`com.docker.network.bridge.name`),
/// else Docker's own `br-<first 12 characters of the network id>` (a network made before workspaced named it).
pub fn bridge_interface(network_id: &str, named: Option<&str>) -> String {
    match named.filter(|n| !n.is_empty()) {
        Some(name) => name.to_owned(),
        None => format!("br-{}", network_id.get(..12).unwrap_or(network_id)),
    }
}

/// One rule: the chain it sits in, its arguments after the chain, and what it is for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    pub chain: String,
    pub spec: Vec<String>,
    pub purpose: &'static str,
}

impl Rule {
    fn new(chain: &str, spec: &[&str], purpose: &'static str) -> Self {
        Self { chain: chain.to_owned(), spec: spec.iter().map(|s| (*s).to_owned()).collect(), purpose }
    }

    /// The shell command that adds it (`-A`, or `-I <chain> 1` for the jump), quoted for copy and paste.
    pub fn command(&self, first: bool) -> String {
        let mut words = vec!["iptables".to_owned(), "-w".to_owned()];
        if first {
            words.extend(["-I".to_owned(), self.chain.clone(), "1".to_owned()]);
        } else {
            words.extend(["-A".to_owned(), self.chain.clone()]);
        }
        words.extend(self.spec.iter().map(|w| shell_quote(w)));
        words.join(" ")
    }
}

fn shell_quote(word: &str) -> String {
    if !word.is_empty() && word.chars().all(|c| c.is_ascii_alphanumeric() || "-_./:,=".contains(c)) {
        word.to_owned()
    } else {
        format!("'{}'", word.replace('\'', r"'\''"))
    }
}

/// Why the rules could not be read or changed.
#[derive(Debug, thiserror::Error)]
pub enum EgressError {
    #[error("iptables is not installed (or not on PATH)")]
    NoIptables,
    #[error("not allowed to read or change the firewall (run as root or with CAP_NET_ADMIN): {0}")]
    NotPermitted(String),
    #[error("the chain {0} does not exist: is Docker running with its iptables rules on (\"iptables\": true)?")]
    NoParent(String),
    #[error("`{command}` failed: {message}")]
    Failed { command: String, message: String },
    #[error("cannot take the lock {LOCK_FILE}: {0}")]
    Lock(io::Error),
}

/// Where the rules go: our chain and the chain that jumps to it. [`Firewall::default`] is the real pair; tests use
/// chains of their own so that they never remove rules that other instances rely on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Firewall {
    pub parent: String,
    pub chain: String,
}

impl Default for Firewall {
    fn default() -> Self {
        Self { parent: PARENT.to_owned(), chain: CHAIN.to_owned() }
    }
}

impl Firewall {
    /// The jump from the parent chain to ours.
    pub fn jump(&self) -> Rule {
        let spec =
            ["-m", "comment", "--comment", "workspaced: egress policy of workspace containers", "-j", &self.chain];
        Rule::new(&self.parent, &spec, "jump from DOCKER-USER to the workspaces' egress chain")
    }

    /// Every rule for `bridge`, the jump from the parent first.
    pub fn rules(&self, bridge: &str) -> Vec<Rule> {
        let c = self.chain.as_str();
        let comment = |text: &'static str| ["-m", "comment", "--comment", text];
        let mut link_local = vec!["-i", bridge, "-d", "169.254.0.0/16"];
        link_local.extend(comment("workspaced: no link-local addresses (instance metadata) from workspaces"));
        link_local.extend(["-j", "DROP"]);
        let nfs = |proto: &'static str| {
            let mut spec = vec!["-i", bridge, "-p", proto, "-m", proto, "--dport", "2049"];
            spec.extend(comment("workspaced: no NFS (EFS) from workspaces"));
            spec.extend(["-j", "DROP"]);
            spec
        };
        vec![
            self.jump(),
            Rule::new(c, &link_local, "drop traffic to 169.254.0.0/16 (instance metadata, link-local)"),
            Rule::new(c, &nfs("tcp"), "drop TCP to port 2049 (NFS, EFS)"),
            Rule::new(c, &nfs("udp"), "drop UDP to port 2049 (NFS)"),
        ]
    }

    /// The rules for `bridge` that are not in place, in order (an empty list: all present). Changes nothing.
    pub fn missing(&self, bridge: &str) -> Result<Vec<Rule>, EgressError> {
        if !self.chain_exists(&self.parent)? {
            return Err(EgressError::NoParent(self.parent.clone()));
        }
        let rules = self.rules(bridge);
        if !self.chain_exists(&self.chain)? {
            return Ok(rules);
        }
        let mut missing = Vec::new();
        for rule in rules {
            if !self.present(&rule)? {
                missing.push(rule);
            }
        }
        Ok(missing)
    }

    /// Puts every rule for `bridge` in place and returns those it had to add. Idempotent; blocking (runs
    /// `iptables`), so call it from a blocking thread.
    pub fn install(&self, bridge: &str) -> Result<Vec<Rule>, EgressError> {
        let _lock = lock()?;
        if !self.chain_exists(&self.parent)? {
            return Err(EgressError::NoParent(self.parent.clone()));
        }
        if !self.chain_exists(&self.chain)? {
            iptables(&["-N", &self.chain])?;
        }
        let mut added = Vec::new();
        for rule in self.rules(bridge) {
            if self.present(&rule)? {
                continue;
            }
            let mut args: Vec<&str> = Vec::new();
            if rule.chain == self.parent {
                // First: an operator's or Docker's `RETURN` or `ACCEPT` further down must not skip us.
                args.extend(["-I", &rule.chain, "1"]);
            } else {
                args.extend(["-A", &rule.chain]);
            }
            args.extend(rule.spec.iter().map(String::as_str));
            iptables(&args)?;
            added.push(rule);
        }
        Ok(added)
    }

    /// Removes the jump (every copy) and our chain. For operators switching to `off`, and for tests of their own
    /// chains; never called by the service.
    pub fn remove(&self) -> Result<(), EgressError> {
        let _lock = lock()?;
        if !self.chain_exists(&self.chain)? {
            return Ok(());
        }
        let jump = self.jump();
        while self.present(&jump)? {
            let mut args = vec!["-D", jump.chain.as_str()];
            args.extend(jump.spec.iter().map(String::as_str));
            iptables(&args)?;
        }
        iptables(&["-F", &self.chain])?;
        iptables(&["-X", &self.chain])?;
        Ok(())
    }

    /// `iptables -S <chain>`: the chain as iptables lists it.
    pub fn list(&self, chain: &str) -> Result<String, EgressError> {
        iptables(&["-S", chain])
    }

    fn chain_exists(&self, chain: &str) -> Result<bool, EgressError> {
        match iptables(&["-S", chain]) {
            Ok(_) => Ok(true),
            Err(EgressError::Failed { .. }) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// `iptables -C`: exit 1 means "no such rule"; anything else that is not success is an error.
    fn present(&self, rule: &Rule) -> Result<bool, EgressError> {
        let mut args = vec!["-C", rule.chain.as_str()];
        args.extend(rule.spec.iter().map(String::as_str));
        match run(&args)? {
            (0, _) => Ok(true),
            (1, _) => Ok(false),
            (_, message) => Err(failed(&args, message)),
        }
    }
}

/// Runs `iptables -w <seconds> <args>` and returns its standard output, or why it failed.
fn iptables(args: &[&str]) -> Result<String, EgressError> {
    let out = output(args)?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(failed(args, String::from_utf8_lossy(&out.stderr).trim().to_owned()))
    }
}

fn run(args: &[&str]) -> Result<(i32, String), EgressError> {
    let out = output(args)?;
    Ok((out.status.code().unwrap_or(-1), String::from_utf8_lossy(&out.stderr).trim().to_owned()))
}

fn output(args: &[&str]) -> Result<std::process::Output, EgressError> {
    let out = Command::new("iptables").args(["-w", XTABLES_WAIT]).args(args).output().map_err(|e| {
        if e.kind() == io::ErrorKind::NotFound {
            EgressError::NoIptables
        } else {
            EgressError::Failed { command: format!("iptables {}", args.join(" ")), message: e.to_string() }
        }
    })?;
    // Exit 4 is iptables' "resource problem", which is how a missing privilege shows.
    let stderr = String::from_utf8_lossy(&out.stderr);
    if out.status.code() == Some(4) && (stderr.contains("ermission denied") || stderr.contains("you must be root")) {
        return Err(EgressError::NotPermitted(stderr.trim().to_owned()));
    }
    Ok(out)
}

fn failed(args: &[&str], message: String) -> EgressError {
    EgressError::Failed { command: format!("iptables {}", args.join(" ")), message }
}

/// An exclusive `flock` on [`LOCK_FILE`], held until dropped.
fn lock() -> Result<nix::fcntl::Flock<std::fs::File>, EgressError> {
    let file =
        std::fs::OpenOptions::new().create(true).truncate(false).write(true).open(LOCK_FILE).map_err(|e| {
            match e.kind() {
                io::ErrorKind::PermissionDenied => EgressError::NotPermitted(format!("{LOCK_FILE}: {e}")),
                _ => EgressError::Lock(e),
            }
        })?;
    nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockExclusive)
        .map_err(|(_, errno)| EgressError::Lock(io::Error::from(errno)))
}

/// What [`apply`] did.
#[derive(Debug)]
pub enum Applied {
    /// Every rule is present; `added` were put in now.
    InPlace {
        added: usize,
    },
    /// `check` mode found these missing.
    Missing(Vec<Rule>),
    /// `off`: nothing looked at.
    Skipped,
    Failed(EgressError),
}

/// Applies `mode` for `bridge` on the default chains and logs the outcome: a failure is an error in the log, never
/// an error of the caller (a start goes on; `workspaced doctor` reports the missing rules).
pub async fn apply(mode: EgressMode, bridge: &str) -> Applied {
    let firewall = Firewall::default();
    let owned = bridge.to_owned();
    let outcome = tokio::task::spawn_blocking(move || match mode {
        EgressMode::Off => Applied::Skipped,
        EgressMode::Install => match firewall.install(&owned) {
            Ok(added) => Applied::InPlace { added: added.len() },
            Err(e) => Applied::Failed(e),
        },
        EgressMode::Check => match firewall.missing(&owned) {
            Ok(missing) if missing.is_empty() => Applied::InPlace { added: 0 },
            Ok(missing) => Applied::Missing(missing),
            Err(e) => Applied::Failed(e),
        },
    })
    .await
    .unwrap_or_else(|e| Applied::Failed(EgressError::Lock(io::Error::other(e.to_string()))));
    match &outcome {
        Applied::InPlace { added } => {
            tracing::info!(
                bridge,
                chain = CHAIN,
                added,
                "egress rules in place (no link-local, no NFS from workspaces)"
            )
        }
        Applied::Missing(missing) => {
            let what: Vec<&str> = missing.iter().map(|r| r.purpose).collect();
            tracing::error!(bridge, chain = CHAIN, missing = ?what,
                "egress rules missing: workspaces can reach instance metadata or NFS; see `workspaced doctor`")
        }
        Applied::Skipped => tracing::info!(bridge, "egress_rules = off: the firewall is left to the operator"),
        Applied::Failed(e) => tracing::error!(bridge, chain = CHAIN, error = %e,
            "could not install the egress rules: workspaces can reach instance metadata and NFS; \
             see `workspaced doctor` (or set egress_rules = off if the firewall is managed elsewhere)"),
    }
    outcome
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_named_bridge_is_used_and_an_unnamed_one_is_derived_from_the_network_id() {
        assert_eq!(bridge_interface("8d104d706c90de0a33d2eac6", Some("wsd-isolated")), "wsd-isolated");
        assert_eq!(bridge_interface("8d104d706c90de0a33d2eac6", None), "br-8d104d706c90");
        assert_eq!(bridge_interface("8d104d706c90de0a33d2eac6", Some("")), "br-8d104d706c90");
        assert_eq!(bridge_interface("abc", None), "br-abc");
        assert!(BRIDGE.len() <= 15, "Linux interface names have at most 15 characters");
    }

    #[test]
    fn the_rules_match_the_bridge_drop_link_local_and_nfs_and_jump_first() {
        let rules = Firewall::default().rules("br-x");
        assert_eq!(rules[0].chain, "DOCKER-USER");
        assert_eq!(rules[0].spec.last().map(String::as_str), Some("WORKSPACED-EGRESS"));
        for r in &rules[1..] {
            assert_eq!(r.chain, "WORKSPACED-EGRESS");
            assert_eq!(&r.spec[..2], ["-i", "br-x"]);
            assert_eq!(r.spec.last().map(String::as_str), Some("DROP"));
            assert!(r.spec.iter().any(|w| w == "comment"));
        }
        assert!(rules[1].spec.iter().any(|w| w == "169.254.0.0/16"));
        assert!(rules[2].spec.windows(2).any(|w| w == ["-p", "tcp"]) && rules[2].spec.iter().any(|w| w == "2049"));
        assert!(rules[3].spec.windows(2).any(|w| w == ["-p", "udp"]) && rules[3].spec.iter().any(|w| w == "2049"));
    }

    #[test]
    fn commands_are_quoted_for_a_shell() {
        let rules = Firewall::default().rules("br-x");
        assert_eq!(
            rules[0].command(true),
            "iptables -w -I DOCKER-USER 1 -m comment --comment 'workspaced: egress policy of workspace containers' \
             -j WORKSPACED-EGRESS"
        );
        assert!(rules[1].command(false).starts_with("iptables -w -A WORKSPACED-EGRESS -i br-x -d 169.254.0.0/16"));
    }

    #[test]
    fn modes_parse_and_print_alike() {
        for m in [EgressMode::Install, EgressMode::Check, EgressMode::Off] {
            assert_eq!(m.to_string().parse::<EgressMode>(), Ok(m));
        }
        assert_eq!(" OFF ".parse::<EgressMode>(), Ok(EgressMode::Off));
        assert!("drop".parse::<EgressMode>().is_err());
        assert_eq!(EgressMode::default(), EgressMode::Install);
    }
}
