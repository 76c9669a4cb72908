//! `check-config`: the shipped sample configs parse, a good config passes,
//! and each kind of broken config exits non-zero naming file, line and key.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use sonde_proto::Role;
use sonde_runtime::config::Source;
use sonde_tests::{World, bin, check_config};

fn repo(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(path)
}

/// `text` with the commented examples from byte `start` on uncommented:
/// `# key = value` and `# [table]` lines lose their `# `.
fn uncomment(text: &str, start: usize) -> String {
    text[..start].to_owned()
        + &text[start..]
            .lines()
            .map(|l| match l.strip_prefix("# ") {
                Some(toml) if toml.starts_with('[') || toml.contains(" = ") => toml,
                _ => l,
            })
            .collect::<Vec<_>>()
            .join("\n")
}

#[test]
fn sample_configs_parse() {
    let text = std::fs::read_to_string(repo("agent/agent.toml")).unwrap();
    let agent: sonde_agent::config::Config = Source::read(&repo("agent/agent.toml"))
        .unwrap()
        .parse()
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(agent.heartbeat.interval, std::time::Duration::from_secs(10));
    assert_eq!(
        agent.collector_host_port(),
        Some(("collector.example.net", 7443))
    );
    // Safe to start as shipped: no probes of its own, nothing asked of
    // the internet (public IP off), no remote checks.
    let probes = agent.probes();
    assert!(
        probes.ping.is_empty() && probes.tcp.is_empty() && probes.trace.is_empty(),
        "the sample agent.toml probes something"
    );
    let host = agent.host();
    host.check().unwrap();
    assert!(
        !host.public_ip.enabled,
        "the sample asks the internet for its address"
    );
    assert!(host.remote_check.is_empty());
    assert_eq!(host.ports.risk.len(), 1);
    assert_eq!(host.metrics.interval, std::time::Duration::from_secs(10));
    // The commented examples parse once uncommented.
    let start = text.find("# Probes.").expect("probe examples");
    let agent: sonde_agent::config::Config =
        Source::from_text(Path::new("agent.toml"), uncomment(&text, start))
            .parse()
            .unwrap_or_else(|e| panic!("{e}"));
    let probes = agent.probes();
    probes.validate().unwrap();
    assert_eq!(
        (probes.ping.len(), probes.tcp.len(), probes.trace.len()),
        (1, 1, 1)
    );
    assert_eq!(probes.ping[0].targets.len(), 4);
    let host = agent.host();
    host.check().unwrap();
    assert_eq!(host.public_ip.sources.len(), 4);
    assert_eq!(host.public_ip.interval, std::time::Duration::from_secs(300));
    assert_eq!(host.remote_check[0].targets.len(), 2);
    let collector: sonde_collector::Config = Source::read(&repo("collector/collector.toml"))
        .unwrap()
        .parse()
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(collector.listen.port(), 7443);
    assert!(collector.access.operator_tenants.contains("noc"));
    // The commented per-agent example parses once uncommented.
    let text = std::fs::read_to_string(repo("collector/collector.toml")).unwrap();
    let start = text.find("# [[agent]]").expect("per-agent example");
    let uncommented = uncomment(&text, start);
    let collector: sonde_collector::Config = Source::from_text(Path::new("x.toml"), uncommented)
        .parse()
        .unwrap_or_else(|e| panic!("{e}"));
    let assigned = collector.assigned_probes("acme", "edge-paris-1");
    assigned.validate().unwrap();
    assert_eq!((assigned.ping.len(), assigned.tcp.len()), (1, 1));
    let influx = collector.influxdb.expect("[influxdb] example");
    assert_eq!(
        (influx.bucket.as_str(), influx.batch_points),
        ("sonde", 5000)
    );
    assert_eq!(influx.retry_max, std::time::Duration::from_secs(60));
    assert_eq!(collector.retention.aggregates.as_secs(), 7 * 86_400);
    let alerting = &collector.alerting;
    assert_eq!(alerting.route.len(), 2);
    assert_eq!(alerting.route[0].schedule.as_deref(), Some("office"));
    assert_eq!(alerting.receiver.len(), 2);
    assert!(alerting.receiver[0].email.is_some() && alerting.receiver[0].twilio.is_some());
    assert!(alerting.receiver[1].discord.is_some() && alerting.receiver[1].sms_webhook.is_some());
    for s in &alerting.schedule {
        sonde_collector::consumers::alert::schedule::Schedule::from_config(s).unwrap();
    }
    assert!(alerting.rules_for("acme").latency.enabled);
    assert_eq!(
        alerting.rules_for("acme").latency.threshold,
        std::time::Duration::from_millis(80)
    );
    assert!(alerting.deadman.is_some() && alerting.no_data.is_some());
}

