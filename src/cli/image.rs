//! `image build`: runs the build recipe embedded in the binary, so the one binary can build its images anywhere:
//! the IDE images, and the image of workspaced itself (`--service`), whose binary defaults to the running one.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};

use crate::config::DEFAULT_IMAGE;

const BUILD_SCRIPT: &str = include_str!("../../scripts/build-image.sh");

/// The tiny test image's tag (the recipe's default).
const TINY_IMAGE: &str = "workspaced/tiny:1";

/// The JupyterLab image's tag (the recipe's default: its pinned `jupyterlab` version).
pub const JUPYTER_IMAGE: &str = "workspaced/jupyter:4.4.10";

/// Which image the recipe builds.
#[derive(Debug, Clone)]
pub enum ImageKind {
    /// code-server, for students.
    CodeServer,
    /// busybox httpd, for tests.
    Tiny,
    /// JupyterLab in a venv on Debian, for Jupyter courses.
    Jupyter,
    /// workspaced itself, for a container deployment: this binary (or another) on a Debian base.
    Service {
        /// The workspaced binary to put in the image; `None`: the running executable.
        binary: Option<PathBuf>,
    },
}

impl ImageKind {
    /// The tag used when none is given.
    fn default_tag(&self) -> String {
        match self {
            Self::CodeServer => DEFAULT_IMAGE.to_owned(),
            Self::Tiny => TINY_IMAGE.to_owned(),
            Self::Jupyter => JUPYTER_IMAGE.to_owned(),
            Self::Service { .. } => service_tag(),
        }
    }
}

/// `workspaced/workspaced:<version of this binary>`.
fn service_tag() -> String {
    format!("workspaced/workspaced:{}", env!("CARGO_PKG_VERSION"))
}

/// Builds the image (`tag`, or the kind's default) and prints its tag.
pub fn build(tag: Option<&str>, kind: ImageKind) -> anyhow::Result<()> {
    let tag = tag.map_or_else(|| kind.default_tag(), str::to_owned);
    if tag.trim().is_empty() {
        bail!("--tag is empty");
    }
    let (what, env): (&str, Vec<(&str, std::ffi::OsString)>) = match &kind {
        ImageKind::CodeServer => ("code-server", vec![("WORKSPACED_IMAGE", tag.clone().into())]),
        ImageKind::Tiny => ("tiny", vec![("WORKSPACED_TINY_IMAGE", tag.clone().into())]),
        ImageKind::Jupyter => ("jupyter", vec![("WORKSPACED_JUPYTER_IMAGE", tag.clone().into())]),
        ImageKind::Service { binary } => {
            let binary = match binary {
                Some(path) => service_binary(path, "--binary")?,
                None => {
                    let exe = std::env::current_exe().context("cannot find the running executable; give --binary")?;
                    service_binary(&exe, "this executable")?
                }
            };
            let env = vec![
                ("WORKSPACED_SERVICE_IMAGE", tag.clone().into()),
                ("WORKSPACED_SERVICE_BINARY", binary.into_os_string()),
                ("WORKSPACED_SERVICE_VERSION", env!("CARGO_PKG_VERSION").into()),
            ];
            ("service", env)
        }
    };
    let script = std::env::temp_dir().join(format!("workspaced-build-image-{}.sh", std::process::id()));
    std::fs::write(&script, BUILD_SCRIPT).context("cannot write the build script")?;
    let status =
        std::process::Command::new("bash").arg(&script).arg(what).envs(env).status().context("cannot run bash");
    let _ = std::fs::remove_file(&script);
    if !status?.success() {
        bail!("image build failed");
    }
    println!("{tag}");
    Ok(())
}

/// The binary for `--service`: an executable regular file, as an absolute path. `what` names it in errors.
fn service_binary(path: &Path, what: &str) -> anyhow::Result<PathBuf> {
    let meta = std::fs::metadata(path).with_context(|| format!("{what} {}", path.display()))?;
    if !meta.is_file() {
        bail!("{what} {}: not a file", path.display());
    }
    if meta.permissions().mode() & 0o111 == 0 {
        bail!("{what} {}: not executable", path.display());
    }
    std::fs::canonicalize(path).with_context(|| format!("{what} {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_jupyter_tag_is_the_one_the_recipe_builds_by_default() {
        let pinned = BUILD_SCRIPT
            .lines()
            .find_map(|l| l.strip_prefix("JUPYTERLAB_VERSION=${JUPYTERLAB_VERSION:-"))
            .and_then(|rest| rest.strip_suffix('}'))
            .expect("the recipe pins jupyterlab");
        assert_eq!(JUPYTER_IMAGE, format!("workspaced/jupyter:{pinned}"));
        assert!(BUILD_SCRIPT.contains("  jupyter) build_jupyter ;;"), "the recipe has the kind");
        assert!(BUILD_SCRIPT.contains("build_code_server; build_jupyter;"), "`all` builds it");
    }
}
