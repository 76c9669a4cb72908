//! Host facts known at connect time (hostname, OS, kernel, architecture),
//! read from the kernel and `/etc/os-release`. Missing files give empty
//! strings: facts are informational and never block a session.

use sonde_proto::v1::HostFacts;

fn read_trimmed(path: &str) -> String {
    std::fs::read_to_string(path)
        .map(|s| s.trim().to_owned())
        .unwrap_or_default()
}

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
    HostFacts {
        hostname: read_trimmed("/proc/sys/kernel/hostname"),
        os: pretty_name(&os_release).unwrap_or_default(),
        kernel: read_trimmed("/proc/sys/kernel/osrelease"),
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
        assert!(!facts.hostname.is_empty() && !facts.kernel.is_empty());
    }
}
