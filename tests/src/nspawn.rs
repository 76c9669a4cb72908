//! A real systemd to install the packages into: a minimal Debian bookworm
//! root file system (debootstrap, cached under `target/nspawn/`), given to
//! each test as an overlay (the cache read-only below, the test's writes in
//! its own upper folder: no 400 MB copy per machine on a small CI disk; a
//! plain copy where overlayfs cannot be mounted) and booted with
//! `systemd-nspawn -b --private-network`.
//!
//! The recipe that works on a host without a systemd of its own: nspawn
//! runs inside `unshare -m` with a tmpfs over `/run/systemd` (so it does not
//! look for a host manager to register with), `--register=no --keep-unit
//! --console=read-only`; the test drives the container through `nsenter`
//! into its namespaces. nspawn leaves `payload` and `supervisor` cgroups
//! at the top of each hierarchy, so machines boot one at a time on a host
//! (a lock shared with other test processes) and those folders are removed
//! afterwards. The container has no network but its own
//! loopback.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

use crate::run_checked;

/// Packages in the cached root file system beyond debootstrap's minbase:
/// systemd as PID 1, and what the sonde packages and tests use.
const INCLUDE: &str = "systemd,systemd-sysv,dbus,procps,rpm";
const SUITE: &str = "bookworm";
/// Prefix of machine names (with the test process id).
const PREFIX: &str = "sonde-t";

fn nspawn_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/nspawn")
}

/// The Debian mirror this machine's apt uses (override with
/// `SONDE_TEST_DEBIAN_MIRROR`).
fn mirror() -> String {
    if let Ok(m) = std::env::var("SONDE_TEST_DEBIAN_MIRROR") {
        return m;
    }
    let mut texts = Vec::new();
    if let Ok(entries) = std::fs::read_dir("/etc/apt/sources.list.d") {
        for e in entries.flatten() {
            texts.extend(std::fs::read_to_string(e.path()));
        }
    }
    texts.extend(std::fs::read_to_string("/etc/apt/sources.list"));
    for text in &texts {
        // deb822 stanzas: a URIs line in a stanza whose suites name ours.
        for stanza in text.split("\n\n") {
            let field = |name: &str| {
                stanza
                    .lines()
                    .find_map(|l| l.strip_prefix(name).map(str::trim))
                    .unwrap_or_default()
            };
            let suites = field("Suites:");
            if suites.split_whitespace().any(|s| s == SUITE)
                && let Some(uri) = field("URIs:").split_whitespace().next()
            {
                return uri.to_owned();
            }
        }
        // One-line format: `deb URI SUITE COMPONENTS`.
        for line in text.lines() {
            let words: Vec<&str> = line.split_whitespace().collect();
            if words.len() >= 3 && words[0] == "deb" && words[2] == SUITE {
                return words[1].to_owned();
            }
        }
    }
    "http://deb.debian.org/debian".to_owned()
}

