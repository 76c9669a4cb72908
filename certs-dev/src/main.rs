//! `sonde-certs`: the dev PKI command line (`init`, `issue`, `revoke`).

use std::process::ExitCode;

use clap::Parser;
use sonde_certs::Pki;
use sonde_certs::cli::{Cli, Command};
use sonde_proto::Identity;

fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Init { dir, sans } => {
            Pki::init(&dir, &sans)?;
            println!(
                "created CA {0}/ca.pem, CRL {0}/crl.pem, collector certificate {0}/collector.pem",
                dir.display()
            );
        }
        Command::Issue {
            dir,
            tenant,
            role,
            name,
            out,
            days,
        } => {
            let identity = Identity::new(tenant, role, name)?;
            let w = Pki::open(&dir)?.issue(&identity, out.as_deref(), days)?;
            println!(
                "issued {identity}: {} (key {})",
                w.cert.display(),
                w.key.display()
            );
            // The one time the password is shown: it is stored nowhere.
            println!(
                "browser bundle {} (PKCS#12), one-time password: {}",
                w.p12.display(),
                w.password
            );
        }
        Command::Revoke { dir, name } => {
            let serial = Pki::open(&dir)?.revoke(&name)?;
            println!(
                "revoked {name} (serial {}); {}/crl.pem updated",
                sonde_certs::hex(&serial),
                dir.display()
            );
        }
    }
    Ok(())
}

fn main() -> ExitCode {
    match run(Cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("sonde-certs: {e:#}");
            ExitCode::FAILURE
        }
    }
}
