//! `sonde-mangen DIR`: writes `sonde-agent.8`, `sonde-collector.8`,
//! `sondectl.1` and `sonde-certs.1` into DIR, generated (with `clap_mangen`) from the same
//! command-line definitions the programs parse, so a man page cannot drift
//! from the program. The package build (`packaging/build.sh`) runs it.

use std::path::Path;

use std::fmt::Write as _;

use clap::CommandFactory;

/// One man page: program, section, command definition, and the sections
/// clap does not know (FILES, SIGNALS, ENVIRONMENT, EXIT STATUS, SEE ALSO),
/// as (heading, paragraphs of (term, text)).
struct Page {
    name: &'static str,
    section: &'static str,
    cmd: clap::Command,
    extra: &'static [(&'static str, &'static [(&'static str, &'static str)])],
}

const DAEMON_SIGNALS: &[(&str, &str)] = &[
    (
        "SIGHUP",
        "Reload: re-read the config and every file it names (certificates, key, CRL). A refused \
         config is logged and the running one kept. `systemctl reload` runs the `reload` \
         subcommand, which waits for the outcome.",
    ),
    (
        "SIGTERM, SIGINT",
        "Stop: finish what is in flight (the agent seals its last batch into the spool), then \
         exit 0.",
    ),
];

const DAEMON_EXIT: &[(&str, &str)] = &[
    ("0", "Stopped on request; check-config or reload succeeded."),
    (
        "1",
        "A runtime failure (see the log), or a reload the daemon refused or did not answer.",
    ),
    (
        "78",
        "The config or a file it names is wrong (EX_CONFIG). The systemd unit does not restart \
         on it.",
    ),
];

const DAEMON_ENV: &[(&str, &str)] = &[
    (
        "RUST_LOG",
        "Log filter when --log-level is not given (default info).",
    ),
    (
        "JOURNAL_STREAM",
        "Set by systemd: with --log auto, log to journald (the reason in the message, the fields \
         structured, key events with a MESSAGE_ID).",
    ),
    (
        "NOTIFY_SOCKET, WATCHDOG_USEC",
        "Set by systemd: readiness, status, reload and watchdog notifications.",
    ),
    (
        "CREDENTIALS_DIRECTORY",
        "Set by systemd with LoadCredential=: a path in the config starting with \
         $CREDENTIALS_DIRECTORY/ is read from there.",
    ),
];

fn pages() -> Vec<Page> {
    vec![
        agent_page(),
        collector_page(),
        sondectl_page(),
        certs_page(),
    ]
}

fn agent_page() -> Page {
    Page {
        name: "sonde-agent",
        section: "8",
        cmd: sonde_agent::cli::Cli::command(),
        extra: &[
            (
                "FILES",
                &[
                    (
                        "/etc/sonde/agent.toml",
                        "The config (commented sample shipped).",
                    ),
                    (
                        "/etc/sonde/ca.pem, /etc/sonde/agent.pem",
                        "The CA and this agent's certificate: readable by group sonde \
                             (root:sonde 0640).",
                    ),
                    (
                        "/etc/sonde/agent.key",
                        "Its private key: owned by sonde (or root), mode 0600 or 0400; \
                             anything looser is refused.",
                    ),
                    (
                        "/var/lib/sonde-agent/spool/",
                        "Results not yet acknowledged by the collector (checksummed \
                             segments).",
                    ),
                    (
                        "/var/lib/sonde-agent/reload-status",
                        "The outcome of the last reload, read by the reload subcommand.",
                    ),
                ],
            ),
            ("SIGNALS", DAEMON_SIGNALS),
            ("ENVIRONMENT", DAEMON_ENV),
            ("EXIT STATUS", DAEMON_EXIT),
            (
                "SEE ALSO",
                &[(
                    "sonde-collector(8), sondectl(1), systemctl(1), journalctl(1)",
                    "The README in /usr/share/doc/sonde-agent/ has the operations guide.",
                )],
            ),
        ],
    }
}

fn collector_page() -> Page {
    Page {
        name: "sonde-collector",
        section: "8",
        cmd: sonde_collector::cli::Cli::command(),
        extra: &[
            (
                "FILES",
                &[
                    (
                        "/etc/sonde/collector.toml",
                        "The config (commented sample shipped).",
                    ),
                    (
                        "/etc/sonde/ca.pem, /etc/sonde/collector.pem, /etc/sonde/crl.pem",
                        "The CA, the collector's certificate and the CRL: readable by group \
                             sonde (root:sonde 0640).",
                    ),
                    (
                        "/etc/sonde/collector.key",
                        "Its private key: owned by sonde (or root), mode 0600 or 0400.",
                    ),
                    (
                        "/var/lib/sonde-collector/state.sqlite3",
                        "The state store (WAL mode): agents, events, aggregates, alerts. \
                             Back it up with the backup subcommand.",
                    ),
                    (
                        "/var/lib/sonde-collector/state.log.sqlite3",
                        "The ingest log (WAL mode): acknowledged batches until every consumer \
                             has passed them, replay marks, last heartbeats. Not part of a \
                             backup; keep it when restoring one.",
                    ),
                    (
                        "/var/lib/sonde-collector/reload-status",
                        "The outcome of the last reload, read by the reload subcommand.",
                    ),
                ],
            ),
            ("SIGNALS", DAEMON_SIGNALS),
            ("ENVIRONMENT", DAEMON_ENV),
            ("EXIT STATUS", DAEMON_EXIT),
            (
                "SEE ALSO",
                &[(
                    "sonde-agent(8), sondectl(1), systemctl(1), journalctl(1)",
                    "The README in /usr/share/doc/sonde-collector/ has the operations guide.",
                )],
            ),
        ],
    }
}

