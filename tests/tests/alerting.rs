//! Alerting end to end: real agents probing real hosts in network
//! namespaces, the collector alerting through a real SMTP server
//! (aiosmtpd with STARTTLS and AUTH required) and a fake of Discord's
//! webhook API that checks the documented request shape.
//!
//! ```text
//!   a1 ─┐                          ┌ 10.82.0.1–254 (a /24)
//!   a2 ─┴─ core (collector) ── tgt ┘
//!            │ 198.18.85.2/30
//!            └── test: fake Discord, SMTP server on 198.18.85.1
//! ```
//!
//! One incident after another, counting what reaches each receiver:
//! a target cut off (one alert, one resolution, on both receivers); a /24
//! cut off while Discord answers 429 and the SMTP server is down (one
//! grouped notification each, Discord after `retry_after`, mail once the
//! server is back, `receiver-failing`/`-recovered` events); the collector
//! killed mid-incident (no duplicate; the resolution still arrives); an
//! agent stopped under a silence (a viewer may not silence; nothing until
//! the admin expires it, then one agent-missing alert and no outage
//! alerts for its targets).

use std::process::Output;
use std::time::Duration;

use sonde_proto::Role;
use sonde_tests::netns::Lab;
use sonde_tests::receivers::{Discord, Smtp};
use sonde_tests::{Cert, Proc, World, eventually, star};

const SETTLE_S: u64 = 3;
/// Longer than settle + group-wait + group-interval: what has not arrived
/// by then is not coming.
const QUIET: Duration = Duration::from_secs(12);
const SMTP_USER: &str = "sonde";
const SMTP_PASSWORD: &str = "sm7p-pa55word";

struct Setup {
    world: World,
    lab: Lab,
    core: String,
    tgt: String,
    procs: Vec<Proc>,
    collector_config: std::path::PathBuf,
    discord: Discord,
    smtp: Smtp,
}

#[allow(clippy::too_many_lines)]
async fn setup() -> Setup {
    let world = World::new();
    let mut lab = Lab::new("alrt");
    let core = lab.host("core");
    let tgt = lab.host("tgt");
    lab.link(&core, "10.81.0.1/24", &tgt, "10.81.0.2/24");
    lab.ip(&tgt, &["route", "add", "default", "via", "10.81.0.1"]);
    lab.ip(&core, &["route", "add", "10.82.0.0/24", "via", "10.81.0.2"]);
    for i in 1..=254 {
        lab.ip(
            &tgt,
            &["addr", "add", &format!("10.82.0.{i}/32"), "dev", "lo"],
        );
    }
    // The receivers, reached from `core` over the test's own veth.
    lab.link_root(&core, "198.18.85.2/30", "198.18.85.1/30");
    let discord = Discord::start("198.18.85.1:0".parse().unwrap()).await;
    let smtp = Smtp::start_in(&world, [198, 18, 85, 1], SMTP_USER, SMTP_PASSWORD).await;
    let smtp_addr = smtp.addr;
    let dir = world.dir();
    sonde_tests::write_secret(&dir.join("discord.url"), discord.url());

    let collector_config = star::collector_config(
        &world,
        &format!(
            "[access]\noperator-tenants = [\"noc\"]\n\
             [[tenant]]\nname = \"acme\"\nprefixes = [\"10.82.0.0/24\"]\n\
             [analysis]\ncheckpoint = \"200ms\"\n\
             [analysis.correlation]\nsettle = \"{SETTLE_S}s\"\n\
             [alerting]\nexternal-url = \"https://sonde.test:7443\"\n\
             [alerting.delivery]\nretry-initial = \"300ms\"\nretry-max = \"1s\"\nfailing-after = 2\ntimeout = \"5s\"\n\
             [[alerting.route]]\nname = \"acme-ops\"\ntenant = \"acme\"\nreceiver = \"ops\"\n\
             group-wait = \"2s\"\ngroup-interval = \"3s\"\nrepeat-interval = \"1h\"\n\
             [[alerting.receiver]]\nname = \"ops\"\n\
             [alerting.receiver.discord]\nurl-file = \"{discord}\"\n\
             [alerting.receiver.email]\nhost = \"198.18.85.1\"\nport = {smtp_port}\ntls = \"starttls\"\n\
             ca = \"{ca}\"\nusername = \"{SMTP_USER}\"\npassword-file = \"{password}\"\n\
             from = \"sonde <sonde@example.net>\"\nto = [\"oncall@example.net\"]\n",
            ca = world.pki.dir().join("ca.pem").display(),
            discord = dir.join("discord.url").display(),
            smtp_port = smtp_addr.port(),
            password = dir.join("smtp.password").display(),
        ),
    );
    let mut procs = vec![star::spawn_in(
        &core,
        "sonde-collector",
        &collector_config,
        dir.join("collector.log"),
    )];
    for n in 1..=2 {
        let (_, agent) = star::agent(
            &world,
            &mut lab,
            &core,
            n,
            "[heartbeat]\ninterval = \"1s\"\n\
             [[ping]]\ntargets = [\"10.82.0.0/24\"]\ninterval = \"1s\"\ntimeout = \"500ms\"\n",
        );
        procs.push(agent);
    }
    Setup {
        world,
        lab,
        core,
        tgt,
        procs,
        collector_config,
        discord,
        smtp,
    }
}

