//! A stream reader tells the storage every frame it is about to read, at once, so that a
//! cold read waits for the disk about once rather than once per frame; frames already in
//! the frame cache are not asked for again.
#![allow(clippy::unwrap_used)]

use std::io;
use std::ops::ControlFlow;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use streamlog::io::{FsStorage, LockGuard, Mapping, Storage, StorageFile};
use streamlog::{Durability, ExpectedVersion, NewEvent, Options, Store};

/// Every `will_need(offset, len)` hint, with the file it was given for.
type Hints = Arc<Mutex<Vec<(PathBuf, u64, u64)>>>;

/// The real file system, recording the read-ahead hints it is given.
#[derive(Debug, Default)]
struct Recording {
    hints: Hints,
}

#[derive(Debug)]
struct RecordingFile {
    path: PathBuf,
    inner: Arc<dyn StorageFile>,
    hints: Hints,
}

impl StorageFile for RecordingFile {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        self.inner.read_at(buf, offset)
    }
    fn write_at(&self, buf: &[u8], offset: u64) -> io::Result<()> {
        self.inner.write_at(buf, offset)
    }
    fn sync_data(&self) -> io::Result<()> {
        self.inner.sync_data()
    }
    fn truncate(&self, len: u64) -> io::Result<()> {
        self.inner.truncate(len)
    }
    fn len(&self) -> io::Result<u64> {
        self.inner.len()
    }
    fn will_need(&self, offset: u64, len: u64) -> io::Result<()> {
        self.hints
            .lock()
            .unwrap()
            .push((self.path.clone(), offset, len));
        self.inner.will_need(offset, len)
    }
    fn map(&self) -> io::Result<Mapping> {
        self.inner.map()
    }

    fn map_prefix(&self, len: u64) -> io::Result<Mapping> {
        self.inner.map_prefix(len)
    }
}

impl Recording {
    fn wrap(&self, path: &Path, inner: Arc<dyn StorageFile>) -> Arc<dyn StorageFile> {
        Arc::new(RecordingFile {
            path: path.to_path_buf(),
            inner,
            hints: Arc::clone(&self.hints),
        })
    }
}

impl Storage for Recording {
    fn create_dir_all(&self, path: &Path) -> io::Result<()> {
        FsStorage.create_dir_all(path)
    }
    fn open(&self, path: &Path) -> io::Result<Arc<dyn StorageFile>> {
        Ok(self.wrap(path, FsStorage.open(path)?))
    }
    fn open_read_only(&self, path: &Path) -> io::Result<Arc<dyn StorageFile>> {
        Ok(self.wrap(path, FsStorage.open_read_only(path)?))
    }
    fn create(&self, path: &Path) -> io::Result<Arc<dyn StorageFile>> {
        Ok(self.wrap(path, FsStorage.create(path)?))
    }
    fn list(&self, dir: &Path) -> io::Result<Vec<String>> {
        FsStorage.list(dir)
    }
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        FsStorage.rename(from, to)
    }
    fn remove(&self, path: &Path) -> io::Result<()> {
        FsStorage.remove(path)
    }
    fn remove_dir(&self, path: &Path) -> io::Result<()> {
        FsStorage.remove_dir(path)
    }
    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        FsStorage.sync_dir(dir)
    }
    fn exists(&self, path: &Path) -> io::Result<bool> {
        FsStorage.exists(path)
    }
    fn try_lock(&self, path: &Path, shared: bool) -> io::Result<Option<Box<dyn LockGuard>>> {
        FsStorage.try_lock(path, shared)
    }
}

#[test]
fn a_stream_read_asks_for_all_its_uncached_frames_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let storage = Arc::new(Recording::default());
    let hints = Arc::clone(&storage.hints);
    let options = Options::default()
        .with_durability(Durability::Buffered)
        .with_storage(storage);
    // 40 appends of the read stream, each between 20 appends of others: its frames lie
    // apart from each other in the log, more than a page apart.
    let payload = vec![7u8; 300];
    let mut positions = Vec::new();
    {
        let store = Store::open_with(dir.path(), options.clone()).unwrap();
        for i in 0..40 {
            for j in 0..20 {
                store
                    .append(
                        &format!("other-{j}"),
                        ExpectedVersion::Any,
                        [NewEvent::new("T", payload.clone())],
                    )
                    .unwrap();
            }
            let r = store
                .append(
                    "read-me",
                    ExpectedVersion::Any,
                    [NewEvent::new("T", format!("{i}").into_bytes())],
                )
                .unwrap();
            positions.push(r.position.0);
        }
        store.close().unwrap();
    }
    let store = Store::open_with(dir.path(), options).unwrap();
    hints.lock().unwrap().clear();
    let read = |store: &Store| {
        let mut versions = Vec::new();
        store
            .read_stream_with("read-me", 0, |e| {
                versions.push(e.version);
                ControlFlow::Continue(())
            })
            .unwrap();
        assert_eq!(versions, (0..40).collect::<Vec<u64>>());
    };
    read(&store);
    let first_read: Vec<(PathBuf, u64, u64)> = std::mem::take(&mut *hints.lock().unwrap());
    // Every frame after the first one (read before the others are known) is covered by a
    // hint, and every hint is about a page of a segment file.
    assert!(!first_read.is_empty(), "no hint at all");
    for (path, _, len) in &first_read {
        assert!(path.to_string_lossy().ends_with(".seg"), "{path:?}");
        assert!(*len >= 4096 && *len <= 1 << 20, "{len}");
    }
    for &p in &positions[1..] {
        assert!(
            first_read.iter().any(|(_, offset, len)| {
                // The log's first segment starts at position 0: file offset = position.
                *offset <= p && p < offset + len
            }),
            "frame at {p} not hinted: {first_read:?}"
        );
    }
    // The stream's frames are far apart: one hint per frame, asked before they are read.
    assert!(first_read.len() >= 30, "{}", first_read.len());
    // Read again: every frame comes from the frame cache, and nothing is asked for.
    read(&store);
    assert!(
        hints.lock().unwrap().is_empty(),
        "{:?}",
        hints.lock().unwrap()
    );
}
