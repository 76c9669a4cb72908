//! The .deb and .rpm packages (built by `packaging/build.sh`, which the
//! README test command runs first) checked by lintian and rpmlint, then
//! installed into a real systemd in a container: first install without
//! certificates, configured start, the agent visible in the collector's API,
//! structured journald fields, reload without restart, the watchdog, the
//! agent's capabilities, upgrade, and removal.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, SystemTime};

use sonde_proto::{Identity, Role};
use sonde_tests::nspawn::Machine;

const VERSION: &str = env!("CARGO_PKG_VERSION");
/// `CAP_NET_RAW` (bit 13) as `/proc/PID/status` prints capability sets.
const CAP_NET_RAW: &str = "0000000000002000";

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// Newest modification time of any file below `path`.
fn newest(path: &Path) -> Option<SystemTime> {
    let meta = std::fs::metadata(path).ok()?;
    if !meta.is_dir() {
        return meta.modified().ok();
    }
    std::fs::read_dir(path)
        .ok()?
        .flatten()
        .filter_map(|e| newest(&e.path()))
        .max()
}

/// The package file of `name` at `revision`, refusing one older than what
/// it is built from.
fn package(name: &str, revision: u32, kind: &str) -> PathBuf {
    let dir = repo().join("target/packages");
    let prefix = match kind {
        "deb" => format!("{name}_{VERSION}-{revision}_"),
        _ => format!("{name}-{VERSION}-{revision}."),
    };
    let path = std::fs::read_dir(&dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .find(|p| {
            let f = p.file_name().unwrap().to_string_lossy();
            f.starts_with(&prefix) && f.ends_with(&format!(".{kind}"))
        })
        .unwrap_or_else(|| {
            panic!(
                "no {prefix}*.{kind} in {}: run `bash packaging/build.sh {revision}` (scripts/test.sh does)",
                dir.display()
            )
        });
    let built = std::fs::metadata(&path).unwrap().modified().unwrap();
    let sources = [
        "agent",
        "collector",
        "ctl",
        "runtime",
        "proto",
        "systemd",
        "packaging/debian",
        "packaging/rpm",
        "packaging/build.sh",
        "Cargo.toml",
        "README.md",
    ];
    let src = sources.iter().filter_map(|s| newest(&repo().join(s))).max();
    assert!(
        src.is_none_or(|s| built >= s),
        "{} is older than its sources: run `bash packaging/build.sh {revision}` (scripts/test.sh does)",
        path.display()
    );
    path
}

/// Tags listed as accepted under `heading` in packaging/README.md: one
/// bullet per tag, "- `tag`: why".
fn accepted(heading: &str) -> Vec<String> {
    let text = std::fs::read_to_string(repo().join("packaging/README.md")).unwrap();
    let start = text
        .find(heading)
        .unwrap_or_else(|| panic!("packaging/README.md has no section {heading:?}"));
    text[start + heading.len()..]
        .lines()
        .take_while(|l| !l.starts_with("## "))
        .filter_map(|l| l.strip_prefix("- `"))
        .filter_map(|l| l.split('`').next())
        .map(str::to_owned)
        .collect()
}

/// `(severity, tag)` of every error or warning line: lintian writes
/// `E: package: tag ...`, rpmlint `package.arch: E: tag ...`.
fn findings(output: &str) -> Vec<(String, String)> {
    output
        .lines()
        .filter_map(|l| {
            let ([sev @ ("E" | "W"), _, rest] | [_, sev @ ("E" | "W"), rest]) =
                l.splitn(3, ": ").collect::<Vec<_>>()[..]
            else {
                return None;
            };
            Some((sev.to_owned(), rest.split_whitespace().next()?.to_owned()))
        })
        .collect()
}

#[test]
fn findings_are_read_from_lintian_and_rpmlint_lines() {
    let out = "E: sonde-agent: some-error [usr/bin/x]\n\
               N: a note\n\
               sonde-agent.x86_64: W: some-warning /usr/lib\n\
               I: sonde-agent: info-tag\n\
               2 packages and 0 specfiles checked; 1 errors, 1 warnings\n";
    assert_eq!(
        findings(out),
        [
            ("E".to_owned(), "some-error".to_owned()),
            ("W".to_owned(), "some-warning".to_owned())
        ]
    );
}

#[test]
fn lintian_finds_no_errors_and_only_accepted_warnings() {
    let debs = [
        package("sonde-agent", 1, "deb"),
        package("sonde-collector", 1, "deb"),
    ];
    let out = Command::new("lintian")
        .args(["--allow-root", "--pedantic", "--no-tag-display-limit"])
        .args(&debs)
        .output()
        .expect("run lintian (apt-get install lintian)");
    let text = String::from_utf8_lossy(&out.stdout);
    println!("lintian:\n{text}{}", String::from_utf8_lossy(&out.stderr));
    // lintian exits non-zero on errors and when it cannot check a package.
    assert!(
        out.status.success(),
        "lintian failed ({}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let found = findings(&text);
    let errors: Vec<_> = found.iter().filter(|(s, _)| s == "E").collect();
    assert!(errors.is_empty(), "lintian errors: {errors:?}");
    let ok = accepted("## lintian: accepted warnings");
    let unexpected: Vec<_> = found.iter().filter(|(_, t)| !ok.contains(t)).collect();
    assert!(
        unexpected.is_empty(),
        "lintian warnings not listed in packaging/README.md: {unexpected:?}"
    );
}

#[test]
fn rpmlint_reports_only_accepted_findings() {
    let rpms = [
        package("sonde-agent", 1, "rpm"),
        package("sonde-collector", 1, "rpm"),
    ];
    let out = Command::new("rpmlint")
        .args(&rpms)
        .output()
        .expect("run rpmlint (apt-get install rpmlint)");
    let text = String::from_utf8_lossy(&out.stdout);
    println!("rpmlint:\n{text}{}", String::from_utf8_lossy(&out.stderr));
    assert!(
        text.contains("2 packages and 0 specfiles checked"),
        "rpmlint did not check both packages"
    );
    let ok = accepted("## rpmlint: accepted findings");
    let unexpected: Vec<_> = findings(&text)
        .into_iter()
        .filter(|(_, t)| !ok.contains(t))
        .collect();
    assert!(
        unexpected.is_empty(),
        "rpmlint findings not listed in packaging/README.md: {unexpected:?}"
    );
}

/// Dev certificates and configs for a collector and an agent on the
/// container's loopback, written where the packages expect them.
fn configure(m: &Machine) {
    let tmp = tempfile::tempdir().unwrap();
    let pki = sonde_certs::Pki::init(&tmp.path().join("pki"), &[]).unwrap();
    let issue = |role, name: &str, stem| {
        let id = Identity::new("acme", role, name).unwrap();
        pki.issue(&id, Some(stem), 30).unwrap();
    };
    issue(Role::Agent, "edge-1", "agent");
    issue(Role::Admin, "ops", "sondectl");
    let etc = m.root().join("etc/sonde");
    for f in [
        "ca.pem",
        "crl.pem",
        "collector.pem",
        "agent.pem",
        "sondectl.pem",
    ] {
        std::fs::copy(pki.dir().join(f), etc.join(f)).unwrap();
    }
    for f in ["collector.key", "agent.key", "sondectl.key"] {
        std::fs::copy(pki.dir().join(f), etc.join(f)).unwrap();
        // copy keeps the 0600 mode sonde-certs wrote; root owns it.
    }
    // The packaged samples, pointed at loopback; the agent's sample probes
    // and host facts (documentation addresses, internet public-IP sources)
    // replaced by one loopback ping (which needs CAP_NET_RAW in a namespace
    // whose ping_group_range admits no one) and public-IP lookups off.
    let agent = std::fs::read_to_string(etc.join("agent.toml")).unwrap();
    let cut = agent.find("\n[[").map_or(agent.len(), |i| i + 1);
    let agent = agent[..cut].replace(
        "collector = \"collector.example.net:7443\"",
        "collector = \"localhost:7443\"",
    ) + "[[ping]]\ntargets = [\"127.0.0.1\"]\ninterval = \"1s\"\n"
        // The default public-IP sources are on the internet.
        + "[public-ip]\nenabled = false\n[metrics]\ninterval = \"1s\"\n[ports]\ninterval = \"1s\"\n";
    assert!(
        agent.contains("localhost:7443"),
        "sample agent.toml changed"
    );
    std::fs::write(etc.join("agent.toml"), agent).unwrap();
    let ctl = std::fs::read_to_string(etc.join("sondectl.toml"))
        .unwrap()
        .replace("collector.example.net:7443", "localhost:7443");
    std::fs::write(etc.join("sondectl.toml"), ctl).unwrap();
}

/// Copies the packages of both revisions into the container's /root/pkgs.
fn stage(m: &Machine, kind: &str) -> [[String; 2]; 2] {
    let dir = m.root().join("root/pkgs");
    std::fs::create_dir_all(&dir).unwrap();
    [1, 2].map(|rev| {
        ["sonde-agent", "sonde-collector"].map(|name| {
            let p = package(name, rev, kind);
            let file = p.file_name().unwrap().to_string_lossy().into_owned();
            std::fs::copy(&p, dir.join(&file)).unwrap();
            format!("/root/pkgs/{file}")
        })
    })
}

/// Both units enabled, waiting for their files, not crash-looping.
fn assert_waiting_for_certificates(m: &Machine) {
    for unit in ["sonde-agent", "sonde-collector"] {
        assert_eq!(
            m.sh(&format!("systemctl is-enabled {unit}")).trim(),
            "enabled"
        );
        assert_eq!(m.show(unit, "ActiveState"), "inactive", "{unit}");
        assert_eq!(m.show(unit, "ConditionResult"), "no", "{unit}");
        assert_eq!(m.show(unit, "NRestarts"), "0", "{unit}");
    }
    let passwd = m.sh("getent passwd sonde");
    assert!(
        passwd.trim_end().ends_with(":/usr/sbin/nologin"),
        "{passwd}"
    );
    assert_eq!(
        m.sh("stat -c '%a %U %G' /etc/sonde").trim(),
        "750 root sonde"
    );
}

fn wait_active(m: &Machine, unit: &str) {
    m.eventually(
        &format!("{unit} active"),
        Duration::from_secs(30),
        unit,
        &format!("systemctl is-active -q {unit}"),
    );
}

/// Starts both services and checks what every installation must show.
fn start_and_check_running(m: &Machine) {
    // The README's check before the first start: the config as the unit
    // will read it, with the key passed as a credential.
    let checked = m.sh(
        "systemd-run -P -q -p LoadCredential=agent.key:/etc/sonde/agent.key \
         sonde-agent check-config",
    );
    assert_eq!(checked.trim(), "/etc/sonde/agent.toml: OK");
    m.sh("systemctl start sonde-collector sonde-agent");
    wait_active(m, "sonde-collector");
    wait_active(m, "sonde-agent");
    // The agent, seen through the collector's API by the packaged sondectl.
    m.eventually(
        "edge-1 connected in `sondectl agents`",
        Duration::from_secs(30),
        "sonde-collector",
        "sondectl agents | grep -Eq '^acme +edge-1 +up +yes '",
    );
    let agents: serde_json::Value =
        serde_json::from_str(&m.sh("sondectl --json agents")).expect("sondectl JSON");
    let edge = &agents["agents"][0];
    assert_eq!(edge["tenant"], "acme", "{agents}");
    assert_eq!(edge["name"], "edge-1", "{agents}");
    assert_eq!(edge["state"], "up", "{agents}");
    assert_eq!(edge["hostname"], "sonde-test", "{agents}");
    // Host facts under the hardened unit: system metrics (which need more
    // of /proc than ProcSubset=pid leaves) and the collector's listener in
    // the port inventory, by its owner.
    // The agent may take its first port snapshot before the collector
    // listens: the listener shows in a later one.
    m.eventually(
        "edge-1's metrics and the collector's port in `sondectl agent`",
        Duration::from_secs(30),
        "sonde-agent",
        "sondectl --json agent edge-1 > /tmp/edge.json && grep -q '\"memory_total_bytes\"' /tmp/edge.json \
         && grep -Eq '\"port\": ?7443' /tmp/edge.json",
    );
    let edge: serde_json::Value =
        serde_json::from_str(&m.sh("sondectl --json agent edge-1")).expect("sondectl JSON");
    let metrics = &edge["metrics"];
    assert_eq!(metrics["error"], "", "{metrics}");
    assert!(
        metrics["memory_total_bytes"].as_u64() > Some(0),
        "{metrics}"
    );
    assert!(metrics["cpu_count"].as_u64() >= Some(1), "{metrics}");
    let ports = &edge["ports"];
    assert_eq!(ports["error"], "", "{ports}");
    let listener = ports["ports"]
        .as_array()
        .and_then(|p| p.iter().find(|p| p["port"] == 7443))
        .unwrap_or_else(|| panic!("collector port 7443 not listed: {ports}"));
    assert_eq!(listener["user"], "sonde", "{listener}");
}

/// The journal entries of `unit` as JSON objects.
fn journal(m: &Machine, unit: &str) -> Vec<serde_json::Value> {
    m.sh(&format!("journalctl -u {unit} -o json --no-pager"))
        .lines()
        .map(|l| serde_json::from_str(l).expect("journal JSON line"))
        .collect()
}

fn status_field(status: &str, field: &str) -> String {
    status
        .lines()
        .find_map(|l| l.strip_prefix(field).map(|v| v.trim().to_owned()))
        .unwrap_or_else(|| panic!("no {field} in:\n{status}"))
}

fn check_journal_reload_caps_and_watchdog(m: &Machine) {
    // Structured fields, not just text.
    let opened = journal(m, "sonde-collector")
        .into_iter()
        .find(|e| e["MESSAGE"] == "agent session opened")
        .expect("collector journal has `agent session opened`");
    assert_eq!(opened["SYSLOG_IDENTIFIER"], "sonde-collector", "{opened}");
    assert_eq!(opened["F_AGENT"], "acme/edge-1", "{opened}");
    assert_eq!(opened["F_VERSION"], VERSION, "{opened}");
    assert!(opened["F_REMOTE"].is_string(), "{opened}");
    assert_eq!(opened["CODE_FILE"], "collector/src/session.rs", "{opened}");

    // Reload: same process, same invocation, and the agent says it reloaded.
    let pid = m.show("sonde-agent", "MainPID");
    let invocation = m.show("sonde-agent", "InvocationID");
    m.sh("systemctl reload sonde-agent");
    m.eventually(
        "agent logs `configuration reloaded`",
        Duration::from_secs(10),
        "sonde-agent",
        &format!(
            "journalctl -u sonde-agent -o json --no-pager | grep '\"_PID\":\"{pid}\"' | grep -q '\"MESSAGE\":\"configuration reloaded\"'"
        ),
    );
    assert_eq!(m.show("sonde-agent", "MainPID"), pid);
    assert_eq!(m.show("sonde-agent", "InvocationID"), invocation);
    assert_eq!(m.show("sonde-agent", "NRestarts"), "0");
    assert_eq!(m.show("sonde-agent", "ActiveState"), "active");

    // Capabilities: the agent CAP_NET_RAW only, the collector none.
    let agent = m.sh(&format!("cat /proc/{pid}/status"));
    for set in ["CapEff:", "CapPrm:", "CapBnd:", "CapAmb:"] {
        assert_eq!(status_field(&agent, set), CAP_NET_RAW, "agent {set}");
    }
    assert_eq!(status_field(&agent, "NoNewPrivs:"), "1");
    assert_eq!(
        status_field(&agent, "Uid:").split_whitespace().next(),
        Some(m.sh("id -u sonde").trim())
    );
    let cpid = m.show("sonde-collector", "MainPID");
    let collector = m.sh(&format!("cat /proc/{cpid}/status"));
    assert_eq!(status_field(&collector, "CapEff:"), "0000000000000000");
    assert_eq!(status_field(&collector, "CapBnd:"), "0000000000000000");
    assert_eq!(status_field(&collector, "NoNewPrivs:"), "1");
    // The loopback ping opened raw sockets with that capability (the
    // namespace's ping_group_range admits no one to datagram sockets).
    m.eventually(
        "agent logs raw ICMP sockets opened",
        Duration::from_secs(15),
        "sonde-agent",
        &format!(
            "journalctl -u sonde-agent -o json --no-pager | grep '\"_PID\":\"{pid}\"' | \
             grep -q '\"F_MODE\":\"raw (CAP_NET_RAW) with BPF filter\"'"
        ),
    );

    // Watchdog: a frozen agent is killed and restarted. The shipped
    // WatchdogSec=30s is shortened by a drop-in so the test takes seconds.
    m.sh("mkdir -p /etc/systemd/system/sonde-agent.service.d && \
         printf '[Service]\\nWatchdogSec=3s\\nTimeoutAbortSec=2s\\nRestartSec=1s\\n' \
         > /etc/systemd/system/sonde-agent.service.d/test-watchdog.conf && \
         systemctl daemon-reload && systemctl restart sonde-agent");
    wait_active(m, "sonde-agent");
    let frozen = m.show("sonde-agent", "MainPID");
    m.sh(&format!("kill -STOP {frozen}"));
    m.eventually(
        "watchdog restart",
        Duration::from_secs(45),
        "sonde-agent",
        &format!(
            "[ \"$(systemctl show -p NRestarts --value sonde-agent)\" -ge 1 ] && \
             systemctl is-active -q sonde-agent && \
             [ \"$(systemctl show -p MainPID --value sonde-agent)\" != {frozen} ]"
        ),
    );
    let log = m.sh("journalctl -u sonde-agent --no-pager");
    assert!(log.contains("Watchdog timeout"), "{log}");
    assert!(log.contains("Failed with result 'watchdog'"), "{log}");
    m.sh("rm -r /etc/systemd/system/sonde-agent.service.d && systemctl daemon-reload");
}

/// What an upgrade must leave: new version, restarted units, config kept.
fn invocations(m: &Machine) -> [String; 2] {
    ["sonde-agent", "sonde-collector"].map(|u| m.show(u, "InvocationID"))
}

fn assert_upgraded(m: &Machine, before: &[String; 2], agent_toml: &str) {
    for (unit, old) in ["sonde-agent", "sonde-collector"].iter().zip(before) {
        wait_active(m, unit);
        assert_ne!(
            &m.show(unit, "InvocationID"),
            old,
            "{unit} was not restarted"
        );
    }
    assert_eq!(
        m.sh("cat /etc/sonde/agent.toml"),
        agent_toml,
        "config changed by upgrade"
    );
    let leftovers = m.sh("ls /etc/sonde");
    assert!(
        !leftovers.contains(".dpkg-") && !leftovers.contains(".rpmnew"),
        "{leftovers}"
    );
    start_and_check_running(m);
}

#[test]
fn debs_install_run_upgrade_and_purge_in_real_systemd() {
    let m = Machine::boot("deb");
    let [old, new] = stage(&m, "deb");
    m.sh(&format!(
        "apt-get install -y --no-install-recommends {} {}",
        old[0], old[1]
    ));
    assert_waiting_for_certificates(&m);
    configure(&m);
    start_and_check_running(&m);
    check_journal_reload_caps_and_watchdog(&m);

    // Upgrade to the same sources packaged as revision 2.
    let before = invocations(&m);
    let agent_toml = m.sh("cat /etc/sonde/agent.toml");
    m.sh(&format!("apt-get install -y {} {}", new[0], new[1]));
    for pkg in ["sonde-agent", "sonde-collector"] {
        assert_eq!(
            m.sh(&format!("dpkg-query -W -f='${{Version}}' {pkg}")),
            format!("{VERSION}-2")
        );
    }
    assert_upgraded(&m, &before, &agent_toml);

    // Purge one: its files go, the shared CA and the other service stay.
    m.sh("apt-get purge -y sonde-agent");
    assert_eq!(m.show("sonde-agent", "LoadState"), "not-found");
    assert_eq!(
        m.sh("ls /etc/sonde | grep -c '^agent\\.' || true").trim(),
        "0"
    );
    assert!(m.root().join("etc/sonde/ca.pem").exists());
    assert!(!m.root().join("var/lib/sonde-agent").exists());
    assert_eq!(m.show("sonde-collector", "ActiveState"), "active");
    // Purge the other: nothing of sonde is left but the user.
    m.sh("apt-get purge -y sonde-collector");
    for gone in [
        "etc/sonde",
        "var/lib/sonde-collector",
        "usr/bin/sonde-agent",
        "usr/bin/sonde-collector",
        "usr/bin/sondectl",
        "usr/lib/systemd/system/sonde-agent.service",
        "usr/lib/sysusers.d/sonde-agent.conf",
        "usr/share/doc/sonde-collector",
    ] {
        assert!(!m.root().join(gone).exists(), "/{gone} left after purge");
    }
    assert_eq!(m.sh("find /etc/systemd -name 'sonde*'").trim(), "");
    assert_eq!(m.sh("dpkg -l | grep -c sonde || true").trim(), "0");
}

#[test]
fn rpms_install_run_upgrade_and_erase_in_real_systemd() {
    let m = Machine::boot("rpm");
    let [old, new] = stage(&m, "rpm");
    m.sh(&format!("rpm -i --nodeps {} {}", old[0], old[1]));
    // The scriptlets ran: user, /etc/sonde, units enabled by preset. The
    // dependencies are Debian packages rpm does not know (--nodeps), so
    // `rpm -V` checks files only.
    assert_waiting_for_certificates(&m);
    assert_eq!(m.sh("rpm -V --nodeps sonde-agent sonde-collector"), "");
    configure(&m);
    start_and_check_running(&m);
    // Only the config files we edited differ from the package.
    let verify = m.run(&["rpm", "-V", "--nodeps", "sonde-agent", "sonde-collector"]);
    let changed: Vec<String> = String::from_utf8_lossy(&verify.stdout)
        .lines()
        .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
        .collect();
    assert_eq!(changed.len(), 2, "{changed:?}");
    for (line, file) in changed
        .iter()
        .zip(["/etc/sonde/agent.toml", "/etc/sonde/sondectl.toml"])
    {
        assert!(line.ends_with(&format!(" c {file}")), "{changed:?}");
    }

    let before = invocations(&m);
    let agent_toml = m.sh("cat /etc/sonde/agent.toml");
    m.sh(&format!("rpm -U --nodeps {} {}", new[0], new[1]));
    assert_eq!(
        m.sh("rpm -q --qf '%{VERSION}-%{RELEASE}\\n' sonde-agent sonde-collector"),
        format!("{VERSION}-2\n{VERSION}-2\n")
    );
    assert_upgraded(&m, &before, &agent_toml);

    m.sh("rpm -e sonde-agent sonde-collector");
    for unit in ["sonde-agent", "sonde-collector"] {
        assert_eq!(m.show(unit, "LoadState"), "not-found", "{unit}");
        assert_eq!(m.show(unit, "ActiveState"), "inactive", "{unit}");
    }
    for gone in [
        "usr/bin/sonde-agent",
        "usr/bin/sondectl",
        "usr/lib/systemd/system/sonde-collector.service",
    ] {
        assert!(!m.root().join(gone).exists(), "/{gone} left after rpm -e");
    }
    assert_eq!(m.sh("find /etc/systemd -name 'sonde*'").trim(), "");
    assert!(!m.run(&["rpm", "-q", "sonde-agent"]).status.success());
}