fn sondectl_page() -> Page {
    Page {
        name: "sondectl",
        section: "1",
        cmd: sondectl::cli::Cli::command(),
        extra: &[
            (
                "FILES",
                &[
                    (
                        "~/.config/sonde/sondectl.toml",
                        "Your own config ($XDG_CONFIG_HOME/sonde/sondectl.toml when that is \
                             set): the collector's address and your certificate and key. Used \
                             when it exists.",
                    ),
                    (
                        "/etc/sonde/sondectl.toml",
                        "The system-wide config, used otherwise (readable by root and group \
                             sonde only).",
                    ),
                ],
            ),
            (
                "ENVIRONMENT",
                &[
                    ("SONDECTL_CONFIG", "The config file, as --config."),
                    (
                        "XDG_CONFIG_HOME, HOME",
                        "Where your own config is looked for.",
                    ),
                    (
                        "NO_COLOR",
                        "When set, prefix grids are not coloured (--color auto).",
                    ),
                ],
            ),
            (
                "EXIT STATUS",
                &[
                    ("0", "Done."),
                    (
                        "1",
                        "The collector refused the request or could not be reached.",
                    ),
                    ("2", "The config or a file it names is wrong."),
                ],
            ),
            (
                "SEE ALSO",
                &[(
                    "sonde-collector(8), sonde-agent(8)",
                    "The collector's API and its agents.",
                )],
            ),
        ],
    }
}

fn certs_page() -> Page {
    Page {
        name: "sonde-certs",
        section: "1",
        cmd: sonde_certs::cli::Cli::command(),
        extra: &[
            (
                "FILES",
                &[
                    ("DIR/ca.pem, DIR/ca.key", "The CA (its key 0600)."),
                    (
                        "DIR/crl.pem, DIR/revoked.txt",
                        "The CRL and the list it is made from.",
                    ),
                    (
                        "DIR/NAME.pem, DIR/NAME.key, DIR/NAME.p12",
                        "An issued certificate, its key (0600) and a PKCS#12 bundle.",
                    ),
                ],
            ),
            (
                "SEE ALSO",
                &[(
                    "sonde-collector(8), sonde-agent(8), sondectl(1)",
                    "Who uses the files.",
                )],
            ),
        ],
    }
}

/// Text for roff: backslashes escaped, hyphens as `\-`, and a line never
/// starting with a control character.
fn roff(text: &str) -> String {
    let escaped = text.replace('\\', "\\e").replace('-', "\\-");
    if escaped.starts_with('.') || escaped.starts_with('\'') {
        format!("\\&{escaped}")
    } else {
        escaped
    }
}

/// The SUBCOMMANDS section: every subcommand (nested ones as `a b`) with
/// its description and options, on this page (`clap_mangen` would point at
/// a page per subcommand, `sonde-agent-run(8)`, which is not shipped).
fn subcommands(out: &mut String, cmd: &clap::Command, path: &str) {
    for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
        if sub.get_name() == "help" {
            continue;
        }
        let name = format!("{path}{}", sub.get_name());
        let args: Vec<_> = sub
            .get_arguments()
            .filter(|a| !a.is_hide_set() && !a.is_global_set() && a.get_id() != "help")
            .collect();
        let usage: String = args
            .iter()
            .map(|a| match (a.get_long(), a.get_value_names()) {
                (Some(l), Some(v)) => format!(" [--{l} {}]", v.join(" ")),
                (Some(l), None) => format!(" [--{l}]"),
                (None, _) => format!(" {}", a.get_id().as_str().to_uppercase()),
            })
            .collect();
        let _ = writeln!(out, ".TP\n\\fB{}\\fR{}", roff(&name), roff(&usage));
        if let Some(about) = sub.get_long_about().or_else(|| sub.get_about()) {
            out.push_str(&roff(&about.to_string().replace('\n', " ")));
            out.push('\n');
        }
        if !args.is_empty() {
            out.push_str(".RS\n");
            for a in args {
                let term = a
                    .get_long()
                    .map_or_else(|| a.get_id().as_str().to_uppercase(), |l| format!("--{l}"));
                let _ = writeln!(out, ".TP\n\\fB{}\\fR", roff(&term));
                if let Some(help) = a.get_long_help().or_else(|| a.get_help()) {
                    out.push_str(&roff(&help.to_string().replace('\n', " ")));
                    out.push('\n');
                }
            }
            out.push_str(".RE\n");
        }
        subcommands(out, sub, &format!("{name} "));
    }
}