fn expect_error(program: &str, config: &Path, needles: &[&str]) {
    let (ok, text) = check_config(program, config);
    assert!(
        !ok,
        "{program} check-config accepted a broken file:\n{text}"
    );
    for n in needles {
        assert!(
            text.contains(n),
            "{program} check-config output lacks {n:?}:\n{text}"
        );
    }
}

#[test]
#[allow(clippy::too_many_lines)]
fn collector_check_config_names_file_line_and_key() {
    let world = World::new();
    let good = world.collector_config("[heartbeat]\ngrace = \"30s\"\n");
    let (ok, text) = check_config("sonde-collector", &good);
    assert!(ok, "{text}");
    let text_of = std::fs::read_to_string(&good).unwrap();
    let file = good.display().to_string();

    // Unknown key on line 10 (after 9 lines of the base config).
    std::fs::write(
        &good,
        text_of.replace("grace = \"30s\"", "grace = \"30s\"\ngrase = \"1m\""),
    )
    .unwrap();
    expect_error(
        "sonde-collector",
        &good,
        &[
            &format!("{file}:11:1"),
            "key `heartbeat.grase`",
            "unknown field",
        ],
    );

    // Bad duration.
    std::fs::write(&good, text_of.replace("\"30s\"", "\"30 fortnights\"")).unwrap();
    expect_error(
        "sonde-collector",
        &good,
        &[&format!("{file}:10:"), "key `heartbeat.grace`"],
    );

    // A key that is not written is placed at its table.
    let header = text_of.lines().count() + 1;
    std::fs::write(
        &good,
        format!("{text_of}[[alerting.schedule]]\nname = \"empty\"\n"),
    )
    .unwrap();
    expect_error(
        "sonde-collector",
        &good,
        &[
            &format!("{file}:{header}:1"),
            "key `alerting.schedule[0].days`",
        ],
    );

    // What would fail at start or never work: the health check on the API's
    // port, a grace shorter than the heartbeat, a duplicate key.
    let listen = text_of
        .lines()
        .next()
        .unwrap()
        .replace("listen", "health-listen");
    let health = text_of.lines().nth(1).unwrap();
    std::fs::write(&good, text_of.replace(health, &listen)).unwrap();
    expect_error(
        "sonde-collector",
        &good,
        &[
            &format!("{file}:2:1"),
            "key `health-listen`",
            "takes the port of `listen`",
        ],
    );
    std::fs::write(
        &good,
        text_of.replace("grace = \"30s\"", "grace = \"30s\"\ninterval = \"1m\""),
    )
    .unwrap();
    expect_error(
        "sonde-collector",
        &good,
        &[
            "key `heartbeat.grace`",
            "30s is shorter than heartbeat.interval 1m",
        ],
    );
    std::fs::write(
        &good,
        text_of.replace("grace = \"30s\"", "grace = \"30s\"\ngrace = \"40s\""),
    )
    .unwrap();
    expect_error(
        "sonde-collector",
        &good,
        &[
            &format!("{file}:11:1"),
            "key `heartbeat.grace`",
            "duplicate key",
        ],
    );

    // The new sections: named keys, and no secrets in the InfluxDB URL.
    for (table, needles) in [
        (
            "[[agent]]\ntenant = \"acme\"\nname = \"e\"\nheartbeat-interval = \"20s\"\ngrace = \"10s\"\n",
            vec![
                "key `agent[0].grace`",
                "10s is shorter than this agent's heartbeat interval 20s",
            ],
        ),
        (
            "[[alerting.schedule]]\nname = \"never\"\ndays = []\nstart = \"09:00\"\nend = \"17:00\"\n",
            vec!["key `alerting.schedule[0].days`", "never opens"],
        ),
        (
            "[[alerting.schedule]]\nname = \"never\"\ncron = \"0 0 31 2 *\"\n",
            vec!["key `alerting.schedule[0].cron`", "matches no date"],
        ),
        (
            "[[alerting.schedule]]\nname = \"half\"\nstart = \"09:00\"\n",
            vec![
                "key `alerting.schedule[0].start`",
                "need both start and end",
            ],
        ),
        (
            "[influxdb]\nurl = \"http://user:pw@127.0.0.1:8086\"\norg = \"o\"\nbucket = \"b\"\n",
            vec!["key `influxdb.url`", "must not carry credentials"],
        ),
        (
            "[influxdb]\nurl = \"ftp://127.0.0.1\"\norg = \"o\"\nbucket = \"b\"\n",
            vec!["key `influxdb.url`", "http://HOST"],
        ),
        (
            "[[tenant]]\nname = \"acme\"\nprefixes = [\"10.1.2.7/24\"]\n",
            vec!["key `tenant[0].prefixes`", "did you mean 10.1.2.0/24"],
        ),
        (
            "[analysis.outage]\nfailures = 4\nof = 3\n",
            vec!["key `analysis.outage.failures`"],
        ),
        (
            "[[alerting.route]]\nreceiver = \"pager\"\n",
            vec![
                "key `alerting.route[0].receiver`",
                "no [[alerting.receiver]] named \"pager\"",
            ],
        ),
        (
            "[[alerting.route]]\nreceiver = \"x\"\nmatchers = [\"agent=~(\"]\n",
            vec!["key `alerting.route[0].matchers`", "bad regex"],
        ),
        (
            "[[alerting.schedule]]\nname = \"office\"\ntimezone = \"Europe/Pariss\"\ndays = [\"mon\"]\nstart = \"09:00\"\nend = \"17:00\"\n",
            vec![
                "key `alerting.schedule[0].timezone`",
                "not an IANA time zone",
            ],
        ),
        (
            "[[alerting.receiver]]\nname = \"x\"\n[alerting.receiver.discord]\nurl-file = \"/nonexistent/hook\"\n",
            vec![
                "key `alerting.receiver[0].discord.url-file`",
                "/nonexistent/hook",
            ],
        ),
        (
            "[[alerting.receiver]]\nname = \"x\"\n[alerting.receiver.email]\nhost = \"smtp\"\nfrom = \"not an address\"\nto = [\"a@b.c\"]\n",
            vec![
                "key `alerting.receiver[0].email.from`",
                "not a mail address",
            ],
        ),
    ] {
        std::fs::write(&good, format!("{text_of}{table}")).unwrap();
        expect_error("sonde-collector", &good, &needles);
    }

    // A certificate file that does not exist.
    std::fs::write(&good, text_of.replace("collector.pem", "missing.pem")).unwrap();
    expect_error(
        "sonde-collector",
        &good,
        &[
            &format!("{file}:6:1"),
            "key `tls.cert`",
            "missing file: tls.cert = ",
            "missing.pem",
        ],
    );
    // Every missing file at once, not one per start.
    std::fs::write(
        &good,
        text_of
            .replace("collector.pem", "missing.pem")
            .replace("crl.pem", "missing-crl.pem"),
    )
    .unwrap();
    expect_error(
        "sonde-collector",
        &good,
        &[
            "missing files: tls.cert = ",
            "missing.pem, tls.crl = ",
            "missing-crl.pem",
        ],
    );

    // A private key readable by others.
    std::fs::write(&good, &text_of).unwrap();
    let key = world.pki.dir().join("collector.key");
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
    expect_error(
        "sonde-collector",
        &good,
        &[&format!("{file}:7:1"), "key `tls.key`", "chmod 600"],
    );

    // A file that is not there at all.
    expect_error(
        "sonde-collector",
        &world.dir().join("nope.toml"),
        &["nope.toml", "cannot read"],
    );
}

