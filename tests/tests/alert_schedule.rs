//! Deferral by schedule, end to end: a route whose schedule is closed
//! holds its notifications back, and at the opening the real SMTP server
//! gets exactly one mail: what still fires, and everything that fired and
//! resolved meanwhile, with how often and when, however it joined the
//! held-back group.
//!
//! ```text
//!   a1 ── core (collector) ── tgt: 10.92.0.1–5
//!           │ 198.18.88.2/30
//!           └── test: SMTP server (STARTTLS, AUTH) on 198.18.88.1
//! ```
//!
//! The schedule opens one minute a day, twelve hours from now; the test
//! opens it by changing it and reloading the collector as `systemctl
//! reload` does (`sonde-collector reload --pid`), which must reach the
//! group already held back.
//!
//! A (10.92.0.1) is cut and stays down; B (.2) is cut and restored; C (.3)
//! is cut and restored twice.

use std::path::PathBuf;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use sonde_proto::Role;
use sonde_tests::netns::Lab;
use sonde_tests::receivers::Smtp;
use sonde_tests::{Proc, World, bin, eventually, star};

const SMTP_USER: &str = "sonde";
const SMTP_PASSWORD: &str = "sch3dule-pa55";
const WAIT: Duration = Duration::from_secs(60);
/// Longer than group-wait + group-interval and an alerting poll: what has
/// not arrived by then is not coming.
const QUIET: Duration = Duration::from_secs(8);

struct Setup {
    world: World,
    lab: Lab,
    core: String,
    tgt: String,
    collector: Proc,
    _agent: Proc,
    smtp: Smtp,
    smtp_port: u16,
}

/// The collector's config with the route's schedule `cron`.
fn collector_config(world: &World, smtp_port: u16, cron: &str) -> PathBuf {
    star::collector_config(
        world,
        &format!(
            "[analysis]\ncheckpoint = \"200ms\"\n\
             [analysis.correlation]\nsettle = \"2s\"\n\
             [alerting]\nexternal-url = \"https://sonde.test:7443\"\n\
             [alerting.delivery]\nretry-initial = \"300ms\"\nretry-max = \"1s\"\ntimeout = \"5s\"\n\
             [[alerting.schedule]]\nname = \"office\"\ncron = \"{cron}\"\n\
             [[alerting.route]]\nname = \"acme-ops\"\ntenant = \"acme\"\nreceiver = \"ops\"\n\
             schedule = \"office\"\n\
             group-wait = \"1s\"\ngroup-interval = \"2s\"\nrepeat-interval = \"1h\"\n\
             [[alerting.receiver]]\nname = \"ops\"\n\
             [alerting.receiver.email]\nhost = \"198.18.88.1\"\nport = {smtp_port}\ntls = \"starttls\"\n\
             ca = \"{ca}\"\nusername = \"{SMTP_USER}\"\npassword-file = \"{password}\"\n\
             from = \"sonde <sonde@example.net>\"\nto = [\"oncall@example.net\"]\n",
            ca = world.pki.dir().join("ca.pem").display(),
            password = world.dir().join("smtp.password").display(),
        ),
    )
}

async fn setup() -> Setup {
    let world = World::new();
    let mut lab = Lab::new("sched");
    let core = lab.host("core");
    let tgt = lab.host("tgt");
    lab.link(&core, "10.91.0.1/24", &tgt, "10.91.0.2/24");
    lab.ip(&tgt, &["route", "add", "default", "via", "10.91.0.1"]);
    lab.ip(&core, &["route", "add", "10.92.0.0/24", "via", "10.91.0.2"]);
    for i in 1..=5 {
        lab.ip(
            &tgt,
            &["addr", "add", &format!("10.92.0.{i}/32"), "dev", "lo"],
        );
    }
    lab.link_root(&core, "198.18.88.2/30", "198.18.88.1/30");
    let smtp = Smtp::start_in(&world, [198, 18, 88, 1], SMTP_USER, SMTP_PASSWORD).await;
    let smtp_port = smtp.addr.port();
    // Open one minute a day, twelve hours from now: closed for the test.
    let hour = (SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
        / 3600
        + 12)
        % 24;
    let config = collector_config(&world, smtp_port, &format!("0 {hour} * * *"));
    let collector = star::spawn_in(
        &core,
        "sonde-collector",
        &config,
        world.dir().join("collector.log"),
    );
    let (_, agent) = star::agent(
        &world,
        &mut lab,
        &core,
        1,
        "[heartbeat]\ninterval = \"1s\"\n\
         [[ping]]\ntargets = [\"10.92.0.1\", \"10.92.0.2\", \"10.92.0.3\", \"10.92.0.4\", \"10.92.0.5\"]\n\
         interval = \"1s\"\ntimeout = \"500ms\"\n",
    );
    Setup {
        world,
        lab,
        core,
        tgt,
        collector,
        _agent: agent,
        smtp,
        smtp_port,
    }
}

