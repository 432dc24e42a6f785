//! A temporary config directory for the control plane's file source, with atomic writes.

use std::fs;
use std::path::{Path, PathBuf};

use anyhow::Context as _;

/// A temporary directory removed on drop. Writes are atomic (write a hidden temp file, then
/// rename), so a watcher never reads a half-written file.
#[derive(Debug)]
pub struct TempConfigDir {
    dir: tempfile::TempDir,
}

impl TempConfigDir {
    /// Creates an empty directory under the system temp dir.
    pub fn new() -> anyhow::Result<Self> {
        let dir = tempfile::Builder::new()
            .prefix("trellis-config-")
            .tempdir()?;
        Ok(Self { dir })
    }

    /// The directory's path.
    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Creates or replaces `name` (a file name, not a path) with `yaml`; returns its path.
    pub fn write(&self, name: &str, yaml: &str) -> anyhow::Result<PathBuf> {
        let path = self.dir.path().join(name);
        // The temp name starts with a dot and ends in .tmp, so config loaders skip it.
        let staging = self.dir.path().join(format!(".{name}.tmp"));
        fs::write(&staging, yaml).with_context(|| format!("write {}", staging.display()))?;
        fs::rename(&staging, &path).with_context(|| format!("rename to {}", path.display()))?;
        Ok(path)
    }

    /// Deletes `name`.
    pub fn remove(&self, name: &str) -> anyhow::Result<()> {
        let path = self.dir.path().join(name);
        fs::remove_file(&path).with_context(|| format!("remove {}", path.display()))
    }
}
