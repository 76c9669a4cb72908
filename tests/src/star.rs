//! The namespace layout of the correlation and alerting tests: the
//! collector in a `core` namespace, agents in their own namespaces each
//! linked to `core` (`10.80.N.2` ↔ `10.80.N.1`), everything started
//! inside its namespace, and `sondectl` run inside `core`.

use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::Duration;

use sonde_proto::Role;

use crate::netns::Lab;
use crate::{Cert, Proc, World, bin, ctl_config};

/// The collector's port inside `core`.
pub const PORT: u16 = 7443;

/// Runs `program --config CONFIG --log stderr` inside `ns`.
pub fn spawn_in(ns: &str, program: &str, config: &Path, log: PathBuf) -> Proc {
    let bin = bin(program);
    Proc::spawn(
        Path::new("ip"),
        &[
            "netns",
            "exec",
            ns,
            bin.to_str().unwrap(),
            "--config",
            config.to_str().unwrap(),
            "--log",
            "stderr",
        ],
        &[],
        log,
    )
}

/// Writes the collector's config for `core` (listening on every address
/// of the namespace, health on its loopback) with `tables` appended.
pub fn collector_config(world: &World, tables: &str) -> PathBuf {
    let path = world.collector_config(tables);
    let text = std::fs::read_to_string(&path).unwrap().replace(
        &format!("listen = \"127.0.0.1:{}\"", world.port),
        &format!("listen = \"0.0.0.0:{PORT}\""),
    );
    std::fs::write(&path, text).unwrap();
    path
}

/// Creates agent namespace `aN` linked to `core`, writes its config
/// (`tables` appended) reaching the collector through `core`, and starts
/// the agent there; returns the namespace and the agent.
pub fn agent(world: &World, lab: &mut Lab, core: &str, n: u8, tables: &str) -> (String, Proc) {
    agent_of(world, lab, core, n, "acme", tables)
}

/// [`agent`] with a certificate of `tenant`.
pub fn agent_of(
    world: &World,
    lab: &mut Lab,
    core: &str,
    n: u8,
    tenant: &str,
    tables: &str,
) -> (String, Proc) {
    let name = format!("a{n}");
    let ns = lab.host(&name);
    lab.link(
        &ns,
        &format!("10.80.{n}.2/24"),
        core,
        &format!("10.80.{n}.1/24"),
    );
    lab.ip(
        &ns,
        &["route", "add", "default", "via", &format!("10.80.{n}.1")],
    );
    let cert = world.cert(tenant, Role::Agent, &name);
    let path = world.agent_config(&name, &cert, tables);
    // Reach the collector through `core`, still checking its name.
    let text = std::fs::read_to_string(&path).unwrap().replace(
        &format!("collector = \"localhost:{}\"", world.port),
        &format!("collector = \"10.80.{n}.1:{PORT}\"\nserver-name = \"localhost\""),
    );
    std::fs::write(&path, text).unwrap();
    let proc = spawn_in(
        &ns,
        "sonde-agent",
        &path,
        world.dir().join(format!("{name}.log")),
    );
    (ns, proc)
}

/// `sondectl --json ARGS` with `cert` of `tenant`, run inside `core`.
pub fn ctl(
    world: &World,
    lab: &Lab,
    core: &str,
    tenant: &str,
    cert: &Cert,
    args: &[&str],
) -> Output {
    let config = ctl_config(world, tenant, cert);
    let text = std::fs::read_to_string(&config).unwrap().replace(
        &format!("localhost:{}", world.port),
        &format!("localhost:{PORT}"),
    );
    std::fs::write(&config, text).unwrap();
    let mut all = vec!["--config", config.to_str().unwrap(), "--json"];
    all.extend_from_slice(args);
    lab.exec(core, &bin("sondectl"), &all, Duration::from_secs(10))
}

/// [`ctl`]'s answer as JSON, `None` when it failed.
pub fn ctl_json(
    world: &World,
    lab: &Lab,
    core: &str,
    tenant: &str,
    cert: &Cert,
    args: &[&str],
) -> Option<serde_json::Value> {
    let out = ctl(world, lab, core, tenant, cert, args);
    out.status
        .success()
        .then(|| serde_json::from_slice(&out.stdout).ok())
        .flatten()
}
