//! Host facts known at connect time (hostname, OS, kernel, architecture),
//! from `uname(2)` and `/etc/os-release`. `uname` rather than
//! `/proc/sys/kernel/*`, which the packaged unit hides (`ProcSubset=pid`).
//! Missing files give empty strings: facts are informational and never
//! block a session.

use sonde_proto::v1::HostFacts;

/// `PRETTY_NAME` from an os-release file's text.
pub fn pretty_name(os_release: &str) -> Option<String> {
    os_release.lines().find_map(|line| {
        let value = line.strip_prefix("PRETTY_NAME=")?;
        Some(value.trim().trim_matches('"').to_owned())
    })
}

/// Collects the facts of this host.
pub fn collect() -> HostFacts {
    let os_release = std::fs::read_to_string("/etc/os-release")
        .or_else(|_| std::fs::read_to_string("/usr/lib/os-release"))
        .unwrap_or_default();
    let uts = nix::sys::utsname::uname().ok();
    let field = |f: fn(&nix::sys::utsname::UtsName) -> &std::ffi::OsStr| {
        uts.as_ref()
            .map(|u| f(u).to_string_lossy().into_owned())
            .unwrap_or_default()
    };
    HostFacts {
        hostname: field(nix::sys::utsname::UtsName::nodename),
        os: pretty_name(&os_release).unwrap_or_default(),
        kernel: field(nix::sys::utsname::UtsName::release),
        arch: std::env::consts::ARCH.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_pretty_name() {
        let text = "NAME=\"Debian GNU/Linux\"\nPRETTY_NAME=\"Debian GNU/Linux 12 (bookworm)\"\nID=debian\n";
        assert_eq!(
            pretty_name(text).as_deref(),
            Some("Debian GNU/Linux 12 (bookworm)")
        );
        assert_eq!(pretty_name("ID=x\n"), None);
        let facts = collect();
        let read = |p| std::fs::read_to_string(p).unwrap().trim().to_owned();
        assert_eq!(facts.hostname, read("/proc/sys/kernel/hostname"));
        assert_eq!(facts.kernel, read("/proc/sys/kernel/osrelease"));
    }
}
