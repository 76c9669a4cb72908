//! Network namespaces a test builds (hosts, routers, veth links, nftables
//! rules) and always removes: on drop, also when the test fails. Names
//! carry the test process id, and namespaces left by a process that no
//! longer exists (a killed run) are removed when a new lab starts.
//!
//! Traffic stays inside these namespaces: nothing here routes to any other
//! address.

use std::io::Write as _;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use crate::run_checked;

/// Prefix of every namespace a test creates.
const PREFIX: &str = "sonde-t";
/// Where `ip netns exec NAME` finds files it mounts over `/etc` for the
/// program it runs (`ip-netns(8)`).
const ETC: &str = "/etc/netns";

/// A set of namespaces; removed on drop.
#[derive(Debug)]
pub struct Lab {
    tag: String,
    names: Vec<String>,
    links: u32,
    /// Interfaces made in the test's own namespace.
    root_links: Vec<String>,
}

/// Removes namespaces of earlier test processes that are gone.
fn sweep_stale() {
    let Ok(out) = Command::new("ip").args(["netns", "list"]).output() else {
        return;
    };
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let name = line.split_whitespace().next().unwrap_or_default();
        let Some(rest) = name.strip_prefix(&format!("{PREFIX}-")) else {
            continue;
        };
        let pid = rest.split('-').next().unwrap_or_default();
        if !pid.is_empty() && !Path::new(&format!("/proc/{pid}")).exists() {
            let _ = Command::new("ip").args(["netns", "del", name]).status();
            let _ = std::fs::remove_dir_all(Path::new(ETC).join(name));
        }
    }
}

impl Lab {
    /// A new, empty lab; `tag` tells this test's namespaces apart.
    pub fn new(tag: &str) -> Self {
        sweep_stale();
        Self {
            tag: format!("{PREFIX}-{}-{tag}", std::process::id()),
            names: Vec::new(),
            links: 0,
            root_links: Vec::new(),
        }
    }

    /// Creates namespace `name` (loopback up, forwarding on, ICMP error
    /// rate limits off so every probe gets its answer); returns its full
    /// name.
    pub fn host(&mut self, name: &str) -> String {
        let full = self.name(name);
        run_checked(Command::new("ip").args(["netns", "add", &full]));
        self.names.push(full.clone());
        self.ip(&full, &["link", "set", "lo", "up"]);
        for (key, value) in [
            ("net.ipv4.ip_forward", "1"),
            ("net.ipv4.icmp_ratelimit", "0"),
            ("net.ipv4.icmp_msgs_per_sec", "100000"),
            ("net.ipv6.conf.all.forwarding", "1"),
            ("net.ipv6.icmp.ratelimit", "0"),
        ] {
            self.sysctl(&full, key, value);
        }
        full
    }

    /// The full name namespace `name` has (or will have) in this lab.
    pub fn name(&self, name: &str) -> String {
        format!("{}-{name}", self.tag)
    }

    /// The `/etc/hosts` that programs started in `ns` (with `ip netns
    /// exec`) see: localhost plus `entries` (`ADDRESS NAME` lines), so a
    /// host name resolves there, differently per namespace, without DNS.
    pub fn hosts_file(&self, ns: &str, entries: &str) {
        let dir = Path::new(ETC).join(ns);
        std::fs::create_dir_all(&dir).expect("create /etc/netns/NS");
        std::fs::write(
            dir.join("hosts"),
            format!("127.0.0.1 localhost\n::1 localhost\n{entries}\n"),
        )
        .expect("write /etc/netns/NS/hosts");
    }

    /// Sets a sysctl inside `ns`.
    pub fn sysctl(&self, ns: &str, key: &str, value: &str) {
        run_checked(Command::new("ip").args([
            "netns",
            "exec",
            ns,
            "sysctl",
            "-q",
            "-w",
            &format!("{key}={value}"),
        ]));
    }

    /// Runs `ip -n NS ARGS...`.
    pub fn ip(&self, ns: &str, args: &[&str]) {
        run_checked(Command::new("ip").arg("-n").arg(ns).args(args));
    }

    /// A veth link between `a` and `b` with the given addresses (CIDR
    /// notation); returns the interface names in `a` and `b`.
    pub fn link(&mut self, a: &str, a_addr: &str, b: &str, b_addr: &str) -> (String, String) {
        self.links += 1;
        let (ia, ib) = (format!("l{}a", self.links), format!("l{}b", self.links));
        run_checked(Command::new("ip").args([
            "link", "add", &ia, "netns", a, "type", "veth", "peer", "name", &ib, "netns", b,
        ]));
        for (ns, ifname, addr) in [(a, &ia, a_addr), (b, &ib, b_addr)] {
            let mut args = vec!["addr", "add", addr, "dev", ifname];
            if addr.contains(':') {
                args.push("nodad");
            }
            self.ip(ns, &args);
            self.ip(ns, &["link", "set", ifname, "up"]);
        }
        (ia, ib)
    }

    /// A veth link between the test's own namespace and `ns`, for what
    /// must run beside the test (an agent reading this host's tables): the
    /// own end gets `root_addr` and a name unique to this process, which is
    /// returned. Removed with the lab (deleting either end deletes both).
    pub fn link_root(&mut self, ns: &str, ns_addr: &str, root_addr: &str) -> String {
        self.links += 1;
        let own = format!("st{}x{}", std::process::id(), self.links);
        let theirs = format!("l{}b", self.links);
        run_checked(Command::new("ip").args([
            "link", "add", &own, "type", "veth", "peer", "name", &theirs, "netns", ns,
        ]));
        self.root_links.push(own.clone());
        run_checked(Command::new("ip").args(["addr", "add", root_addr, "dev", &own]));
        run_checked(Command::new("ip").args(["link", "set", &own, "up"]));
        self.ip(ns, &["addr", "add", ns_addr, "dev", &theirs]);
        self.ip(ns, &["link", "set", &theirs, "up"]);
        own
    }

    /// Replaces the nftables ruleset of `ns` with `rules`.
    pub fn nft(&self, ns: &str, rules: &str) {
        let mut child = Command::new("ip")
            .args(["netns", "exec", ns, "nft", "-f", "-"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("nft (install nftables)");
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(format!("flush ruleset\n{rules}").as_bytes())
            .expect("write ruleset");
        let out = child.wait_with_output().expect("nft");
        assert!(
            out.status.success(),
            "nft in {ns} failed: {}\n{rules}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Runs `program ARGS` inside `ns`, killed if it runs past `timeout`.
    pub fn exec(&self, ns: &str, program: &Path, args: &[&str], timeout: Duration) -> Output {
        let child = Command::new("ip")
            .args(["netns", "exec", ns])
            .arg(program)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("ip netns exec");
        // Output is read while waiting (a full pipe would block the
        // program), on a thread so the deadline holds.
        let pid = nix::unistd::Pid::from_raw(i32::try_from(child.id()).expect("pid"));
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let _ = tx.send(child.wait_with_output());
        });
        if let Ok(out) = rx.recv_timeout(timeout) {
            return out.expect("output");
        }
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL);
        let out = rx.recv().expect("reaped").expect("output");
        panic!(
            "{} {args:?} in {ns} ran past {timeout:?}: {}",
            program.display(),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        for name in self.root_links.drain(..) {
            let _ = Command::new("ip")
                .args(["link", "del", &name])
                .stderr(Stdio::null())
                .status();
        }
        for name in self.names.drain(..).rev() {
            let _ = Command::new("ip").args(["netns", "del", &name]).status();
            let _ = std::fs::remove_dir_all(Path::new(ETC).join(&name));
        }
    }
}