#[test]
fn agent_check_config_names_file_line_and_key() {
    let world = World::new();
    let cert = world.cert("acme", Role::Agent, "a");
    let good = world.agent_config("a", &cert, "[heartbeat]\ninterval = \"5s\"\n");
    let (ok, text) = check_config("sonde-agent", &good);
    assert!(ok, "{text}");
    let text_of = std::fs::read_to_string(&good).unwrap();
    let file = good.display().to_string();

    std::fs::write(
        &good,
        text_of.replace("interval = \"5s\"", "intervall = \"5s\""),
    )
    .unwrap();
    expect_error(
        "sonde-agent",
        &good,
        &[
            &format!("{file}:11:1"),
            "key `heartbeat.intervall`",
            "unknown field",
        ],
    );

    std::fs::write(&good, text_of.replace("\"5s\"", "\"often\"")).unwrap();
    expect_error(
        "sonde-agent",
        &good,
        &[&format!("{file}:11:"), "key `heartbeat.interval`"],
    );

    // A probe out of bounds, named by its index.
    std::fs::write(
        &good,
        format!("{text_of}[[ping]]\ntargets = [\"::1\"]\n[[ping]]\ntargets = [\"::1\"]\ninterval = \"10ms\"\n"),
    )
    .unwrap();
    expect_error(
        "sonde-agent",
        &good,
        &[
            &format!("{file}:19:1"),
            "key `ping[1].interval`",
            "between 100ms and 24h",
        ],
    );
    std::fs::write(
        &good,
        format!("{text_of}[[tcp]]\ntargets = [\"10.0.0.0/8:80\"]\n"),
    )
    .unwrap();
    expect_error(
        "sonde-agent",
        &good,
        &[
            &format!("{file}:16:11"),
            "key `tcp[0].targets`",
            "16777214 addresses",
            "at most 65536",
        ],
    );

    std::fs::write(&good, text_of.replace("localhost:", "localhost-")).unwrap();
    expect_error(
        "sonde-agent",
        &good,
        &[&format!("{file}:1:1"), "key `collector`", "HOST:PORT"],
    );

    std::fs::write(&good, &text_of).unwrap();
    std::fs::write(&cert.key, "not a key").unwrap();
    std::fs::set_permissions(&cert.key, std::fs::Permissions::from_mode(0o600)).unwrap();
    expect_error(
        "sonde-agent",
        &good,
        &[
            &format!("{file}:6:1"),
            "key `tls.key`",
            "no PEM private key",
        ],
    );
}

