//! System metrics from the kernel's own counters: CPU utilisation
//! (`/proc/stat`), load (`/proc/loadavg`), memory (`/proc/meminfo`), file
//! systems (`/proc/self/mounts` + `statvfs`) with their block devices'
//! throughput (`/proc/diskstats`), and interface throughput
//! (`/proc/self/net/dev`, the agent's network namespace).
//!
//! Rates need two readings: [`Sampler::sample`] keeps the previous raw
//! counters and reports the difference over the elapsed (monotonic) time,
//! so the first call only primes it. A counter that went backwards (an
//! interface re-created, a device replaced) counts as zero for that
//! interval rather than as an absurd rate. A file that cannot be read is
//! named in `error` and the rest is still reported.
//!
//! Parsing is separate from reading, so the parsers are tested on fixed
//! text and the sampler on the real `/proc`.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::time::Instant;

use sonde_proto::v1::{DiskMetrics, InterfaceMetrics, SystemMetrics};

/// File systems that hold no disk space of their own (Telegraf's and
/// `node_exporter`'s usual exclusions); configurable as `metrics.ignore-fs`.
pub const DEFAULT_IGNORE_FS: &[&str] = &[
    "tmpfs",
    "devtmpfs",
    "devfs",
    "ramfs",
    "proc",
    "sysfs",
    "cgroup",
    "cgroup2",
    "devpts",
    "mqueue",
    "debugfs",
    "tracefs",
    "securityfs",
    "pstore",
    "bpf",
    "autofs",
    "hugetlbfs",
    "fusectl",
    "configfs",
    "binfmt_misc",
    "nsfs",
    "rpc_pipefs",
    "efivarfs",
    "squashfs",
    "iso9660",
    "overlay",
    "fuse.lxcfs",
];

/// Bytes per sector in `/proc/diskstats` (always 512, whatever the device).
const SECTOR: u64 = 512;

/// CPU time counters (jiffies) of all CPUs together.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CpuTimes {
    pub busy: u64,
    pub total: u64,
    pub count: u32,
}

/// `/proc/stat`: the aggregate `cpu` line and the number of `cpuN` lines.
/// Busy is everything but idle and iowait; guest time is already inside
/// user and nice, so it is not added again.
pub fn parse_stat(text: &str) -> Option<CpuTimes> {
    let mut times = None;
    let mut count = 0;
    for line in text.lines() {
        let mut fields = line.split_ascii_whitespace();
        match fields.next() {
            Some("cpu") => {
                let v: Vec<u64> = fields.take(8).filter_map(|f| f.parse().ok()).collect();
                if v.len() < 4 {
                    return None;
                }
                let total: u64 = v.iter().sum();
                let idle = v[3] + v.get(4).copied().unwrap_or(0);
                times = Some((total - idle, total));
            }
            Some(name) if name.starts_with("cpu") => count += 1,
            _ => {}
        }
    }
    times.map(|(busy, total)| CpuTimes { busy, total, count })
}

/// `/proc/loadavg`: the 1, 5 and 15 minute load averages.
pub fn parse_loadavg(text: &str) -> Option<(f64, f64, f64)> {
    let mut f = text.split_ascii_whitespace().map(str::parse::<f64>);
    Some((f.next()?.ok()?, f.next()?.ok()?, f.next()?.ok()?))
}

/// Memory figures in bytes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Memory {
    pub total: u64,
    pub available: u64,
    pub swap_total: u64,
    pub swap_free: u64,
}

/// `/proc/meminfo` (values in kB). Without `MemAvailable` (kernels before
/// 3.14) available is free + buffers + cached.
pub fn parse_meminfo(text: &str) -> Option<Memory> {
    let mut kb: HashMap<&str, u64> = HashMap::new();
    for line in text.lines() {
        let Some((key, rest)) = line.split_once(':') else {
            continue;
        };
        if let Some(v) = rest
            .split_ascii_whitespace()
            .next()
            .and_then(|v| v.parse().ok())
        {
            kb.insert(key, v);
        }
    }
    let get = |k: &str| kb.get(k).copied();
    let available = get("MemAvailable").or_else(|| {
        Some(get("MemFree")? + get("Buffers").unwrap_or(0) + get("Cached").unwrap_or(0))
    })?;
    Some(Memory {
        total: get("MemTotal")? * 1024,
        available: available * 1024,
        swap_total: get("SwapTotal").unwrap_or(0) * 1024,
        swap_free: get("SwapFree").unwrap_or(0) * 1024,
    })
}

/// One mounted file system.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mount {
    pub device: String,
    pub path: PathBuf,
    pub fs_type: String,
}