/// The cached root file system, made with debootstrap on first use.
pub fn rootfs() -> &'static Path {
    static ROOTFS: OnceLock<PathBuf> = OnceLock::new();
    ROOTFS.get_or_init(|| {
        let dir = nspawn_dir().join(SUITE);
        let stamp = format!("{SUITE} {INCLUDE}\n");
        if std::fs::read_to_string(dir.join(".sonde-rootfs"))
            .ok()
            .as_deref()
            == Some(&stamp)
        {
            return dir;
        }
        let tmp = nspawn_dir().join(format!("{SUITE}.tmp-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&tmp);
        std::fs::create_dir_all(nspawn_dir()).expect("create target/nspawn");
        let mirror = mirror();
        let started = Instant::now();
        let out = Command::new("debootstrap")
            .args(["--variant=minbase", &format!("--include={INCLUDE}"), SUITE])
            .arg(&tmp)
            .arg(&mirror)
            .output()
            .unwrap_or_else(|e| {
                panic!("debootstrap: cannot run: {e} (apt-get install debootstrap)")
            });
        assert!(
            out.status.success(),
            "debootstrap {SUITE} from {mirror} failed:\n{}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        std::fs::write(tmp.join("etc/hostname"), "sonde-test\n").unwrap();
        std::fs::write(
            tmp.join("etc/hosts"),
            "127.0.0.1 localhost\n::1 localhost ip6-localhost\n",
        )
        .unwrap();
        std::fs::write(tmp.join(".sonde-rootfs"), &stamp).unwrap();
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::rename(&tmp, &dir).expect("move root file system into place");
        eprintln!(
            "debootstrap {SUITE} from {mirror}: {:.1} s",
            started.elapsed().as_secs_f64()
        );
        dir
    })
}

/// One machine at a time on this host: nspawn's cgroup folders are per
/// host, not per machine. A mutex for the tests of this process, and an
/// exclusive `flock` for other test processes (another checkout's run).
struct BootLock {
    _file: nix::fcntl::Flock<std::fs::File>,
    _guard: MutexGuard<'static, ()>,
}

fn boot_lock() -> BootLock {
    static LOCK: Mutex<()> = Mutex::new(());
    let guard = LOCK
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let path = std::env::temp_dir().join("sonde-tests-nspawn.lock");
    let file = std::fs::File::create(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let file = nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockExclusive)
        .unwrap_or_else(|(_, e)| panic!("flock {}: {e}", path.display()));
    BootLock {
        _file: file,
        _guard: guard,
    }
}

/// Kills nspawn processes of test processes that no longer exist, and
/// removes the cgroup folders nspawn leaves behind.
fn sweep_stale() {
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) else {
            continue;
        };
        let args: Vec<String> = cmdline
            .split(|b| *b == 0)
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .collect();
        if !args.first().is_some_and(|a| a.ends_with("systemd-nspawn")) {
            continue;
        }
        let owner = args
            .iter()
            .find_map(|a| a.strip_prefix(&format!("--machine={PREFIX}-")))
            .and_then(|rest| rest.split('-').next())
            .map(str::to_owned);
        if let Some(pid) = owner
            && !Path::new(&format!("/proc/{pid}")).exists()
            && let Ok(nspawn) = entry.file_name().to_string_lossy().parse::<u32>()
        {
            kill_machine(nspawn);
        }
    }
    remove_cgroups();
    // Folders (and overlay mounts) of machines whose test process is gone.
    for entry in std::fs::read_dir(nspawn_dir())
        .into_iter()
        .flatten()
        .flatten()
    {
        let name = entry.file_name().to_string_lossy().into_owned();
        let owner = name
            .strip_prefix(&format!("{PREFIX}-"))
            .and_then(|rest| rest.split('-').next());
        if let Some(pid) = owner
            && entry.path().is_dir()
            && !Path::new(&format!("/proc/{pid}")).exists()
        {
            remove_machine_dir(&entry.path());
        }
    }
}

/// The machine's root under `dir`: an overlay of the cached `base`, or, if
/// the kernel will not mount one here, a copy of it.
fn overlay_root(base: &Path, dir: &Path) -> PathBuf {
    let root = dir.join("root");
    for sub in ["root", "upper", "work"] {
        std::fs::create_dir_all(dir.join(sub))
            .unwrap_or_else(|e| panic!("create {}: {e}", dir.join(sub).display()));
    }
    let options = format!(
        "lowerdir={},upperdir={},workdir={}",
        base.display(),
        dir.join("upper").display(),
        dir.join("work").display()
    );
    let out = Command::new("mount")
        .args(["-t", "overlay", "overlay", "-o", &options])
        .arg(&root)
        .output()
        .expect("run mount");
    if !out.status.success() {
        eprintln!(
            "overlayfs not available ({}); copying the root file system",
            String::from_utf8_lossy(&out.stderr).trim()
        );
        std::fs::remove_dir(&root).expect("remove empty root folder");
        run_checked(Command::new("cp").arg("-a").arg(base).arg(&root));
    }
    root
}

/// Unmounts a machine's overlay (if mounted) and removes its folder. A root
/// that stays mounted is left in place rather than deleted through.
fn remove_machine_dir(dir: &Path) {
    let root = dir.join("root");
    if is_mount_point(&root) {
        let _ = Command::new("umount").arg(&root).status();
        if is_mount_point(&root) {
            let _ = Command::new("umount").arg("-l").arg(&root).status();
        }
        if is_mount_point(&root) {
            eprintln!("{} is still mounted; not removing it", root.display());
            return;
        }
    }
    let _ = std::fs::remove_dir_all(dir);
}

