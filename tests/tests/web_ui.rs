//! The web UI in a real browser: Playwright (`playwright-core`, installed
//! by `scripts/test.sh` into `tests/ui/node_modules`) drives Debian's
//! headless `chromium` against the real collector and agent binaries.
//!
//! Targets live in a namespace the test creates (`tgt`, reached through
//! the test's own veth `198.18.86.1/30`): `198.18.90.1–20` answer, `.21–30`
//! do not, `.40` answers but is probed only once an admin adds it through
//! the UI; `198.18.91.5` belongs to the other tenant (globex), whose own
//! agent probes it (acme would see it if acme's agent did). The browser
//! scenario itself is `tests/ui/e2e.mjs` (what it checks is listed there);
//! screenshots are written to `target/ui-artifacts/`.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use sonde_proto::Role;
use sonde_tests::netns::Lab;
use sonde_tests::{World, eventually, no_public_ip};

/// The two browser tests share the machine's two cores: one at a time.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// Where screenshots and figures go.
fn artifacts() -> PathBuf {
    let dir = repo().join("target/ui-artifacts");
    std::fs::create_dir_all(&dir).expect("create target/ui-artifacts");
    dir
}

/// Fails loudly when the browser or Playwright is missing.
fn check_tools() {
    assert!(
        Path::new("/usr/bin/chromium").exists(),
        "/usr/bin/chromium is missing: scripts/test.sh installs Debian's chromium"
    );
    assert!(
        repo()
            .join("tests/ui/node_modules/playwright-core")
            .exists(),
        "playwright-core is missing: run `npm ci --prefix tests/ui` (scripts/test.sh does)"
    );
}

/// Runs `tests/ui/SCRIPT` with node and `env`; panics with its output
/// unless it exits 0; returns its stdout.
fn node(script: &str, env: &[(&str, String)], timeout: Duration) -> String {
    let mut cmd = Command::new("timeout");
    cmd.arg("--kill-after=5")
        .arg(format!("{}", timeout.as_secs()))
        .arg("node")
        .arg(repo().join("tests/ui").join(script));
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().expect("run node (install nodejs)");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr);
    println!("{stdout}");
    eprintln!("{stderr}");
    assert!(
        out.status.success(),
        "{script} failed ({}):\n{stdout}\n{stderr}",
        out.status
    );
    stdout
}

