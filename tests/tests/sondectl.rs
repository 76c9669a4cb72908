//! `sondectl` against a real collector over mTLS: it lists what its
//! certificate's tenant may see, prints JSON on request, and fails with the
//! collector's reason (exit 1) or the config's (exit 2).

use std::process::Output;
use std::time::Duration;

use sonde_proto::Role;
use sonde_tests::{World, ctl_config, eventually, sondectl};

fn text(out: &Output) -> String {
    format!(
        "status {:?}\nstdout:\n{}\nstderr:\n{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sondectl_lists_its_tenants_agents_and_names_refusals() {
    let world = World::new();
    world.collector_config("");
    let _collector = world.start_collector(&[]).await;
    let a1 = world.cert("tenant-a", Role::Agent, "a1");
    let b1 = world.cert("tenant-b", Role::Agent, "b1");
    world.agent_config("a1", &a1, "[heartbeat]\ninterval = \"200ms\"\n");
    world.agent_config("b1", &b1, "[heartbeat]\ninterval = \"200ms\"\n");
    let _agent_a = world.start_agent("a1", &[]);
    let _agent_b = world.start_agent("b1", &[]);

    let viewer = ctl_config(
        &world,
        "viewer",
        &world.cert("tenant-a", Role::Viewer, "va"),
    );
    let out = eventually(
        "a1 listed as up by sondectl",
        Duration::from_secs(20),
        || async {
            let out = sondectl(&viewer, &["agents"]).await;
            let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
            stdout
                .lines()
                .any(|l| {
                    l.split_whitespace()
                        .take(4)
                        .eq(["tenant-a", "a1", "up", "yes"])
                })
                .then_some(out)
        },
    )
    .await;
    assert!(out.status.success(), "{}", text(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.starts_with("TENANT"), "{}", text(&out));
    assert!(!stdout.contains("b1"), "tenant-b leaked:\n{}", text(&out));

    let out = sondectl(&viewer, &["--json", "agents"]).await;
    assert!(out.status.success(), "{}", text(&out));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    let names: Vec<&str> = v["agents"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["a1"]);

    let out = sondectl(&viewer, &["events", "--agent", "a1", "--limit", "5"]).await;
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stdout).starts_with("ID"),
        "{}",
        text(&out)
    );

    // The collector's own reason comes through, with exit status 1.
    let out = sondectl(&viewer, &["events", "--limit", "0"]).await;
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr)
            .contains("HTTP 400: invalid query parameter \"limit\""),
        "{}",
        text(&out)
    );
    let agent_cert = ctl_config(&world, "agent", &a1);
    let out = sondectl(&agent_cert, &["agents"]).await;
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("HTTP 403"),
        "{}",
        text(&out)
    );

    // A wrong config is exit 2 with file and key, before any request.
    let bad = world.dir().join("sondectl-bad.toml");
    std::fs::write(
        &bad,
        "collector = \"nowhere\"\n[tls]\nca = \"a\"\ncert = \"b\"\nkey = \"c\"\n",
    )
    .unwrap();
    let out = sondectl(&bad, &["check-config"]).await;
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("sondectl-bad.toml:1:1: key `collector`"),
        "{}",
        text(&out)
    );
    let out = sondectl(&viewer, &["check-config"]).await;
    assert!(out.status.success(), "{}", text(&out));
}

/// What others wrote reaches the operator's terminal as visible escapes:
/// a listening program renamed with terminal escapes and a bidi override
/// (its `comm`, from the executable's name), and a silence comment with
/// an OSC title, a screen clear, a carriage return and a fake line.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_names_and_comments_print_as_visible_escapes() {
    use sonde_tests::{Proc, free_port, no_public_ip};
    let world = World::new();
    world.collector_config("");
    let _collector = world.start_collector(&[]).await;
    // socat under a hostile name, listening before the agent's first
    // port snapshot.
    let evil = world.dir().join("\u{1b}[2Jevil\u{202e}x");
    std::fs::copy("/usr/bin/socat", &evil).expect("copy socat (apt install socat)");
    let port = free_port();
    let _listener = Proc::spawn(
        &evil,
        &[
            &format!("TCP-LISTEN:{port},bind=127.0.0.1,fork,reuseaddr"),
            "/dev/null",
        ],
        &[],
        world.dir().join("evil.log"),
    );
    let a1 = world.cert("acme", Role::Agent, "a1");
    let own = "[heartbeat]\ninterval = \"200ms\"\n[ports]\ninterval = \"1s\"\n";
    world.agent_config("a1", &a1, &format!("{own}{}", no_public_ip(own)));
    let _agent = world.start_agent("a1", &[]);
    let viewer = ctl_config(&world, "v", &world.cert("acme", Role::Viewer, "v"));
    let raw = |s: &str| {
        s.chars()
            .any(|c| c != '\n' && sonde_runtime::text::is_unsafe(c))
    };
    let out = eventually(
        "the renamed listener listed",
        Duration::from_secs(20),
        || async {
            let out = sondectl(&viewer, &["agent", "a1"]).await;
            String::from_utf8_lossy(&out.stdout)
                .contains(&port.to_string())
                .then_some(out)
        },
    )
    .await;
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{}", text(&out));
    assert!(!raw(&stdout), "raw control or bidi characters:\n{stdout:?}");
    assert!(stdout.contains("\\u{1b}[2Jevil\\u{202e}x"), "{stdout}");
    let out = sondectl(&viewer, &["--json", "agent", "a1"]).await;
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(!raw(&stdout), "raw characters in JSON:\n{stdout:?}");
    let v: serde_json::Value = serde_json::from_str(&stdout).expect("still JSON");
    let programs: Vec<&str> = v["ports"]["ports"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|p| p["program"].as_str())
        .collect();
    assert!(programs.contains(&"\u{1b}[2Jevil\u{202e}x"), "{programs:?}");

    let admin = ctl_config(&world, "ad", &world.cert("acme", Role::Admin, "ad"));
    let comment = "\u{1b}]0;owned\u{7}\u{1b}[2J\r\nfake line \u{202e}";
    let out = sondectl(
        &admin,
        &[
            "silence",
            "add",
            "agent=a1",
            "--duration",
            "1h",
            "--comment",
            comment,
        ],
    )
    .await;
    assert!(out.status.success(), "{}", text(&out));
    for args in [&["silence", "list"][..], &["--json", "silence", "list"][..]] {
        let out = sondectl(&viewer, args).await;
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "{}", text(&out));
        assert!(!raw(&stdout), "{args:?}: raw characters:\n{stdout:?}");
        assert!(stdout.contains("owned"), "{args:?}: {stdout}");
    }
    let out = sondectl(&viewer, &["silence", "list"]).await;
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("\\u{1b}]0;owned\\u{7}\\u{1b}[2J\\u{d}\\u{a}fake line \\u{202e}"),
        "{stdout}"
    );
}
