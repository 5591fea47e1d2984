//! Temporary directories.

use std::path::{Path, PathBuf};

/// A fresh directory under the system temp dir, named `PREFIX-RANDOM`, removed with its content on
/// drop. It dereferences to its [`Path`], so `dir.join("x")` and `&dir` as a `&Path` work.
#[derive(Debug)]
pub struct TempDir(tempfile::TempDir);

impl TempDir {
    /// A fresh one named after `prefix`.
    pub fn new(prefix: &str) -> TempDir {
        let dir = tempfile::Builder::new()
            .prefix(&format!("{prefix}-"))
            .tempdir()
            .unwrap_or_else(|e| panic!("creating a temporary directory {prefix}-*: {e}"));
        TempDir(dir)
    }

    /// Its path.
    pub fn path(&self) -> &Path {
        self.0.path()
    }

    /// A fresh subdirectory `name` (created if missing).
    pub fn sub(&self, name: &str) -> PathBuf {
        let dir = self.path().join(name);
        std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("creating {}: {e}", dir.display()));
        dir
    }

    /// Keeps the directory (it is no longer removed on drop) and returns its path.
    pub fn keep(self) -> PathBuf {
        self.0.keep()
    }
}

impl std::ops::Deref for TempDir {
    type Target = Path;

    fn deref(&self) -> &Path {
        self.path()
    }
}

impl AsRef<Path> for TempDir {
    fn as_ref(&self) -> &Path {
        self.path()
    }
}
