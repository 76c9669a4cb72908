//! `sonde-certs`: the dev PKI command line (`init`, `issue`, `revoke`).

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use sonde_certs::{DEFAULT_LEAF_DAYS, Pki};
use sonde_proto::{Identity, Role};

/// Development PKI for sonde: a CA, its CRL, the collector's server
/// certificate and client certificates with `sonde://TENANT/ROLE/NAME` SANs.
#[derive(Parser)]
#[command(name = "sonde-certs", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Create a CA, an empty CRL and a collector certificate in DIR.
    Init {
        dir: PathBuf,
        /// Extra DNS name or IP address for the collector certificate
        /// (`localhost`, `127.0.0.1` and `::1` are always included). Repeatable.
        #[arg(long = "san")]
        sans: Vec<String>,
    },
    /// Issue a client certificate DIR/NAME.pem with key DIR/NAME.key (0600).
    Issue {
        dir: PathBuf,
        #[arg(long)]
        tenant: String,
        #[arg(long, value_parser = parse_role)]
        role: Role,
        #[arg(long)]
        name: String,
        /// File name stem (default: NAME).
        #[arg(long)]
        out: Option<String>,
        /// Validity in days.
        #[arg(long, default_value_t = DEFAULT_LEAF_DAYS)]
        days: i64,
    },
    /// Revoke DIR/NAME.pem and rewrite DIR/crl.pem.
    Revoke { dir: PathBuf, name: String },
}

fn parse_role(s: &str) -> Result<Role, String> {
    s.parse()
        .map_err(|e: sonde_proto::IdentityError| e.to_string())
}

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
            let (cert, key) = Pki::open(&dir)?.issue(&identity, out.as_deref(), days)?;
            println!(
                "issued {identity}: {} (key {})",
                cert.display(),
                key.display()
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