#[test]
fn agent_check_config_refuses_what_could_never_work() {
    let world = World::new();
    let cert = world.cert("acme", Role::Agent, "a");
    let good = world.agent_config("a", &cert, "[heartbeat]\ninterval = \"5s\"\n");
    let text_of = std::fs::read_to_string(&good).unwrap();
    let file = good.display().to_string();
    // A link-local target, a duplicate key, a viewer's certificate.
    std::fs::write(
        &good,
        format!("{text_of}[[ping]]\ntargets = [\"fe80::1\"]\n"),
    )
    .unwrap();
    expect_error(
        "sonde-agent",
        &good,
        &["key `ping[0].targets`", "link-local", "interface scope"],
    );
    std::fs::write(
        &good,
        text_of.replace("interval = \"5s\"", "interval = \"5s\"\ninterval = \"6s\""),
    )
    .unwrap();
    expect_error(
        "sonde-agent",
        &good,
        &[
            &format!("{file}:12:1"),
            "duplicate key `heartbeat.interval`",
        ],
    );
    let viewer = world.cert("acme", Role::Viewer, "v");
    let as_viewer = world.agent_config("v", &viewer, "");
    expect_error(
        "sonde-agent",
        &as_viewer,
        &[
            "key `tls.cert`",
            "sonde://acme/viewer/v is a viewer certificate",
        ],
    );
}

#[test]
fn agent_check_config_names_host_fact_keys() {
    let world = World::new();
    let cert = world.cert("acme", Role::Agent, "a");
    let good = world.agent_config("a", &cert, "[heartbeat]\ninterval = \"5s\"\n");
    let text_of = std::fs::read_to_string(&good).unwrap();
    let file = good.display().to_string();
    // Host facts: a remote check and a public-IP source, named.
    std::fs::write(
        &good,
        format!("{text_of}[[remote-check]]\ntargets = [\"h:22\", \"h:9-3\"]\n"),
    )
    .unwrap();
    expect_error(
        "sonde-agent",
        &good,
        &[
            &format!("{file}:15:1"),
            "key `remote-check[0]`",
            "\"h:9-3\": range \"9-3\" runs backwards",
        ],
    );
    std::fs::write(
        &good,
        text_of.replace(
            "[public-ip]\nenabled = false\n",
            "[[public-ip.source]]\nkind = \"http\"\nurl = \"http://127.0.0.1:1/\"\nformat = \"json\"\n",
        ),
    )
    .unwrap();
    expect_error(
        "sonde-agent",
        &good,
        &[
            &format!("{file}:13:3"),
            "key `public-ip`",
            "format json needs field",
        ],
    );
}

#[test]
fn key_paths_can_name_systemd_credentials() {
    let world = World::new();
    let cert = world.cert("acme", Role::Agent, "cred");
    let config = world.agent_config("cred", &cert, "");
    let text = std::fs::read_to_string(&config).unwrap();
    let key_name = cert.key.file_name().unwrap().to_str().unwrap();
    std::fs::write(
        &config,
        text.replace(
            cert.key.to_str().unwrap(),
            &format!("$CREDENTIALS_DIRECTORY/{key_name}"),
        ),
    )
    .unwrap();
    let file = config.display().to_string();
    // Without the variable (the shipped units pass no credentials since
    // 0.1.0-2; configs written for the earlier ones still name one), the
    // file of that name next to the config is read: here there is none.
    let out = Command::new(bin("sonde-agent"))
        .args(["--config", &file, "check-config"])
        .env_remove("CREDENTIALS_DIRECTORY")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    let beside = config.parent().unwrap().join(key_name);
    assert!(
        err.contains(&format!("{file}:6:1: key `tls.key`"))
            && err.contains(&format!("missing file: tls.key = {}", beside.display())),
        "{err}"
    );
    // Once it is there, it is used.
    std::fs::copy(&cert.key, &beside).unwrap();
    let out = Command::new(bin("sonde-agent"))
        .args(["--config", &file, "check-config"])
        .env_remove("CREDENTIALS_DIRECTORY")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    std::fs::remove_file(&beside).unwrap();
    // As systemd runs it: the key is found in the credentials directory.
    let out = Command::new(bin("sonde-agent"))
        .args(["--config", &file, "check-config"])
        .env("CREDENTIALS_DIRECTORY", cert.key.parent().unwrap())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