fn is_mount_point(path: &Path) -> bool {
    let Ok(mounts) = std::fs::read_to_string("/proc/self/mountinfo") else {
        return false;
    };
    let Ok(path) = path.canonicalize() else {
        return false;
    };
    // Field 5 is the mount point (octal escapes for spaces; ours have none).
    mounts
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .any(|m| Path::new(m) == path)
}

/// Removes `payload` and `supervisor` (deepest first) from every cgroup
/// hierarchy; folders that still hold processes stay.
fn remove_cgroups() {
    fn rmdir_tree(dir: &Path) {
        if let Ok(entries) = std::fs::read_dir(dir) {
            for e in entries.flatten() {
                if e.file_type().is_ok_and(|t| t.is_dir()) {
                    rmdir_tree(&e.path());
                }
            }
        }
        let _ = std::fs::remove_dir(dir);
    }
    let mut roots = vec![PathBuf::from("/sys/fs/cgroup")];
    if let Ok(entries) = std::fs::read_dir("/sys/fs/cgroup") {
        roots.extend(entries.flatten().map(|e| e.path()));
    }
    for root in roots {
        for name in ["payload", "supervisor"] {
            let dir = root.join(name);
            if dir.is_dir() {
                rmdir_tree(&dir);
            }
        }
    }
}

/// The child of `nspawn` named `systemd` (the container's PID 1), if any.
fn init_under(nspawn: u32) -> Option<u32> {
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
            continue;
        };
        // pid (comm) state ppid ...
        let Some((head, rest)) = stat.rsplit_once(") ") else {
            continue;
        };
        let comm = head.split_once(" (").map(|(_, c)| c).unwrap_or_default();
        let ppid = rest
            .split_whitespace()
            .nth(1)
            .and_then(|p| p.parse::<u32>().ok());
        if comm == "systemd" && ppid == Some(nspawn) {
            return entry.file_name().to_string_lossy().parse().ok();
        }
    }
    None
}

/// Kills a container: its PID 1 first (which ends every process in its
/// PID namespace), then nspawn.
fn kill_machine(nspawn: u32) {
    use nix::sys::signal::{Signal, kill};
    use nix::unistd::Pid;
    let as_pid = |p: u32| Pid::from_raw(i32::try_from(p).unwrap_or(i32::MAX));
    if let Some(init) = init_under(nspawn) {
        let _ = kill(as_pid(init), Signal::SIGKILL);
    }
    let _ = kill(as_pid(nspawn), Signal::SIGKILL);
}

/// A booted container; powered off and deleted on drop.
pub struct Machine {
    name: String,
    /// Everything of this machine on the host (`root`, and the overlay's
    /// `upper` and `work`).
    dir: PathBuf,
    root: PathBuf,
    nspawn: Child,
    /// Host PID of the container's systemd.
    init: u32,
    console: PathBuf,
    _lock: BootLock,
}

impl std::fmt::Debug for Machine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Machine")
            .field("name", &self.name)
            .field("init", &self.init)
            .finish_non_exhaustive()
    }
}