/// Undoes the octal escapes of `/proc/self/mounts` (`\040` for a space).
fn unescape(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\'
            && let Some(oct) = bytes.get(i + 1..i + 4)
            && oct.iter().all(|d| (b'0'..=b'7').contains(d))
        {
            out.push(
                oct.iter()
                    .fold(0u8, |v, d| v.wrapping_mul(8).wrapping_add(d - b'0')),
            );
            i += 4;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// `/proc/self/mounts`, without the file-system types in `ignore` and with
/// one entry per device (the shortest mount path: bind mounts repeat it).
pub fn parse_mounts(text: &str, ignore: &[String]) -> Vec<Mount> {
    let mut by_device: BTreeMap<String, Mount> = BTreeMap::new();
    for line in text.lines() {
        let mut f = line.split_ascii_whitespace();
        let (Some(device), Some(path), Some(fs_type)) = (f.next(), f.next(), f.next()) else {
            continue;
        };
        if ignore.iter().any(|i| i == fs_type) {
            continue;
        }
        let mount = Mount {
            device: unescape(device),
            path: PathBuf::from(unescape(path)),
            fs_type: fs_type.to_owned(),
        };
        match by_device.get(&mount.device) {
            Some(m) if m.path.as_os_str().len() <= mount.path.as_os_str().len() => {}
            _ => {
                by_device.insert(mount.device.clone(), mount);
            }
        }
    }
    let mut mounts: Vec<Mount> = by_device.into_values().collect();
    mounts.sort_by(|a, b| a.path.cmp(&b.path));
    mounts
}

/// Bytes read and written per block device, from `/proc/diskstats`.
pub fn parse_diskstats(text: &str) -> HashMap<String, (u64, u64)> {
    text.lines()
        .filter_map(|line| {
            let f: Vec<&str> = line.split_ascii_whitespace().collect();
            let read: u64 = f.get(5)?.parse().ok()?;
            let written: u64 = f.get(9)?.parse().ok()?;
            Some((f[2].to_owned(), (read * SECTOR, written * SECTOR)))
        })
        .collect()
}

/// Counters of one interface.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct NetCounters {
    pub rx_bytes: u64,
    pub rx_packets: u64,
    pub rx_errors: u64,
    pub rx_drops: u64,
    pub tx_bytes: u64,
    pub tx_packets: u64,
    pub tx_errors: u64,
    pub tx_drops: u64,
}

/// `/proc/net/dev`: counters per interface.
pub fn parse_net_dev(text: &str) -> BTreeMap<String, NetCounters> {
    text.lines()
        .filter_map(|line| {
            let (name, rest) = line.split_once(':')?;
            let v: Vec<u64> = rest
                .split_ascii_whitespace()
                .map(str::parse)
                .collect::<Result<_, _>>()
                .ok()?;
            if v.len() < 12 {
                return None;
            }
            Some((
                name.trim().to_owned(),
                NetCounters {
                    rx_bytes: v[0],
                    rx_packets: v[1],
                    rx_errors: v[2],
                    rx_drops: v[3],
                    tx_bytes: v[8],
                    tx_packets: v[9],
                    tx_errors: v[10],
                    tx_drops: v[11],
                },
            ))
        })
        .collect()
}

/// The raw counters of one reading.
#[derive(Debug, Clone, Default)]
struct Raw {
    cpu: Option<CpuTimes>,
    disks: HashMap<String, (u64, u64)>,
    net: BTreeMap<String, NetCounters>,
}

/// Turns readings into [`SystemMetrics`] over the time between them.
#[derive(Debug)]
pub struct Sampler {
    proc: PathBuf,
    ignore_fs: Vec<String>,
    last: Option<(Instant, Raw)>,
}

/// The kernel name of a mount's block device (`/dev/mapper/x` → `dm-0`).
fn block_name(device: &str) -> Option<String> {
    if !device.starts_with("/dev/") {
        return None;
    }
    let real = std::fs::canonicalize(device).unwrap_or_else(|_| PathBuf::from(device));
    real.file_name().map(|n| n.to_string_lossy().into_owned())
}

/// Per-second rate of a counter's increase (0 when it went backwards).
#[allow(clippy::cast_precision_loss)]
fn rate(now: u64, before: u64, secs: f64) -> f64 {
    now.saturating_sub(before) as f64 / secs
}

impl Sampler {
    /// Reads from `proc` (normally `/proc`).
    pub fn new(proc: &Path, ignore_fs: Vec<String>) -> Self {
        Self {
            proc: proc.to_owned(),
            ignore_fs,
            last: None,
        }
    }

    fn read(&self, name: &str, errors: &mut Vec<String>) -> Option<String> {
        let path = self.proc.join(name);
        match std::fs::read_to_string(&path) {
            Ok(t) => Some(t),
            Err(e) => {
                errors.push(format!("{}: {e}", path.display()));
                None
            }
        }
    }

    /// Takes a reading; from the second on, returns the metrics since the
    /// previous one, stamped `now_ns`.
    #[allow(clippy::cast_precision_loss)]
    pub fn sample(&mut self, now_ns: i64) -> Option<SystemMetrics> {
        let mut errors = Vec::new();
        let mut m = SystemMetrics {
            at_unix_nanos: now_ns,
            ..SystemMetrics::default()
        };
        let raw = Raw {
            cpu: self.read("stat", &mut errors).and_then(|t| parse_stat(&t)),
            disks: self
                .read("diskstats", &mut errors)
                .map(|t| parse_diskstats(&t))
                .unwrap_or_default(),
            net: self
                .read("self/net/dev", &mut errors)
                .map(|t| parse_net_dev(&t))
                .unwrap_or_default(),
        };
        if let Some((l1, l5, l15)) = self
            .read("loadavg", &mut errors)
            .and_then(|t| parse_loadavg(&t))
        {
            (m.load1, m.load5, m.load15) = (l1, l5, l15);
        }
        if let Some(mem) = self
            .read("meminfo", &mut errors)
            .and_then(|t| parse_meminfo(&t))
        {
            m.memory_total_bytes = mem.total;
            m.memory_available_bytes = mem.available;
            m.memory_used_bytes = mem.total.saturating_sub(mem.available);
            m.swap_total_bytes = mem.swap_total;
            m.swap_used_bytes = mem.swap_total.saturating_sub(mem.swap_free);
        }
        let mounts = self
            .read("self/mounts", &mut errors)
            .map(|t| parse_mounts(&t, &self.ignore_fs))
            .unwrap_or_default();
        let now = Instant::now();
        let (then, before) = self.last.replace((now, raw))?;
        let raw = &self.last.as_ref().expect("just set").1;
        let secs = now.duration_since(then).as_secs_f64().max(1e-3);
        m.interval_seconds = secs;
        if let (Some(c), Some(b)) = (raw.cpu, before.cpu) {
            let total = c.total.saturating_sub(b.total);
            if total > 0 {
                m.cpu_utilisation = c.busy.saturating_sub(b.busy) as f64 / total as f64;
            }
            m.cpu_count = c.count;
        }
        for mount in mounts {
            let stat = match nix::sys::statvfs::statvfs(&mount.path) {
                Ok(s) => s,
                Err(e) => {
                    errors.push(format!("statvfs {}: {e}", mount.path.display()));
                    continue;
                }
            };
            let frag = stat.fragment_size();
            if stat.blocks() == 0 {
                continue;
            }
            let mut disk = DiskMetrics {
                mount: mount.path.to_string_lossy().into_owned(),
                device: mount.device.clone(),
                fs_type: mount.fs_type,
                total_bytes: stat.blocks() * frag,
                used_bytes: (stat.blocks() - stat.blocks_free()) * frag,
                available_bytes: stat.blocks_available() * frag,
                ..DiskMetrics::default()
            };
            if let Some(name) = block_name(&mount.device)
                && let (Some(n), Some(b)) = (raw.disks.get(&name), before.disks.get(&name))
            {
                disk.read_bytes_per_second = rate(n.0, b.0, secs);
                disk.write_bytes_per_second = rate(n.1, b.1, secs);
            }
            m.disks.push(disk);
        }
        for (name, n) in &raw.net {
            let b = before.net.get(name).copied().unwrap_or(*n);
            m.interfaces.push(InterfaceMetrics {
                name: name.clone(),
                rx_bytes_per_second: rate(n.rx_bytes, b.rx_bytes, secs),
                tx_bytes_per_second: rate(n.tx_bytes, b.tx_bytes, secs),
                rx_packets_per_second: rate(n.rx_packets, b.rx_packets, secs),
                tx_packets_per_second: rate(n.tx_packets, b.tx_packets, secs),
                rx_errors: n.rx_errors.saturating_sub(b.rx_errors),
                tx_errors: n.tx_errors.saturating_sub(b.tx_errors),
                rx_drops: n.rx_drops.saturating_sub(b.rx_drops),
                tx_drops: n.tx_drops.saturating_sub(b.tx_drops),
            });
        }
        m.error = errors.join("; ");
        Some(m)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_stat_loadavg_meminfo() {
        let stat = "cpu  100 5 50 800 20 3 2 0 0 0\ncpu0 50 2 25 400 10 1 1 0 0 0\ncpu1 50 3 25 400 10 2 1 0 0 0\nintr 1 2 3\n";
        assert_eq!(
            parse_stat(stat),
            Some(CpuTimes {
                busy: 160,
                total: 980,
                count: 2
            })
        );
        assert_eq!(parse_stat("intr 1\n"), None);
        assert_eq!(
            parse_loadavg("0.52 1.25 2.00 1/123 4567\n"),
            Some((0.52, 1.25, 2.0))
        );
        assert_eq!(parse_loadavg("x"), None);
        let mem = "MemTotal:       16000 kB\nMemFree:  1000 kB\nMemAvailable:   12000 kB\nSwapTotal: 2000 kB\nSwapFree: 1500 kB\n";
        assert_eq!(
            parse_meminfo(mem),
            Some(Memory {
                total: 16000 * 1024,
                available: 12000 * 1024,
                swap_total: 2000 * 1024,
                swap_free: 1500 * 1024
            })
        );
        let old = "MemTotal: 100 kB\nMemFree: 10 kB\nBuffers: 5 kB\nCached: 20 kB\n";
        assert_eq!(parse_meminfo(old).unwrap().available, 35 * 1024);
    }

    #[test]
    fn parses_mounts_diskstats_net_dev() {
        let ignore: Vec<String> = DEFAULT_IGNORE_FS.iter().map(|s| (*s).to_owned()).collect();
        let mounts = "/dev/sda1 / ext4 rw 0 0\nproc /proc proc rw 0 0\n/dev/sda1 /var/lib/x ext4 rw 0 0\n/dev/sdb1 /mnt/my\\040disk xfs rw 0 0\ntmpfs /run tmpfs rw 0 0\n";
        let m = parse_mounts(mounts, &ignore);
        let paths: Vec<&str> = m.iter().map(|m| m.path.to_str().unwrap()).collect();
        assert_eq!(paths, ["/", "/mnt/my disk"]);
        assert_eq!(m[1].device, "/dev/sdb1");
        let ds = "   8       0 sda 100 0 2000 50 300 0 4000 70 0 90 120\n   8       1 sda1 10 0 200 5 30 0 400 7 0 9 12\n";
        let d = parse_diskstats(ds);
        assert_eq!(d["sda"], (2000 * 512, 4000 * 512));
        assert_eq!(d["sda1"], (200 * 512, 400 * 512));
        let dev = "Inter-|   Receive                                                |  Transmit\n face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets errs drop fifo colls carrier compressed\n    lo: 1000 10 0 0 0 0 0 0 1000 10 0 0 0 0 0 0\n  eth0: 5000 50 1 2 0 0 0 0 7000 70 3 4 0 0 0 0\n";
        let n = parse_net_dev(dev);
        assert_eq!(n.len(), 2);
        assert_eq!(
            n["eth0"],
            NetCounters {
                rx_bytes: 5000,
                rx_packets: 50,
                rx_errors: 1,
                rx_drops: 2,
                tx_bytes: 7000,
                tx_packets: 70,
                tx_errors: 3,
                tx_drops: 4
            }
        );
    }

    #[test]
    fn counters_going_backwards_are_zero_not_absurd() {
        assert!((rate(100, 50, 2.0) - 25.0).abs() < 1e-9);
        assert!(rate(10, 50, 2.0).abs() < f64::EPSILON);
    }

    #[test]
    fn real_proc_gives_sane_values() {
        let ignore = DEFAULT_IGNORE_FS.iter().map(|s| (*s).to_owned()).collect();
        let mut s = Sampler::new(Path::new("/proc"), ignore);
        assert!(s.sample(1).is_none(), "the first reading only primes");
        // Burn some CPU so there is something between the two readings.
        let mut x = 0u64;
        for i in 0..2_000_000u64 {
            x = x.wrapping_mul(31).wrapping_add(i);
        }
        std::hint::black_box(x);
        std::thread::sleep(std::time::Duration::from_millis(50));
        let m = s.sample(2).expect("second reading");
        assert_eq!(m.error, "");
        assert!((0.0..=1.0).contains(&m.cpu_utilisation), "{m:?}");
        assert!(m.cpu_count >= 1);
        assert!(m.memory_total_bytes > m.memory_available_bytes);
        assert!(m.memory_used_bytes > 0);
        assert!(m.load1 >= 0.0);
        assert!(m.interfaces.iter().any(|i| i.name == "lo"), "{m:?}");
        for d in &m.disks {
            assert!(d.used_bytes <= d.total_bytes, "{d:?}");
            assert!(d.available_bytes <= d.total_bytes, "{d:?}");
        }
    }
}
