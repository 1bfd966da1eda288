//! A stand-in for the mail store's redolog, and a view of a file tree, for
//! the redolog-stream tests on btrfs (tests/redostream.rs) and in the
//! storage VM (tests/vm/redostream.rs, which includes this file by path).

use std::collections::BTreeMap;
use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};

/// Appends fsynced lines to `root/redo.log`, rolls it over into `archive/`.
pub struct Log {
    root: PathBuf,
    pub n: u64,
}

impl Log {
    pub fn new(root: &Path) -> Log {
        std::fs::create_dir_all(root.join("archive")).unwrap();
        std::fs::write(root.join("redo.log"), b"").unwrap();
        Log {
            root: root.to_path_buf(),
            n: 0,
        }
    }

    pub fn append(&mut self, k: usize) {
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(self.root.join("redo.log"))
            .unwrap();
        for _ in 0..k {
            self.n += 1;
            writeln!(
                f,
                "record {} {}",
                self.n,
                "y".repeat((self.n % 89) as usize)
            )
            .unwrap();
        }
        f.sync_data().unwrap();
    }

    pub fn rollover(&mut self) {
        std::fs::rename(
            self.root.join("redo.log"),
            self.root.join(format!("archive/redo-{:08}.log", self.n)),
        )
        .unwrap();
        std::fs::write(self.root.join("redo.log"), b"").unwrap();
        File::open(&self.root).unwrap().sync_all().unwrap();
    }
}

/// Every entry below `root` (not following symlinks): its type, the hash of
/// a regular file, a symlink's target; special files are never opened.
pub fn tree_state(root: &Path) -> BTreeMap<String, String> {
    use std::os::unix::fs::FileTypeExt;
    fn walk(root: &Path, dir: &Path, out: &mut BTreeMap<String, String>) {
        let mut ents: Vec<_> = std::fs::read_dir(dir).unwrap().flatten().collect();
        ents.sort_by_key(|e| e.file_name());
        for e in ents {
            let p = e.path();
            let rel = p.strip_prefix(root).unwrap().to_string_lossy().into_owned();
            let t = std::fs::symlink_metadata(&p).unwrap().file_type();
            let v = if t.is_dir() {
                walk(root, &p, out);
                "dir".to_string()
            } else if t.is_file() {
                let hash = blake3::hash(&std::fs::read(&p).unwrap());
                format!("file {}", hash.to_hex())
            } else if t.is_symlink() {
                format!("link {}", std::fs::read_link(&p).unwrap().display())
            } else if t.is_fifo() {
                "fifo".into()
            } else if t.is_socket() {
                "socket".into()
            } else {
                "device".into()
            };
            out.insert(rel, v);
        }
    }
    let mut out = BTreeMap::new();
    walk(root, root, &mut out);
    out
}