/// `sondectl --json ARGS` with `cert` of acme, run inside `core`.
fn ctl_as(s: &Setup, cert: &Cert, args: &[&str]) -> Output {
    star::ctl(&s.world, &s.lab, &s.core, "acme", cert, args)
}

/// As acme's viewer; `None` when it failed.
fn ctl(s: &Setup, args: &[&str]) -> Option<serde_json::Value> {
    let cert = s.world.cert("acme", Role::Viewer, "eve");
    star::ctl_json(&s.world, &s.lab, &s.core, "acme", &cert, args)
}

fn events_of(s: &Setup, kind: &str) -> usize {
    ctl(s, &["events", "--limit", "1000"]).map_or(0, |v| {
        v["events"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|e| e["kind"] == kind)
            .count()
    })
}

/// Waits until Discord accepted `n` messages and the SMTP server got `n`
/// mails; returns the newest title of each.
async fn delivered(s: &Setup, n: usize, what: &str) -> (String, String) {
    let discord = eventually(
        &format!("Discord message {n}: {what}"),
        Duration::from_secs(60),
        || async {
            let d = s.discord.delivered();
            (d.len() >= n).then(|| d[n - 1].clone())
        },
    )
    .await;
    let mail = eventually(
        &format!("mail {n}: {what}"),
        Duration::from_secs(60),
        || async {
            let m = s.smtp.mails();
            (m.len() >= n).then(|| m[n - 1].subject.clone())
        },
    )
    .await;
    assert!(
        discord.contains(what),
        "Discord message {n}: {discord:?} lacks {what:?}"
    );
    assert!(mail.contains(what), "mail {n}: {mail:?} lacks {what:?}");
    (discord, mail)
}