impl Setup {
    fn ctl(&self, args: &[&str]) -> Option<serde_json::Value> {
        let cert = self.world.cert("acme", Role::Viewer, "eve");
        star::ctl_json(&self.world, &self.lab, &self.core, "acme", &cert, args)
    }

    /// Drops ICMP echo requests to the listed hosts of the target
    /// namespace (none: nothing dropped).
    fn cut(&self, hosts: &[u8]) {
        if hosts.is_empty() {
            self.lab.nft(&self.tgt, "");
            return;
        }
        let set: Vec<String> = hosts.iter().map(|h| format!("10.92.0.{h}")).collect();
        self.lab.nft(
            &self.tgt,
            &format!(
                "table inet t {{\n chain in {{\n type filter hook input priority 0;\n \
                 ip daddr {{ {} }} icmp type echo-request drop\n }}\n}}\n",
                set.join(", ")
            ),
        );
    }

    /// The outage events of `subject` so far: (kind, `at_ms`).
    fn outages_of(&self, subject: &str) -> Vec<(String, i64)> {
        let Some(v) = self.ctl(&["events", "--limit", "1000"]) else {
            return Vec::new();
        };
        let mut out: Vec<(String, i64)> = v["events"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|e| e["detail"]["subject"] == subject)
            .filter(|e| e["kind"] == "outage-start" || e["kind"] == "outage-end")
            .map(|e| {
                (
                    e["kind"].as_str().unwrap().to_owned(),
                    e["at_ms"].as_i64().unwrap(),
                )
            })
            .collect();
        out.sort_by_key(|(_, at)| *at);
        out
    }

    /// Waits until `subject` has had `starts` outage starts and `ends` ends.
    async fn outages(&self, subject: &str, starts: usize, ends: usize) -> Vec<(String, i64)> {
        eventually(
            &format!("{subject}: {starts} outage starts, {ends} ends"),
            WAIT,
            || async {
                let o = self.outages_of(subject);
                let n = |k: &str| o.iter().filter(|(kind, _)| kind == k).count();
                (n("outage-start") == starts && n("outage-end") == ends).then_some(o)
            },
        )
        .await
    }

    /// The alert of target `subject`'s outage, once the API shows it
    /// held back in its route's group.
    async fn held(&self, subject: &str) -> serde_json::Value {
        eventually(
            &format!("the alert of {subject} held back"),
            WAIT,
            || async {
                let v = self.ctl(&["alerts"])?;
                v["alerts"]
                    .as_array()?
                    .iter()
                    .find(|a| a["labels"]["subject"] == subject && a["status"] == "deferred")
                    .filter(|a| a["groups"][0]["deferred"] == true)
                    .cloned()
            },
        )
        .await
    }
}

