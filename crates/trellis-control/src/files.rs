//! The file config source: loads every YAML file of a directory, then watches it and reloads
//! on change. A valid set replaces the serving config; an invalid one is logged and recorded
//! while the last good config keeps serving.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use notify::{RecommendedWatcher, RecursiveMode, Watcher};
use tokio::sync::mpsc;
use trellis_api::DirLoader;

use crate::control::ControlPlane;

/// Quiet period after a file event before reloading, so an editor's multi-step save is one
/// reload.
const DEBOUNCE: Duration = Duration::from_millis(50);

/// Why the directory cannot be watched.
#[derive(Debug, thiserror::Error)]
pub enum FilesError {
    /// The path is not a readable directory.
    #[error("config dir {0}: not a directory (create it or pass --config-dir)")]
    NotADirectory(PathBuf),
    /// inotify (or the platform's watcher) refused.
    #[error("watching config dir {path}: {source}")]
    Watch {
        /// The directory.
        path: PathBuf,
        /// The watcher's error.
        source: notify::Error,
    },
}

/// A running watch; dropping it stops watching.
pub struct FileSource {
    _watcher: RecommendedWatcher,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for FileSource {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl FileSource {
    /// Loads `dir` once (before returning) and keeps reloading it on change.
    pub async fn start(dir: &Path, control: Arc<ControlPlane>) -> Result<FileSource, FilesError> {
        if !dir.is_dir() {
            return Err(FilesError::NotADirectory(dir.to_owned()));
        }
        let (tx, mut rx) = mpsc::channel::<()>(1);
        let mut watcher =
            notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
                if event.is_ok_and(|e| !e.kind.is_access()) {
                    // A full channel already holds a pending reload, which covers this event.
                    let _ = tx.try_send(());
                }
            })
            .map_err(|source| FilesError::Watch {
                path: dir.to_owned(),
                source,
            })?;
        watcher
            .watch(dir, RecursiveMode::NonRecursive)
            .map_err(|source| FilesError::Watch {
                path: dir.to_owned(),
                source,
            })?;
        // Files whose text is unchanged are not parsed again.
        let loader = Arc::new(Mutex::new(DirLoader::default()));
        reload(dir, &loader, &control).await;
        let dir = dir.to_owned();
        let task = tokio::spawn(async move {
            while rx.recv().await.is_some() {
                tokio::time::sleep(DEBOUNCE).await;
                while rx.try_recv().is_ok() {}
                reload(&dir, &loader, &control).await;
            }
        });
        Ok(FileSource {
            _watcher: watcher,
            task,
        })
    }
}

async fn reload(dir: &Path, loader: &Arc<Mutex<DirLoader>>, control: &ControlPlane) {
    let owned = dir.to_owned();
    let loader = loader.clone();
    let loaded = tokio::task::spawn_blocking(move || {
        // A panic mid-load leaves only whole cache entries behind.
        let mut loader = loader.lock().unwrap_or_else(PoisonError::into_inner);
        loader.load(&owned)
    })
    .await;
    match loaded {
        Ok(Ok(config)) => {
            if *control.config().resources != config || !control.loaded() {
                tracing::info!(dir = %dir.display(), "config accepted");
                control.accept_config(config);
            } else {
                control.accept_unchanged();
            }
        }
        Ok(Err(errors)) => {
            for e in errors.iter() {
                tracing::error!(error = %e, "config rejected; the last good config keeps serving");
            }
            control.reject_config(&errors);
        }
        Err(e) => tracing::error!(error = %e, "config loader panicked"),
    }
}
