//! The HTML report (placeholder until the writer lands).

use std::path::{Path, PathBuf};

use anyhow::Context as _;

use super::{Outcome, RunInfo};

/// Writes the report into `dir` and gives its path.
pub(crate) fn write(dir: &Path, info: &RunInfo, outcomes: &[Outcome]) -> anyhow::Result<PathBuf> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let path = dir.join("report.html");
    let _ = (info, outcomes);
    std::fs::write(&path, "<!doctype html><title>brigade lab</title>")
        .with_context(|| format!("writing {}", path.display()))?;
    Ok(path)
}