/// `2026-11-21 09:00:00 UTC`, as the notifications write times.
fn utc(ms: i64) -> String {
    let t = UNIX_EPOCH + Duration::from_millis(u64::try_from(ms).unwrap());
    // `2026-11-21T09:00:00Z`
    let rfc = humantime::format_rfc3339_seconds(t).to_string();
    format!("{} UTC", rfc.trim_end_matches('Z').replacen('T', " ", 1))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[allow(clippy::too_many_lines)]
async fn what_fired_while_the_schedule_was_closed_is_one_mail_at_the_opening() {
    let s = setup().await;
    eventually("5 targets up", WAIT, || async {
        let v = s.ctl(&["targets"])?;
        let up = v["targets"]
            .as_array()?
            .iter()
            .filter(|t| t["state"] == "up")
            .count();
        (up == 5).then_some(())
    })
    .await;

    // A goes down and stays down: held back, not sent.
    s.cut(&[1]);
    let held_a = s.held("10.92.0.1").await;
    assert_eq!(held_a["groups"][0]["notified"], false, "{held_a:#}");
    // B joins the held-back group, and leaves it before the opening.
    s.cut(&[1, 2]);
    let held_b = s.held("10.92.0.2").await;
    assert_eq!(
        held_b["groups"][0]["labels"],
        serde_json::json!({"tenant": "acme", "prefix": "10.92.0.0/24"}),
        "{held_b:#}"
    );
    s.cut(&[1]);
    let b_outage = s.outages("10.92.0.2", 1, 1).await;
    // C twice.
    for round in 1..=2 {
        s.cut(&[1, 3]);
        s.outages("10.92.0.3", round, round - 1).await;
        s.held("10.92.0.3").await;
        s.cut(&[1]);
        s.outages("10.92.0.3", round, round).await;
    }
    let c_outage = s.outages_of("10.92.0.3");
    tokio::time::sleep(QUIET).await;
    assert!(
        s.smtp.mails().is_empty(),
        "a mail while the schedule was closed: {:?}",
        s.smtp
            .mails()
            .iter()
            .map(|m| &m.subject)
            .collect::<Vec<_>>()
    );
    let v = s.ctl(&["alerts"]).unwrap();
    for subject in ["10.92.0.2", "10.92.0.3"] {
        let resolved = v["alerts"]
            .as_array()
            .unwrap()
            .iter()
            .find(|a| a["labels"]["subject"] == subject)
            .unwrap_or_else(|| panic!("{subject} not listed: {v:#}"));
        assert_eq!(
            resolved["groups"][0]["deferred"], true,
            "{subject} resolved, kept for the opening: {resolved:#}"
        );
    }

    // The operator opens the schedule: new config, then the reload
    // systemd runs for `systemctl reload`.
    let config = collector_config(&s.world, s.smtp_port, "* * * * *");
    let pid = s.collector.pid().to_string();
    let out = s.lab.exec(
        &s.core,
        &bin("sonde-collector"),
        &[
            "--config",
            config.to_str().unwrap(),
            "reload",
            "--pid",
            &pid,
        ],
        Duration::from_secs(70),
    );
    assert!(
        out.status.success(),
        "reload: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let mail = eventually("the mail at the opening", WAIT, || async {
        s.smtp.mails().into_iter().next()
    })
    .await;
    tokio::time::sleep(QUIET).await;
    let mails = s.smtp.mails();
    assert_eq!(
        mails.len(),
        1,
        "{:#?}",
        mails.iter().map(|m| &m.subject).collect::<Vec<_>>()
    );
    assert!(
        mail.subject
            .starts_with("[FIRING:1] acme: target 10.92.0.1 is down"),
        "{}",
        mail.subject
    );
    let text = mail.text();
    let (b_start, b_end) = (b_outage[0].1, b_outage[1].1);
    let (c_first, c_last) = (c_outage[0].1, c_outage[3].1);
    for want in [
        "Held back by the schedule of route acme-ops since".to_owned(),
        "Firing:\r\n- [critical] target 10.92.0.1 is down".to_owned(),
        "Fired and resolved outside the schedule:".to_owned(),
        format!(
            "target 10.92.0.2 is down (seen by the only agent probing it) (fired once, {}, resolved {})",
            utc(b_start),
            utc(b_end)
        ),
        format!(
            "target 10.92.0.3 is down (seen by the only agent probing it) (fired 2 times, first {}, resolved {})",
            utc(c_first),
            utc(c_last)
        ),
    ] {
        assert!(text.contains(&want), "mail lacks {want:?}:\n{text}");
    }
    // B before C: in the order it happened.
    let (b_at, c_at) = (
        text.find("target 10.92.0.2 is down").unwrap(),
        text.find("target 10.92.0.3 is down").unwrap(),
    );
    assert!(b_at < c_at, "{text}");
    let id = sonde_tests::receivers::header(&mail.raw, "Message-ID").unwrap();
    assert!(
        id.starts_with("<sonde.") && id.ends_with("@example.net>") && id.len() == 52,
        "{id}"
    );
    // Told: A is notified, B and C are gone from the group.
    let v = s.ctl(&["alerts"]).unwrap();
    let listed: Vec<(&str, &serde_json::Value)> = v["alerts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| (a["labels"]["subject"].as_str().unwrap(), &a["groups"]))
        .collect();
    for (subject, groups) in listed {
        if subject == "10.92.0.1" {
            assert_eq!(groups[0]["notified_as"], "firing", "{v:#}");
        } else {
            assert_eq!(groups, &serde_json::json!([]), "{subject}: {v:#}");
        }
    }
}
