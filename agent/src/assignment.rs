//! The collector's probe assignment, kept in the state directory so an
//! agent restarted while the collector is unreachable goes on probing what
//! it was assigned. The file (`assigned-probes.pb`) holds one encoded
//! `sonde.v1.ProbeSet`, replaced atomically (write, fsync, rename).

use std::io::Write as _;
use std::path::{Path, PathBuf};

use prost::Message as _;
use sonde_proto::v1::ProbeSet;
use sonde_runtime::probes::Probes;

/// File name under the state directory.
pub const FILE: &str = "assigned-probes.pb";

/// Where the assignment of an agent with `state_dir` lives.
pub fn path(state_dir: &Path) -> PathBuf {
    state_dir.join(FILE)
}

/// The stored assignment; none (with a warning when unreadable) if there is
/// no usable file.
pub fn load(path: &Path) -> Probes {
    let bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Probes::default(),
        Err(e) => {
            tracing::warn!(path = %path.display(), error = %e, "stored probe assignment unreadable; starting without it");
            return Probes::default();
        }
    };
    match ProbeSet::decode(bytes.as_slice())
        .map_err(|e| e.to_string())
        .and_then(|set| Probes::try_from(&set).map_err(|e| e.to_string()))
    {
        Ok(p) => p,
        Err(e) => {
            tracing::warn!(path = %path.display(), error = %e, "stored probe assignment invalid; starting without it");
            Probes::default()
        }
    }
}

/// Replaces the stored assignment.
pub fn store(path: &Path, probes: &Probes) -> std::io::Result<()> {
    let tmp = path.with_extension("pb.tmp");
    let mut f = std::fs::File::create(&tmp)?;
    f.write_all(&ProbeSet::from(probes).encode_to_vec())?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)?;
    if let Some(dir) = path.parent() {
        std::fs::File::open(dir)?.sync_all()?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_tolerates_damage() {
        let dir = tempfile::tempdir().unwrap();
        let p = path(dir.path());
        assert!(load(&p).is_empty());
        let probes: Probes =
            toml::from_str("[[ping]]\ntargets = [\"127.0.0.1\"]\ninterval = \"2s\"").unwrap();
        store(&p, &probes).unwrap();
        let back = load(&p);
        assert_eq!(back.ping[0].targets, probes.ping[0].targets);
        assert_eq!(back.ping[0].interval, probes.ping[0].interval);
        std::fs::write(&p, b"\xff\xff\xff").unwrap();
        assert!(load(&p).is_empty());
    }
}
