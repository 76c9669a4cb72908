//! `sonde-mangen DIR`: writes `sonde-agent.8`, `sonde-collector.8`,
//! `sondectl.1` and `sonde-certs.1` into DIR, generated (with `clap_mangen`) from the same
//! command-line definitions the programs parse, so a man page cannot drift
//! from the program. The package build (`packaging/build.sh`) runs it.

use std::path::Path;

use clap::CommandFactory;

/// The man pages: (program, section, command definition).
fn pages() -> Vec<(&'static str, &'static str, clap::Command)> {
    vec![
        ("sonde-agent", "8", sonde_agent::cli::Cli::command()),
        ("sonde-collector", "8", sonde_collector::cli::Cli::command()),
        ("sondectl", "1", sondectl::cli::Cli::command()),
        ("sonde-certs", "1", sonde_certs::cli::Cli::command()),
    ]
}

/// Writes every page into `dir`; returns the file names.
fn write_all(dir: &Path) -> anyhow::Result<Vec<String>> {
    std::fs::create_dir_all(dir)?;
    let mut written = Vec::new();
    for (name, section, cmd) in pages() {
        let file = format!("{name}.{section}");
        let mut out = Vec::new();
        clap_mangen::Man::new(cmd)
            .section(section)
            .manual("sonde")
            .render(&mut out)?;
        std::fs::write(dir.join(&file), out)?;
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
    }
}
