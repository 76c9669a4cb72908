//! A small tmpfs mounted for one test, to run a disk out of space on
//! purpose (the spool's or the collector's state directory). Unmounted when
//! dropped, also when the test fails.

use std::path::{Path, PathBuf};
use std::process::Command;

/// A mounted tmpfs of a fixed size.
pub struct Tmpfs {
    path: PathBuf,
}

impl Tmpfs {
    /// Mounts a tmpfs of `size` (mount's syntax: `512k`, `4m`) at `path`,
    /// creating the directory. Panics, saying why, when it cannot.
    pub fn mount(path: &Path, size: &str) -> Self {
        std::fs::create_dir_all(path).expect("tmpfs mount point");
        let out = Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={size},mode=0700"),
                "sonde-test",
            ])
            .arg(path)
            .output()
            .expect("run mount");
        assert!(
            out.status.success(),
            "cannot mount a tmpfs at {} (the fault tests need root): {}",
            path.display(),
            String::from_utf8_lossy(&out.stderr)
        );
        Self {
            path: path.to_owned(),
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Fills what is left with a file `name` (until ENOSPC).
    pub fn fill(&self, name: &str) {
        use std::io::Write as _;
        let mut f = std::fs::File::create(self.path.join(name)).expect("filler");
        let block = vec![0u8; 4096];
        while f.write_all(&block).is_ok() {}
        let _ = f.sync_all();
    }

    /// Free bytes left.
    pub fn free(&self) -> u64 {
        let s = nix::sys::statvfs::statvfs(&self.path).expect("statvfs");
        s.blocks_available() * s.fragment_size()
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let ok = Command::new("umount")
            .arg(&self.path)
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            let _ = Command::new("umount").arg("-l").arg(&self.path).status();
        }
    }
}