impl Machine {
    /// Copies the cached root file system and boots it; returns once
    /// systemd reports the system running (or degraded).
    pub fn boot(tag: &str) -> Self {
        let lock = boot_lock();
        sweep_stale();
        let base = rootfs();
        let name = format!("{PREFIX}-{}-{tag}", std::process::id());
        let dir = nspawn_dir().join(&name);
        remove_machine_dir(&dir);
        let started = Instant::now();
        let root = overlay_root(base, &dir);
        let copied = started.elapsed();
        let console = nspawn_dir().join(format!("{name}.console"));
        let log = std::fs::File::create(&console).expect("console log");
        let nspawn = Command::new("unshare")
            .args(["-m", "--", "sh", "-c"])
            .arg(
                "mount -t tmpfs tmpfs /run/systemd && exec systemd-nspawn -q -b --private-network \
                 --register=no --keep-unit --console=read-only \"$@\"",
            )
            .arg("sh")
            .arg(format!("--machine={name}"))
            .arg("-D")
            .arg(&root)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("console log"))
            .stderr(log)
            .spawn()
            .expect("start systemd-nspawn (apt-get install systemd-container)");
        let mut machine = Self {
            name,
            dir,
            root,
            init: 0,
            nspawn,
            console,
            _lock: lock,
        };
        machine.init = machine.find_init();
        machine.wait_booted();
        eprintln!(
            "{}: root ready in {:.1} s, booted in {:.1} s",
            machine.name,
            copied.as_secs_f64(),
            started.elapsed().saturating_sub(copied).as_secs_f64()
        );
        machine
    }

    /// The container's PID 1 seen from the host: nspawn's child named
    /// `systemd`.
    fn find_init(&mut self) -> u32 {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(Some(status)) = self.nspawn.try_wait() {
                panic!(
                    "systemd-nspawn exited ({status}) before booting:\n{}",
                    self.console_text()
                );
            }
            if let Some(pid) = init_under(self.nspawn.id()) {
                return pid;
            }
            assert!(
                Instant::now() < deadline,
                "no systemd under nspawn after 30 s:\n{}",
                self.console_text()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn wait_booted(&self) {
        let deadline = Instant::now() + Duration::from_secs(60);
        while !self
            .run(&["test", "-S", "/run/systemd/private"])
            .status
            .success()
        {
            assert!(
                Instant::now() < deadline,
                "container manager never listened:\n{}",
                self.console_text()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        let out = self.run(&["timeout", "60", "systemctl", "is-system-running", "--wait"]);
        let state = String::from_utf8_lossy(&out.stdout).trim().to_owned();
        if state == "degraded" {
            eprintln!(
                "container degraded; failed units:\n{}",
                self.sh("systemctl --failed --no-legend")
            );
        } else {
            assert_eq!(
                state,
                "running",
                "boot did not finish:\n{}",
                self.console_text()
            );
        }
    }

    fn console_text(&self) -> String {
        std::fs::read_to_string(&self.console).unwrap_or_default()
    }

    /// The container's root directory on the host (files written there
    /// appear in the container, outside its own mounts such as `/run`).
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Runs a command inside the container's namespaces.
    pub fn run(&self, args: &[&str]) -> Output {
        Command::new("nsenter")
            .args([
                "-t",
                &self.init.to_string(),
                "-m",
                "-u",
                "-i",
                "-n",
                "-p",
                "-C",
                "--",
            ])
            .args(args)
            .env("DEBIAN_FRONTEND", "noninteractive")
            .env("SYSTEMD_PAGER", "")
            .env("SYSTEMD_COLORS", "0")
            .stdin(Stdio::null())
            .output()
            .expect("nsenter")
    }

    /// Runs `script` with `/bin/sh -c` in the container; panics unless it
    /// succeeds; returns stdout.
    pub fn sh(&self, script: &str) -> String {
        let out = self.run(&["sh", "-c", script]);
        assert!(
            out.status.success(),
            "in {}: `{script}` failed ({}):\n{}{}",
            self.name,
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// One property of a unit (`systemctl show -p NAME --value`).
    pub fn show(&self, unit: &str, property: &str) -> String {
        self.sh(&format!("systemctl show -p {property} --value {unit}"))
            .trim()
            .to_owned()
    }

    /// Polls `probe` (a shell script) until it succeeds; panics after
    /// `timeout` with the unit journal of `unit`.
    pub fn eventually(&self, what: &str, timeout: Duration, unit: &str, probe: &str) {
        let deadline = Instant::now() + timeout;
        loop {
            if self.run(&["sh", "-c", probe]).status.success() {
                return;
            }
            if Instant::now() > deadline {
                let journal = self.run(&["journalctl", "-u", unit, "--no-pager", "-n", "50"]);
                panic!(
                    "timed out after {timeout:?} waiting for {what}\njournal of {unit}:\n{}",
                    String::from_utf8_lossy(&journal.stdout)
                );
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

impl Drop for Machine {
    fn drop(&mut self) {
        let _ = self.run(&["systemctl", "poweroff"]);
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.nspawn.try_wait() {
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        if !matches!(self.nspawn.try_wait(), Ok(Some(_))) {
            eprintln!("{}: did not power off in 30 s; killing", self.name);
            kill_machine(self.nspawn.id());
            let _ = self.nspawn.wait();
        }
        remove_cgroups();
        remove_machine_dir(&self.dir);
        let _ = std::fs::remove_file(&self.console);
    }
}
