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
use sonde_runtime::logging::ids;
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
        "packaging/scripts",
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
fn a_backup_summary_is_read_back() {
    let said = "/root/b.sqlite3: 126976 bytes, schema 9, 1 agents, 1 events, \
                3 minute aggregates of 42 probes since 2026-12-07T04:13:00Z (mode 0600; checked)";
    assert_eq!(
        aggregates(said),
        Some((3, 42, "2026-12-07T04:13:00Z".to_owned()))
    );
    let empty = "/root/b.sqlite3: 1 bytes, schema 9, 0 agents, 0 events, \
                 0 minute aggregates of 0 probes (mode 0600; checked)";
    assert_eq!(aggregates(empty), None);
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

/// A dev CA in the container's `/root/pki` (as an operator's CA host would
/// hand the files over): the collector's certificate and CRL, the agent
/// `acme/edge-1` as `agent.pem`/`agent.key`, an admin `sondectl.*`.
fn pki(m: &Machine) -> sonde_certs::Pki {
    let pki = sonde_certs::Pki::init(&m.root().join("root/pki"), &[]).unwrap();
    issue(&pki, Role::Agent, "edge-1", "agent");
    issue(&pki, Role::Admin, "ops", "sondectl");
    pki
}

fn issue(pki: &sonde_certs::Pki, role: Role, name: &str, stem: &str) {
    let id = Identity::new("acme", role, name).unwrap();
    pki.issue(&id, Some(stem), 30).unwrap();
}

/// The README's certificate step, verbatim: certificates and CRL readable
/// by group sonde, each service's key owned by sonde with mode 0600, the
/// admin's key root's.
const PLACE: &str = "cd /root/pki && \
    install -o root -g sonde -m 0640 ca.pem collector.pem crl.pem agent.pem /etc/sonde/ && \
    install -o sonde -g sonde -m 0600 collector.key agent.key /etc/sonde/ && \
    install -o root -g root -m 0600 sondectl.pem sondectl.key /etc/sonde/";

/// The README's config step: the shipped samples changed only at
/// `collector =`, plus (for the test) one loopback ping, which needs
/// `CAP_NET_RAW` in a namespace whose `ping_group_range` admits no one.
fn point_at_loopback(m: &Machine) {
    m.sh("sed -i 's/^collector = \"collector.example.net:7443\"/collector = \"localhost:7443\"/' \
          /etc/sonde/agent.toml /etc/sonde/sondectl.toml && \
          printf '[[ping]]\\ntargets = [\"127.0.0.1\"]\\ninterval = \"1s\"\\n' >> /etc/sonde/agent.toml");
    let agent = m.sh("cat /etc/sonde/agent.toml");
    assert!(
        agent.contains("collector = \"localhost:7443\""),
        "sample agent.toml changed"
    );
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

/// Both units enabled and not started (the package starts a unit only
/// once its config checks out), not crash-looping.
fn assert_installed_not_started(m: &Machine) {
    for unit in ["sonde-agent", "sonde-collector"] {
        assert_eq!(
            m.sh(&format!("systemctl is-enabled {unit}")).trim(),
            "enabled"
        );
        assert_eq!(m.show(unit, "ActiveState"), "inactive", "{unit}");
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

/// `systemctl start UNIT` fails at once, once: non-zero, the unit
/// `failed` (not `activating (auto-restart)`), exit status 78, and
/// `systemctl status` shows `reason`.
fn assert_start_fails_once(m: &Machine, unit: &str, reason: &str) {
    let start = m.run(&["systemctl", "start", unit]);
    assert!(!start.status.success(), "{unit} started");
    assert_eq!(m.show(unit, "ActiveState"), "failed", "{unit} is retrying");
    assert_eq!(m.show(unit, "ExecMainStatus"), "78", "{unit}");
    assert_eq!(m.show(unit, "NRestarts"), "0", "{unit}");
    assert_eq!(
        m.sh(&format!("systemctl is-failed {unit} || true")).trim(),
        "failed"
    );
    let status = String::from_utf8_lossy(
        &m.run(&["systemctl", "status", "-n", "20", "--no-pager", "-l", unit])
            .stdout,
    )
    .into_owned();
    assert!(
        status.contains(reason),
        "`systemctl status {unit}` lacks {reason:?}:\n{status}"
    );
    eprintln!("--- systemctl start {unit} failed once:\n{status}");
    m.sh(&format!("systemctl reset-failed {unit}"));
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
    // The README's check before the first start, run as root: it checks
    // as the service user, as the unit will run it.
    for role in ["agent", "collector"] {
        let checked = m.sh(&format!("sonde-{role} check-config"));
        assert_eq!(
            checked.trim(),
            format!("/etc/sonde/{role}.toml: OK (as user sonde)")
        );
    }
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
    // (Ports are read every 30 s as shipped.)
    m.eventually(
        "edge-1's metrics and the collector's port in `sondectl agent`",
        Duration::from_secs(75),
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
        .find(|e| e["MESSAGE_ID"] == ids::SESSION_OPENED)
        .expect("collector journal has `agent session opened`");
    let message = opened["MESSAGE"].as_str().unwrap_or_default();
    assert!(
        message.starts_with("agent session opened (agent=acme/edge-1, remote="),
        "{opened}"
    );
    assert_eq!(opened["SYSLOG_IDENTIFIER"], "sonde-collector", "{opened}");
    assert_eq!(opened["F_AGENT"], "acme/edge-1", "{opened}");
    assert_eq!(opened["F_VERSION"], VERSION, "{opened}");
    assert!(opened["F_REMOTE"].is_string(), "{opened}");
    assert_eq!(
        opened["CODE_FILE"], "collector/src/ingest/session.rs",
        "{opened}"
    );

    // Reload: same process, same invocation, and the agent says it reloaded.
    let pid = m.show("sonde-agent", "MainPID");
    let invocation = m.show("sonde-agent", "InvocationID");
    // `systemctl reload` returns once the agent has answered.
    let reloaded = format!(
        "journalctl -o json --no-pager _PID={pid} MESSAGE_ID={}",
        ids::RELOADED
    );
    let before = m.sh(&reloaded).lines().count();
    m.sh("systemctl reload sonde-agent");
    assert_eq!(
        m.sh(&reloaded).lines().count(),
        before + 1,
        "no `configuration reloaded`"
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

/// The files as 0.1.0-1 documented them: the agent's config naming its key
/// `$CREDENTIALS_DIRECTORY/agent.key` (that unit's `LoadCredential=`), the
/// key root's, the CA certificate root's alone.
fn old_layout(m: &Machine) {
    m.sh("sed -i 's|^key = \"/etc/sonde/agent.key\"|key = \"$CREDENTIALS_DIRECTORY/agent.key\"|' /etc/sonde/agent.toml && \
          grep -q '^key = \"$CREDENTIALS_DIRECTORY/agent.key\"' /etc/sonde/agent.toml && \
          chown root:root /etc/sonde/agent.key /etc/sonde/ca.pem && chmod 600 /etc/sonde/ca.pem");
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

/// Before the files are right: the collector without its CRL, a CA
/// certificate only root can read, a key readable by others. Each is named
/// by `check-config` run as root (checking as the service user) and by one
/// failed start, never a restart loop.
fn wrong_files_are_named_before_and_at_start(m: &Machine) {
    m.sh("cd /root/pki && \
          install -o root -g sonde -m 0640 ca.pem collector.pem agent.pem /etc/sonde/ && \
          install -o sonde -g sonde -m 0600 collector.key agent.key /etc/sonde/");
    assert_start_fails_once(
        m,
        "sonde-collector",
        "missing file: tls.crl = /etc/sonde/crl.pem",
    );

    m.sh("chown root:root /etc/sonde/ca.pem && chmod 600 /etc/sonde/ca.pem");
    let check = m.run(&["sonde-agent", "check-config"]);
    let err = String::from_utf8_lossy(&check.stderr);
    assert_eq!(check.status.code(), Some(78), "{err}");
    assert!(
        err.contains("/etc/sonde/ca.pem: cannot read as user sonde: Permission denied")
            && err.contains("chgrp sonde /etc/sonde/ca.pem"),
        "{err}"
    );
    assert_start_fails_once(m, "sonde-agent", "ca.pem: cannot read as user sonde");

    m.sh("chown root:sonde /etc/sonde/ca.pem && chmod 640 /etc/sonde/ca.pem && chmod 644 /etc/sonde/agent.key");
    let check = m.run(&["sonde-agent", "check-config"]);
    let err = String::from_utf8_lossy(&check.stderr);
    assert!(
        err.contains("agent.key: private key is readable by group or others (mode 644)"),
        "{err}"
    );
    assert_start_fails_once(m, "sonde-agent", "readable by group or others (mode 644)");
    m.sh("chmod 600 /etc/sonde/agent.key");
}

/// A person with a viewer certificate of their own, in their own
/// `~/.config/sonde/sondectl.toml` (`/etc/sonde` is not theirs to read).
fn a_person_uses_sondectl_with_their_own_config(m: &Machine, pki: &sonde_certs::Pki) {
    issue(pki, Role::Viewer, "alice", "alice");
    m.sh("useradd -m alice && install -d -o alice -g alice /home/alice/.config/sonde && \
          cd /root/pki && install -o alice -g alice -m 0644 ca.pem alice.pem /home/alice/.config/sonde/ && \
          install -o alice -g alice -m 0600 alice.key /home/alice/.config/sonde/ && \
          printf 'collector = \"localhost:7443\"\\n[tls]\\nca = \"ca.pem\"\\ncert = \"alice.pem\"\\nkey = \"alice.key\"\\n' \
            > /home/alice/.config/sonde/sondectl.toml");
    let agents = m.sh("runuser -l alice -c 'sondectl agents'");
    assert!(agents.contains("edge-1"), "{agents}");
}

/// Journal entries of `unit` with `MESSAGE_ID=id` (JSON lines).
fn with_id(m: &Machine, unit: &str, id: &str) -> Vec<serde_json::Value> {
    m.sh(&format!(
        "journalctl -u {unit} -o json --no-pager MESSAGE_ID={id}"
    ))
    .lines()
    .map(|l| serde_json::from_str(l).expect("journal JSON line"))
    .collect()
}

/// The serial of `/root/pki/STEM.pem` as the collector logs it.
fn serial(pki: &sonde_certs::Pki, stem: &str) -> String {
    let certs = sonde_runtime::tls::load_certs(&pki.dir().join(format!("{stem}.pem"))).unwrap();
    sonde_runtime::tls::serial_of(&certs[0])
}

/// Rotation by `systemctl reload`, a mismatched pair refused visibly, then
/// revocation as the README says.
fn rotate_then_revoke(m: &Machine, pki: &sonde_certs::Pki) {
    let pid = m.show("sonde-agent", "MainPID");
    let restarts = m.show("sonde-agent", "NRestarts");
    let opened_with = |serial: &str| {
        with_id(m, "sonde-collector", ids::SESSION_OPENED)
            .iter()
            .any(|e| e["F_AGENT"] == "acme/edge-1" && e["F_SERIAL"] == serial)
    };
    assert!(opened_with(&serial(pki, "agent")));

    // A new certificate and key, installed over the old ones; reload.
    issue(pki, Role::Agent, "edge-1", "agent-2");
    m.sh(
        "cd /root/pki && install -o root -g sonde -m 0640 agent-2.pem /etc/sonde/agent.pem && \
          install -o sonde -g sonde -m 0600 agent-2.key /etc/sonde/agent.key && \
          systemctl reload sonde-agent",
    );
    let new = serial(pki, "agent-2");
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while !opened_with(&new) {
        assert!(
            std::time::Instant::now() < deadline,
            "edge-1 never came back with serial {new}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(m.show("sonde-agent", "MainPID"), pid, "the agent restarted");
    assert_eq!(m.show("sonde-agent", "NRestarts"), restarts);
    let events = m.sh("sondectl --json events");
    assert!(!events.contains("agent-missing"), "{events}");

    // A certificate with the wrong key: the reload fails and says why; the
    // running certificate stays in use.
    issue(pki, Role::Agent, "edge-1", "agent-3");
    m.sh("install -o root -g sonde -m 0640 /root/pki/agent-3.pem /etc/sonde/agent.pem");
    let reload = m.run(&["systemctl", "reload", "sonde-agent"]);
    assert!(!reload.status.success(), "a mismatched pair reloaded");
    let status = m.sh("systemctl status -n 20 --no-pager -l sonde-agent || true");
    assert!(
        status.contains("certificate does not match private key"),
        "{status}"
    );
    eprintln!("--- systemctl reload with a mismatched pair:\n{status}");
    assert_eq!(m.show("sonde-agent", "ActiveState"), "active");
    assert_eq!(m.show("sonde-agent", "MainPID"), pid);
    m.sh("sondectl agents | grep -Eq '^acme +edge-1 +up +yes '");
    m.sh(
        "install -o root -g sonde -m 0640 /root/pki/agent-2.pem /etc/sonde/agent.pem && \
          systemctl reload sonde-agent",
    );

    // Revocation: revoke at the CA, install its CRL where the collector
    // reads it, reload the collector. The open session closes and the
    // agent's retries are refused, with the reason in the plain journal.
    pki.revoke("agent-2").unwrap();
    m.sh(
        "install -o root -g sonde -m 0640 /root/pki/crl.pem /etc/sonde/crl.pem && \
          systemctl reload sonde-collector",
    );
    m.eventually(
        "edge-1 disconnected",
        Duration::from_secs(30),
        "sonde-collector",
        "sondectl agents | grep -Eq '^acme +edge-1 +[a-z]+ +no '",
    );
    let closed = with_id(m, "sonde-collector", ids::CONNECTION_REVOKED);
    assert!(
        closed
            .iter()
            .any(|e| e["F_PEER"] == "sonde://acme/agent/edge-1"),
        "{closed:?}"
    );
    m.eventually(
        "the refused handshake explained in the plain journal",
        Duration::from_secs(30),
        "sonde-collector",
        "journalctl -u sonde-collector --no-pager | grep -F 'TLS handshake rejected: client certificate revoked by the CRL (remote=' \
         | grep -Fq 'certificate=sonde://acme/agent/edge-1'",
    );
    assert!(!with_id(m, "sonde-collector", ids::HANDSHAKE_REFUSED).is_empty());
    eprintln!(
        "--- revoked, plain journal:\n{}",
        m.sh(&format!(
            "journalctl -u sonde-collector --no-pager -o cat MESSAGE_ID={} MESSAGE_ID={} | tail -n 3",
            ids::CONNECTION_REVOKED,
            ids::HANDSHAKE_REFUSED
        ))
    );

    // A fresh certificate brings it back.
    issue(pki, Role::Agent, "edge-1", "agent-4");
    m.sh(
        "cd /root/pki && install -o root -g sonde -m 0640 agent-4.pem /etc/sonde/agent.pem && \
          install -o sonde -g sonde -m 0600 agent-4.key /etc/sonde/agent.key && \
          systemctl reload sonde-agent",
    );
    m.eventually(
        "edge-1 back with a new certificate",
        Duration::from_secs(45),
        "sonde-agent",
        "sondectl agents | grep -Eq '^acme +edge-1 +up +yes '",
    );
}

/// `sonde-collector backup` while the agent is sending, then the collector
/// purged (the agent stays) and installed afresh, and the backup restored
/// as the README says: its events and aggregates are back.
fn back_up_purge_and_restore(m: &Machine, collector_deb: &str) {
    let events_before: serde_json::Value =
        serde_json::from_str(&m.sh("sondectl --json events")).expect("JSON");
    // Backed up once the analysis has stored aggregates of edge-1's ping.
    let mut attempt = 0;
    let (said, stored) = loop {
        attempt += 1;
        let said = m.sh(&format!(
            "sonde-collector backup /root/sonde-backup-{attempt}.sqlite3"
        ));
        if let Some(a) = aggregates(&said) {
            break (said, a);
        }
        assert!(attempt < 100, "no aggregates stored: {said}");
        std::thread::sleep(Duration::from_millis(200));
    };
    eprintln!("--- backup: {said}");
    m.sh(&format!(
        "mv /root/sonde-backup-{attempt}.sqlite3 /root/sonde-backup.sqlite3"
    ));
    assert!(said.contains("(mode 0600; checked)"), "{said}");
    assert_eq!(
        m.sh("stat -c '%a %U' /root/sonde-backup.sqlite3").trim(),
        "600 root"
    );
    // Into an existing file: refused, nothing overwritten.
    assert!(
        !m.run(&["sonde-collector", "backup", "/root/sonde-backup.sqlite3"])
            .status
            .success()
    );
    // The service user still owns everything in its state directory.
    assert_eq!(
        m.sh("find /var/lib/sonde-collector ! -user sonde").trim(),
        ""
    );

    // Purge the collector while the agent stays: its own key goes; the
    // admin's key, which it did not install, is named, not silently kept.
    let purged = m.sh("apt-get purge -y sonde-collector 2>&1");
    eprintln!("--- purge of the collector, agent kept:\n{purged}");
    assert!(
        purged.contains("/etc/sonde/sondectl.key (a private key sonde-collector did not install) is left in place"),
        "{purged}"
    );
    assert!(!m.root().join("etc/sonde/collector.key").exists());
    assert!(!m.root().join("var/lib/sonde-collector").exists());
    assert!(m.root().join("etc/sonde/agent.key").exists());

    // A fresh install, its certificates placed again, the backup restored.
    m.sh(&format!(
        "apt-get install -y --no-install-recommends {collector_deb}"
    ));
    m.sh("cd /root/pki && install -o root -g sonde -m 0640 collector.pem crl.pem /etc/sonde/ && \
          install -o sonde -g sonde -m 0600 collector.key /etc/sonde/ && \
          sed -i 's/^collector = \"collector.example.net:7443\"/collector = \"localhost:7443\"/' /etc/sonde/sondectl.toml");
    m.sh(RESTORE);
    m.sh("systemctl start sonde-collector");
    wait_active(m, "sonde-collector");
    let events_after: serde_json::Value =
        serde_json::from_str(&m.sh("sondectl --json events")).expect("JSON");
    let before = events_before["events"].as_array().expect("events");
    let after = events_after["events"].as_array().expect("events");
    assert!(!before.is_empty());
    for e in before {
        assert!(after.contains(e), "event {e} not restored");
    }
    m.eventually(
        "edge-1 reconnected to the restored collector",
        Duration::from_secs(45),
        "sonde-collector",
        "sondectl agents | grep -Eq '^acme +edge-1 +up +yes '",
    );
    // The restored aggregates: every probe of the backup, from the same
    // oldest minute (a fresh store could not hold a minute that old).
    let said = m.sh("sonde-collector backup /root/after-restore.sqlite3");
    eprintln!("--- after the restore: {said}");
    let after = aggregates(&said).expect("aggregates after the restore");
    assert_eq!(after.2, stored.2, "oldest minute: {said}");
    assert!(after.1 >= stored.1, "probes: {after:?} < {stored:?}");
}

/// `(rows, probes, oldest minute)` from a backup's summary line, `None`
/// when it holds no minute aggregates yet.
fn aggregates(said: &str) -> Option<(u64, u64, String)> {
    // "PATH: B bytes, schema S, A agents, E events, N minute aggregates of
    // P probes since T (mode 0600; checked)"
    let (_, rest) = said.split_once(" events, ")?;
    let mut words = rest.split_whitespace();
    let rows: u64 = words.next()?.parse().ok()?;
    let probes: u64 = words.nth(3)?.parse().ok()?;
    let oldest = words.nth(2)?.to_owned();
    (rows > 0).then_some((rows, probes, oldest))
}

/// The README's restore steps, verbatim (collector stopped).
const RESTORE: &str = "install -d -o sonde -g sonde -m 0700 /var/lib/sonde-collector && \
    rm -f /var/lib/sonde-collector/state.sqlite3-wal /var/lib/sonde-collector/state.sqlite3-shm && \
    install -o sonde -g sonde -m 0600 /root/sonde-backup.sqlite3 /var/lib/sonde-collector/state.sqlite3";

#[test]
fn debs_as_the_readme_says_install_configure_rotate_revoke_restore_upgrade_purge() {
    let m = Machine::boot("deb");
    let [old, new] = stage(&m, "deb");
    // Installed, not started, and told what is missing and how to place it.
    let said = m.sh(&format!(
        "apt-get install -y --no-install-recommends {} {} 2>&1",
        old[0], old[1]
    ));
    eprintln!("--- apt-get install, unconfigured:\n{said}");
    for needle in [
        "sonde-agent: installed, not started",
        "missing files: tls.ca = /etc/sonde/ca.pem, tls.cert = /etc/sonde/agent.pem, tls.key = /etc/sonde/agent.key",
        "install -o sonde -g sonde -m 0600 collector.key /etc/sonde/",
        "install -o root -g sonde -m 0640 ca.pem collector.pem crl.pem /etc/sonde/",
    ] {
        assert!(
            said.contains(needle),
            "install output lacks {needle:?}:\n{said}"
        );
    }
    assert_installed_not_started(&m);
    // Started anyway: one failure naming every missing file.
    assert_start_fails_once(
        &m,
        "sonde-agent",
        "missing files: tls.ca = /etc/sonde/ca.pem, tls.cert = /etc/sonde/agent.pem, tls.key = /etc/sonde/agent.key",
    );

    let pki = pki(&m);
    point_at_loopback(&m);
    wrong_files_are_named_before_and_at_start(&m);
    m.sh(PLACE);
    start_and_check_running(&m);
    check_journal_reload_caps_and_watchdog(&m);
    a_person_uses_sondectl_with_their_own_config(&m, &pki);
    rotate_then_revoke(&m, &pki);
    back_up_purge_and_restore(&m, &old[1]);

    // Upgrade to the same sources packaged as revision 2, from files laid
    // out as 0.1.0-1 documented them: a root-owned key passed as a
    // credential, a CA certificate only root could read.
    old_layout(&m);
    let before = invocations(&m);
    let agent_toml = m.sh("cat /etc/sonde/agent.toml");
    let said = m.sh(&format!("apt-get install -y {} {} 2>&1", new[0], new[1]));
    for needle in [
        "sonde-agent: /etc/sonde/agent.key now belongs to user sonde",
        "/etc/sonde/ca.pem is now readable by group sonde",
    ] {
        assert!(
            said.contains(needle),
            "upgrade output lacks {needle:?}:\n{said}"
        );
    }
    for pkg in ["sonde-agent", "sonde-collector"] {
        assert_eq!(
            m.sh(&format!("dpkg-query -W -f='${{Version}}' {pkg}")),
            format!("{VERSION}-2")
        );
    }
    assert_upgraded(&m, &before, &agent_toml);

    // Purge the agent: its files go, the shared CA and the collector stay.
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
    assert_installed_not_started(&m);
    assert_eq!(m.sh("rpm -V --nodeps sonde-agent sonde-collector"), "");
    let _pki = pki(&m);
    point_at_loopback(&m);
    m.sh(PLACE);
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

    old_layout(&m);
    let before = invocations(&m);
    let agent_toml = m.sh("cat /etc/sonde/agent.toml");
    let said = m.sh(&format!("rpm -U --nodeps {} {} 2>&1", new[0], new[1]));
    assert!(
        said.contains("sonde-agent: /etc/sonde/agent.key now belongs to user sonde"),
        "{said}"
    );
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
