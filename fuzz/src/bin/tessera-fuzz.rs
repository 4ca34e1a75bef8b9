//! The libFuzzer binary for every target: `TESSERA_FUZZ_TARGET=<name>` picks one (see
//! `tessera_fuzz::TARGETS`); the arguments are libFuzzer's (corpus directories, -runs=…).
#![no_main]

use std::sync::OnceLock;

static TARGET: OnceLock<&'static tessera_fuzz::Target> = OnceLock::new();

fn chosen() -> &'static tessera_fuzz::Target {
    TARGET.get_or_init(|| {
        let name = std::env::var("TESSERA_FUZZ_TARGET").unwrap_or_default();
        tessera_fuzz::target(&name).unwrap_or_else(|| {
            let names: Vec<&str> = tessera_fuzz::TARGETS.iter().map(|t| t.name).collect();
            eprintln!(
                "set TESSERA_FUZZ_TARGET to one of: {} (got {name:?})",
                names.join(", ")
            );
            std::process::exit(2)
        })
    })
}

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    (chosen().run)(data);
});
