//! `image build`: runs the build recipe embedded in the binary, so the one binary can build its image anywhere.

use anyhow::{bail, Context};

const BUILD_SCRIPT: &str = include_str!("../../scripts/build-image.sh");

/// Which image the recipe builds.
#[derive(Debug, Clone, Copy)]
pub enum ImageKind {
    /// code-server, for students.
    CodeServer,
    /// busybox httpd, for tests.
    Tiny,
}

pub fn build(tag: &str, kind: ImageKind) -> anyhow::Result<()> {
    let script = std::env::temp_dir().join(format!("workspaced-build-image-{}.sh", std::process::id()));
    std::fs::write(&script, BUILD_SCRIPT).context("cannot write the build script")?;
    let mut cmd = std::process::Command::new("bash");
    match kind {
        ImageKind::CodeServer => cmd.arg(&script).arg("code-server").env("WORKSPACED_IMAGE", tag),
        ImageKind::Tiny => cmd.arg(&script).arg("tiny").env("WORKSPACED_TINY_IMAGE", tag),
    };
    let status = cmd.status().context("cannot run bash");
    let _ = std::fs::remove_file(&script);
    if !status?.success() {
        bail!("image build failed");
    }
    Ok(())
}
