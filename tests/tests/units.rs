//! The systemd units in `systemd/`: `systemd-analyze verify` says nothing
//! at all about them (it exits 0 on unknown keys, so any output fails), and
//! `systemd-analyze security --offline=yes` rates each at most 2.0.

use std::path::{Path, PathBuf};
use std::process::Command;

use sonde_tests::bin;

const UNITS: [&str; 2] = ["sonde-agent", "sonde-collector"];

fn unit(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../systemd")
        .join(format!("{name}.service"))
}

/// A copy of the unit whose `/usr/bin/PROGRAM` is the binary just built
/// (verify checks that every command exists and is executable).
fn staged(dir: &Path, name: &str) -> PathBuf {
    let text = std::fs::read_to_string(unit(name)).expect("unit file");
    let built = bin(name);
    let path = dir.join(format!("{name}.service"));
    std::fs::write(
        &path,
        text.replace(&format!("/usr/bin/{name}"), built.to_str().unwrap()),
    )
    .unwrap();
    path
}

fn analyze(args: &[&str], unit: &Path) -> (bool, String, String) {
    let out = Command::new("systemd-analyze")
        .args(args)
        .arg(unit)
        .output()
        .expect("systemd-analyze (apt-get install systemd)");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn units_verify_without_a_word() {
    let dir = tempfile::tempdir().unwrap();
    for name in UNITS {
        let (ok, out, err) = analyze(&["verify", "--man=no"], &staged(dir.path(), name));
        assert!(ok && out.is_empty() && err.is_empty(), "{name}: {out}{err}");
    }
}

#[test]
fn units_are_hardened_to_an_exposure_of_at_most_2() {
    let readme =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../README.md"))
            .unwrap();
    let mut figures = Vec::new();
    for name in UNITS {
        let (_, out, err) = analyze(&["security", "--offline=yes"], &unit(name));
        let level: f64 = out
            .lines()
            .find_map(|l| {
                l.split_once("Overall exposure level for ")?
                    .1
                    .split_once(": ")
            })
            .and_then(|(_, rest)| rest.split_whitespace().next()?.parse().ok())
            .unwrap_or_else(|| panic!("{name}: no exposure level in\n{out}{err}"));
        eprintln!("{name}: exposure {level}");
        assert!(level <= 2.0, "{name}: exposure {level}\n{out}");
        figures.push(format!("{} {level:.1}", name.trim_start_matches("sonde-")));
    }
    // The README states what this measures, not an older figure.
    let stated = format!(
        "`systemd-analyze security --offline=yes`: {}",
        figures.join(", ")
    );
    assert!(
        readme.replace('\n', " ").contains(&stated),
        "README.md does not say {stated:?}"
    );
}

#[test]
fn only_the_agent_holds_a_capability_and_only_cap_net_raw() {
    let agent = std::fs::read_to_string(unit("sonde-agent")).unwrap();
    let collector = std::fs::read_to_string(unit("sonde-collector")).unwrap();
    for line in [
        "CapabilityBoundingSet=CAP_NET_RAW",
        "AmbientCapabilities=CAP_NET_RAW",
    ] {
        assert!(agent.lines().any(|l| l == line), "agent lacks {line}");
    }
    for line in ["CapabilityBoundingSet=", "AmbientCapabilities="] {
        assert!(
            collector.lines().any(|l| l == line),
            "collector lacks {line}"
        );
    }
    for (name, text) in [("sonde-agent", &agent), ("sonde-collector", &collector)] {
        for key in [
            "Type=notify",
            "WatchdogSec=",
            "NoNewPrivileges=yes",
            "RestartPreventExitStatus=78",
            &format!("ExecReload=/usr/bin/{name} --config ${{SONDE_CONFIG}} reload --pid $MAINPID"),
        ] {
            assert!(
                text.lines().any(|l| l.starts_with(key)),
                "{name}: {key} missing"
            );
        }
        // The key is read where the operator put it, so a reload sees a
        // rotated one; a LoadCredential= copy is made only at start.
        for absent in ["LoadCredential=", "ExecStartPre=", "ConditionPathExists="] {
            assert!(
                !text.lines().any(|l| l.starts_with(absent)),
                "{name}: {absent} is back"
            );
        }
    }
}
