//! The configuration parsers: any text as `sonde-agent`'s and
//! `sonde-collector`'s configuration file. Either loads or fails with a
//! message naming the file; never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let dir = sonde_fuzz::workdir();
    let path = dir.scratch.join("fuzz.toml");
    std::fs::write(&path, text).expect("write config");
    let shown = path.display().to_string();
    if let Err(e) = sonde_agent::config::Loaded::load(&path) {
        let message = e.to_string();
        assert!(
            message.contains(&shown),
            "agent config error names no file: {message}"
        );
    }
    if let Err(e) = sonde_collector::Config::load(&path) {
        let message = e.to_string();
        assert!(
            message.contains(&shown),
            "collector config error names no file: {message}"
        );
    }
});