/// After a quiet while, exactly `n` notifications on each receiver.
async fn exactly(s: &Setup, n: usize) {
    tokio::time::sleep(QUIET).await;
    assert_eq!(
        s.discord.delivered().len(),
        n,
        "Discord: {:#?}",
        s.discord.delivered()
    );
    let subjects: Vec<String> = s.smtp.mails().into_iter().map(|m| m.subject).collect();
    assert_eq!(subjects.len(), n, "mails: {subjects:#?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[allow(clippy::too_many_lines)]
async fn incidents_reach_mail_and_discord_once() {
    let mut s = setup().await;
    eventually(
        "2 agents × 254 targets up",
        Duration::from_secs(60),
        || async {
            let v = ctl(&s, &["targets", "--limit", "10000"])?;
            let up = v["targets"]
                .as_array()?
                .iter()
                .filter(|t| t["state"] == "up")
                .count();
            (up == 508).then_some(())
        },
    )
    .await;
    assert!(s.discord.posted().is_empty() && s.smtp.mails().is_empty());

    // 1. One target cut off: one alert on each receiver, then one
    // resolution.
    let drop_one = "table inet t {\n chain in {\n type filter hook input priority 0;\n \
                    ip daddr 10.82.0.7 icmp type echo-request drop\n }\n}\n";
    s.lab.nft(&s.tgt, drop_one);
    let (title, _) = delivered(&s, 1, "target 10.82.0.7 is down").await;
    assert!(title.starts_with("[FIRING:1] acme: "), "{title}");
    exactly(&s, 1).await;
    s.lab.nft(&s.tgt, "");
    let (title, subject) = delivered(&s, 2, "target 10.82.0.7 is up again").await;
    assert!(
        title.starts_with("[RESOLVED:1]") && subject.starts_with("[RESOLVED:1]"),
        "{title} / {subject}"
    );
    exactly(&s, 2).await;
    let mail = &s.smtp.mails()[0];
    assert_eq!(mail.envelope["login"], SMTP_USER);
    assert_eq!(mail.envelope["tls"], true, "STARTTLS was used");
    assert_eq!(
        mail.envelope["to"],
        serde_json::json!(["oncall@example.net"])
    );
    for part in [
        "multipart/alternative",
        "text/plain",
        "text/html",
        "https://sonde.test:7443/api/v1/outages",
    ] {
        assert!(mail.raw.contains(part), "mail lacks {part}:\n{}", mail.raw);
    }
    let first = &s.discord.posted()[0].body;
    assert_eq!(first["embeds"][0]["color"], 0x00e7_4c3c, "critical is red");
    assert!(
        first["embeds"][0]["fields"][0]["value"]
            .as_str()
            .unwrap()
            .contains("https://sonde.test:7443/")
    );

    // 2. 200 hosts of the /24 cut off while Discord rate-limits and the
    // SMTP server is down: one grouped notification each, Discord after
    // retry_after, mail once the server is back.
    s.smtp.stop();
    s.discord.rate_limit_next(1, 1.5);
    let drop_200 = "table inet t {\n chain in {\n type filter hook input priority 0;\n \
                    ip daddr 10.82.0.1-10.82.0.200 icmp type echo-request drop\n }\n}\n";
    s.lab.nft(&s.tgt, drop_200);
    let discord = eventually(
        "Discord: prefix notification",
        Duration::from_secs(60),
        || async {
            let d = s.discord.delivered();
            (d.len() >= 3).then(|| d[2].clone())
        },
    )
    .await;
    assert!(discord.contains("prefix 10.82.0.0/24 is down"), "{discord}");
    let posted = s.discord.posted();
    let limited = posted
        .iter()
        .position(|p| p.status == 429)
        .expect("a 429 answer");
    let next = &posted[limited + 1];
    assert_eq!(next.status, 204, "the retry is the next request");
    assert!(
        next.at - posted[limited].at >= Duration::from_millis(1500),
        "retried before retry_after: {:?}",
        next.at - posted[limited].at
    );
    assert!(posted.iter().all(|p| p.problems.is_empty()), "{posted:#?}");
    eventually(
        "receiver-failing (mail)",
        Duration::from_secs(30),
        || async { (events_of(&s, "receiver-failing") >= 1).then_some(()) },
    )
    .await;
    assert!(
        s.smtp.mails().len() == 2,
        "no mail while the server is down"
    );
    s.smtp.resume().await;
    let (_, subject) = delivered(&s, 3, "prefix 10.82.0.0/24 is down").await;
    assert!(subject.starts_with("[FIRING:1]"), "{subject}");
    eventually("receiver-recovered", Duration::from_secs(30), || async {
        (events_of(&s, "receiver-recovered") >= 1).then_some(())
    })
    .await;
    exactly(&s, 3).await;

    // 3. The collector killed mid-incident: nothing is sent again, and the
    // resolution still comes.
    s.procs[0].kill9();
    s.procs[0] = star::spawn_in(
        &s.core,
        "sonde-collector",
        &s.collector_config,
        s.world.dir().join("collector-2.log"),
    );
    eventually(
        "agents back after the restart",
        Duration::from_secs(60),
        || async {
            let v = ctl(&s, &["agents"])?;
            let connected = v["agents"]
                .as_array()?
                .iter()
                .filter(|a| a["connected"] == true)
                .count();
            (connected == 2).then_some(())
        },
    )
    .await;
    exactly(&s, 3).await;
    s.lab.nft(&s.tgt, "");
    let (title, subject) = delivered(&s, 4, "prefix 10.82.0.0/24 is up again").await;
    assert!(
        title.starts_with("[RESOLVED:1]") && subject.starts_with("[RESOLVED:1]"),
        "{title} / {subject}"
    );
    exactly(&s, 4).await;

    // 4. Silences: a viewer may not make one; the admin's holds an agent's
    // alert back until the admin expires it.
    let viewer = s.world.cert("acme", Role::Viewer, "eve");
    let out = ctl_as(
        &s,
        &viewer,
        &[
            "silence",
            "add",
            "agent=a2",
            "--duration",
            "1h",
            "--comment",
            "x",
        ],
    );
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("403") && err.contains("admin role"), "{err}");
    let admin = s.world.cert("acme", Role::Admin, "ann");
    let out = ctl_as(
        &s,
        &admin,
        &[
            "silence",
            "add",
            "agent=a2",
            "rule=agent-missing",
            "--duration",
            "1h",
            "--comment",
            "planned work",
        ],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let silence: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(silence["author"], "sonde://acme/admin/ann");
    assert_eq!(silence["state"], "active", "{silence:#}");
    let id = silence["id"].as_i64().unwrap().to_string();
    let outages_before = events_of(&s, "outage-start");
    s.procs[2].kill9();
    eventually(
        "a2's alert listed as silenced",
        Duration::from_secs(30),
        || async {
            let v = ctl(&s, &["alerts"])?;
            v["alerts"]
                .as_array()?
                .iter()
                .any(|a| {
                    a["rule"] == "agent-missing"
                        && a["labels"]["agent"] == "a2"
                        && a["status"] == "silenced"
                })
                .then_some(())
        },
    )
    .await;
    exactly(&s, 4).await;
    let out = ctl_as(&s, &admin, &["silence", "expire", &id]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let expired: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(expired["state"], "expired", "{expired:#}");
    let (title, _) = delivered(&s, 5, "agent acme/a2 is missing").await;
    assert!(title.starts_with("[FIRING:1]"), "{title}");
    exactly(&s, 5).await;
    assert_eq!(
        events_of(&s, "outage-start"),
        outages_before,
        "no outage for a missing agent's targets"
    );
    let v = ctl(&s, &["alerts", "--status", "firing"]).unwrap();
    let firing: Vec<&str> = v["alerts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["rule"].as_str().unwrap())
        .collect();
    assert_eq!(firing, ["agent-missing"]);
    // The notifications' history, as sent.
    assert!(
        v["notifications"]
            .as_array()
            .unwrap()
            .iter()
            .all(|n| n["state"] == "sent")
    );

    // Secrets never reach the logs.
    for log in ["collector.log", "collector-2.log"] {
        let text = std::fs::read_to_string(s.world.dir().join(log)).unwrap();
        assert!(
            !text.contains(s.discord.token()),
            "{log} leaks the webhook token"
        );
        assert!(
            !text.contains(SMTP_PASSWORD),
            "{log} leaks the SMTP password"
        );
    }
}