/// One page as roff.
fn render(page: &Page) -> anyhow::Result<Vec<u8>> {
    let mut cmd = page.cmd.clone();
    cmd.build();
    let man = clap_mangen::Man::new(cmd.clone())
        .section(page.section)
        .manual("sonde");
    let mut out = Vec::new();
    man.render_title(&mut out)?;
    man.render_name_section(&mut out)?;
    man.render_synopsis_section(&mut out)?;
    man.render_description_section(&mut out)?;
    if cmd.get_arguments().any(|a| !a.is_hide_set()) {
        man.render_options_section(&mut out)?;
    }
    let mut text = String::new();
    if cmd.has_subcommands() {
        text.push_str(".SH SUBCOMMANDS\n");
        subcommands(&mut text, &cmd, "");
    }
    for (heading, items) in page.extra {
        let _ = writeln!(text, ".SH {heading}");
        for (term, body) in *items {
            let _ = writeln!(text, ".TP\n\\fB{}\\fR\n{}", roff(term), roff(body));
        }
    }
    out.extend_from_slice(text.as_bytes());
    man.render_version_section(&mut out)?;
    Ok(out)
}

/// Writes every page into `dir`; returns the file names.
fn write_all(dir: &Path) -> anyhow::Result<Vec<String>> {
    std::fs::create_dir_all(dir)?;
    let mut written = Vec::new();
    for page in pages() {
        let file = format!("{}.{}", page.name, page.section);
        std::fs::write(dir.join(&file), render(&page)?)?;
        written.push(file);
    }
    Ok(written)
}

fn main() -> anyhow::Result<()> {
    let dir = std::env::args_os()
        .nth(1)
        .ok_or_else(|| anyhow::anyhow!("usage: sonde-mangen DIR"))?;
    for file in write_all(Path::new(&dir))? {
        println!("{}", Path::new(&dir).join(file).display());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pages_name_every_subcommand_and_option() {
        let dir = tempfile::tempdir().unwrap();
        let files = write_all(dir.path()).unwrap();
        assert_eq!(
            files,
            [
                "sonde-agent.8",
                "sonde-collector.8",
                "sondectl.1",
                "sonde-certs.1"
            ]
        );
        let agent = std::fs::read_to_string(dir.path().join("sonde-agent.8")).unwrap();
        for needle in [
            "probe\\-once",
            "check\\-config",
            "\\-\\-config",
            ".TH sonde-agent 8",
        ] {
            assert!(agent.contains(needle), "{needle} missing:\n{agent}");
        }
        let certs = std::fs::read_to_string(dir.path().join("sonde-certs.1")).unwrap();
        assert!(certs.contains("revoke"), "{certs}");
        let ctl = std::fs::read_to_string(dir.path().join("sondectl.1")).unwrap();
        assert!(ctl.contains("SONDECTL_CONFIG"), "{ctl}");
        assert!(ctl.contains("silence add"), "{ctl}");
        // Every page: the sections clap does not write, and no reference to
        // a page that is not shipped (one per subcommand).
        let shipped = [
            "sonde-agent(8)",
            "sonde-collector(8)",
            "sondectl(1)",
            "sonde-certs(1)",
        ];
        let system = ["systemctl(1)", "journalctl(1)"];
        for file in &files {
            let page = std::fs::read_to_string(dir.path().join(file)).unwrap();
            for section in [".SH FILES", ".SH SEE ALSO"] {
                assert!(page.contains(section), "{file}: no {section}");
            }
            if file.ends_with(".8") {
                for section in [".SH SIGNALS", ".SH ENVIRONMENT", ".SH EXIT STATUS"] {
                    assert!(page.contains(section), "{file}: no {section}");
                }
                assert!(page.contains("reload"), "{file}: no reload subcommand");
            }
            let plain = page
                .replace("\\-", "-")
                .replace("\\fB", "")
                .replace("\\fR", "");
            for word in plain.split(|c: char| c.is_whitespace() || c == ',') {
                if let Some(open) = word.find('(')
                    && open > 0
                    && word.ends_with(')')
                    && word[open + 1..word.len() - 1]
                        .chars()
                        .all(|c| c.is_ascii_digit())
                    && !word[open + 1..word.len() - 1].is_empty()
                {
                    assert!(
                        shipped.contains(&word) || system.contains(&word),
                        "{file} refers to {word}, which is not shipped"
                    );
                }
            }
        }
    }
}
