//! The `sonde-certs` command line, in the library so the man page is
//! generated from the same definition (`sonde-mangen`).

use std::path::PathBuf;

use clap::{Parser, Subcommand};
use sonde_proto::Role;

use crate::DEFAULT_LEAF_DAYS;

/// Development PKI for sonde: a CA, its CRL, the collector's server
/// certificate and client certificates with `sonde://TENANT/ROLE/NAME` SANs.
#[derive(Parser)]
#[command(name = "sonde-certs", version)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand)]
pub enum Command {
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