/// The target namespace and the routes to it.
fn targets_lab() -> (Lab, String) {
    let mut lab = Lab::new("webui");
    let tgt = lab.host("tgt");
    lab.link_root(&tgt, "198.18.86.2/30", "198.18.86.1/30");
    for i in (1..=20).chain([40]) {
        lab.ip(
            &tgt,
            &["addr", "add", &format!("198.18.90.{i}/32"), "dev", "lo"],
        );
    }
    lab.ip(&tgt, &["addr", "add", "198.18.91.5/32", "dev", "lo"]);
    // Routes over the test's own veth: they go with it when the lab drops.
    for p in ["198.18.90.0/24", "198.18.91.0/24"] {
        sonde_tests::run_checked(Command::new("ip").args([
            "route",
            "add",
            p,
            "via",
            "198.18.86.2",
        ]));
    }
    (lab, tgt)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn browser_grids_detail_replay_and_target_management() {
    let _one = ONE_AT_A_TIME.lock().await;
    check_tools();
    let world = World::new();
    let (_lab, tgt) = targets_lab();
    world.collector_config_with(
        &format!("ping-listen = \"127.0.0.1:{}\"", sonde_tests::free_port()),
        "[[tenant]]\nname = \"acme\"\nprefixes = [\"198.18.90.0/24\"]\n\
         [[tenant]]\nname = \"globex\"\nprefixes = [\"198.18.91.0/24\"]\n",
    );
    let mut collector = world.start_collector(&[]).await;
    let cert = world.cert("acme", Role::Agent, "a1");
    let probes = "[[ping]]\ntargets = [\"198.18.90.0/27\"]\ninterval = \"1s\"\ntimeout = \"500ms\"\n\
                  [metrics]\ninterval = \"2s\"\n[ports]\ninterval = \"2s\"\n";
    world.agent_config("a1", &cert, &format!("{probes}{}", no_public_ip(probes)));
    let mut agent = world.start_agent("a1", &[]);
    let theirs = "[[ping]]\ntargets = [\"198.18.91.5\"]\ninterval = \"1s\"\ntimeout = \"500ms\"\n";
    let g1 = world.cert("globex", Role::Agent, "g1");
    world.agent_config("g1", &g1, &format!("{theirs}{}", no_public_ip(theirs)));
    let mut globex_agent = world.start_agent("g1", &[]);
    let (_, viewer_p12, viewer_pass) = world.browser_cert("acme", Role::Viewer, "vic");
    let admin = world.cert("acme", Role::Admin, "ann");
    let api = world.api(Some(&world.cert("acme", Role::Viewer, "v")));
    let globex = world.api(Some(&world.cert("globex", Role::Viewer, "gv")));
    eventually(
        "globex's agent measures 198.18.91.5",
        Duration::from_secs(30),
        || async {
            let v = globex.ok("/api/v1/targets?prefix=198.18.91.5/32").await;
            (v["targets"][0]["state"] == "up").then_some(())
        },
    )
    .await;
    eventually(
        "results for 198.18.90.7",
        Duration::from_secs(30),
        || async {
            let v = api.ok("/api/v1/targets?prefix=198.18.90.7/32").await;
            (v["targets"][0]["state"] == "up").then_some(())
        },
    )
    .await;

    let url = format!("https://localhost:{}", world.port);
    let env = vec![
        ("SONDE_URL", url),
        (
            "SONDE_CA",
            world.pki.dir().join("ca.pem").display().to_string(),
        ),
        // Node's TLS (Playwright's client-certificate proxy) checks the
        // collector's certificate against the dev CA.
        (
            "NODE_EXTRA_CA_CERTS",
            world.pki.dir().join("ca.pem").display().to_string(),
        ),
        ("VIEWER_PFX", viewer_p12.display().to_string()),
        ("VIEWER_PASS", viewer_pass),
        ("ADMIN_CERT", admin.cert.display().to_string()),
        ("ADMIN_KEY", admin.key.display().to_string()),
        (
            "CUT_CMD",
            format!(
                "ip netns exec {tgt} nft -f - <<'EOF'\ntable inet cut {{\n chain input {{\n  type filter hook input priority 0;\n  ip daddr 198.18.90.7 icmp type echo-request drop\n }}\n}}\nEOF\n"
            ),
        ),
        ("OUT_DIR", artifacts().display().to_string()),
    ];
    node("e2e.mjs", &env, Duration::from_secs(300));
    for shot in [
        "grids-1280x720.png",
        "cell-down.png",
        "address-detail.png",
        "replay.png",
        "target-added.png",
        "checks.png",
        "grids-3840x2160.png",
    ] {
        let len = std::fs::metadata(artifacts().join(shot)).map_or(0, |m| m.len());
        assert!(
            len > 2_000,
            "screenshot {shot} missing or empty ({len} bytes)"
        );
    }
    // The browser without a certificate was stopped by the handshake.
    let log = collector.log_text();
    assert!(
        log.contains("TLS handshake rejected") && log.contains("no client certificate presented"),
        "collector did not log the refused handshake:\n{log}"
    );
    // The UI's change reached the running agent through a config update.
    let log = agent.log_text();
    assert!(agent.running(), "agent exited:\n{log}");
    assert!(globex_agent.running(), "globex's agent exited");
    assert!(
        log.matches("ICMP target set applied").count() >= 2,
        "the agent never applied the added target:\n{log}"
    );
    collector.terminate();
    agent.terminate();
    globex_agent.terminate();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn browser_renders_10240_live_cells() {
    let _one = ONE_AT_A_TIME.lock().await;
    check_tools();
    let world = World::new();
    // 40 /24s that answer everywhere: a local route for 198.18.128.0/18
    // inside the namespace (every address of it is the namespace's own).
    let mut lab = Lab::new("webui10k");
    let tgt = lab.host("tgt");
    lab.link_root(&tgt, "198.18.87.2/30", "198.18.87.1/30");
    lab.ip(
        &tgt,
        &["route", "add", "local", "198.18.128.0/18", "dev", "lo"],
    );
    sonde_tests::run_checked(Command::new("ip").args([
        "route",
        "add",
        "198.18.128.0/18",
        "via",
        "198.18.87.2",
    ]));
    world.collector_config("[[tenant]]\nname = \"acme\"\nprefixes = [\"198.18.128.0/18\"]\n");
    let mut collector = world.start_collector(&[]).await;
    let targets: Vec<String> = (128..168).map(|i| format!("\"198.18.{i}.0/24\"")).collect();
    let probes = format!(
        "[[ping]]\ntargets = [{}]\ninterval = \"1s\"\ntimeout = \"500ms\"\n",
        targets.join(", ")
    );
    let cert = world.cert("acme", Role::Agent, "a1");
    world.agent_config("a1", &cert, &format!("{probes}{}", no_public_ip(&probes)));
    let mut agent = world.start_agent("a1", &[]);
    let (_, p12, pass) = world.browser_cert("acme", Role::Viewer, "wall");
    let api = world.api(Some(&world.cert("acme", Role::Viewer, "v")));
    eventually("40 monitored /24s", Duration::from_secs(60), || async {
        let v = api.ok("/api/v1/prefixes").await;
        let full = v["prefixes"]
            .as_array()?
            .iter()
            .filter(|p| p["monitored"].as_u64() == Some(254))
            .count();
        (full == 40).then_some(())
    })
    .await;
    let nft = |rules: &str| {
        format!("ip netns exec {tgt} nft -f - <<'EOF'\nflush ruleset\n{rules}\nEOF\n")
    };
    let url = format!("https://localhost:{}", world.port);
    let ca = world.pki.dir().join("ca.pem").display().to_string();
    let out = node(
        "render-bench.mjs",
        &[
            ("SONDE_URL", url),
            ("NODE_EXTRA_CA_CERTS", ca),
            ("VIEWER_PFX", p12.display().to_string()),
            ("VIEWER_PASS", pass),
            ("GRIDS", "40".into()),
            (
                "CUT_CMD",
                nft(
                    "table inet cut {\n chain input {\n  type filter hook input priority 0;\n  ip daddr 198.18.128.0-198.18.137.255 icmp type echo-request drop\n }\n}",
                ),
            ),
            ("RESTORE_CMD", nft("")),
            ("OUT_DIR", artifacts().display().to_string()),
        ],
        Duration::from_secs(240),
    );
    let figures: Vec<&str> = out.lines().filter(|l| l.starts_with("FIGURES ")).collect();
    assert_eq!(
        figures.len(),
        3,
        "load, steady and incident figures:\n{out}"
    );
    std::fs::write(artifacts().join("render-bench.txt"), figures.join("\n"))
        .expect("write figures");
    assert!(agent.running() && collector.running(), "a daemon exited");
    collector.terminate();
    agent.terminate();
}
