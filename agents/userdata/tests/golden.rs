//! Golden files: every `tests/data/*.toml` document and every `tests/data/cmdline/*.cmdline`
//! kernel command line, with the expected outcome beside it in `.expected`: `ok` and the
//! configuration's summary (tokens redacted), `none` (no user-data), or `error: ` and the
//! exact message. `UPDATE_GOLDEN=1 cargo test -p tessera-userdata --test golden` rewrites the
//! expected files; review the diff before keeping it.

use std::path::{Path, PathBuf};
use tessera_common::cmdline::KernelArgs;
use tessera_userdata::{cmdline, schema, Config, ConfigError};

fn render(result: Result<Option<Config>, ConfigError>) -> String {
    match result {
        Ok(Some(c)) => format!("ok\n{}", c.summary()),
        Ok(None) => "none\n".to_string(),
        Err(e) => format!("error: {e}\n"),
    }
}

fn files(dir: &Path, ext: &str) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == ext))
        .collect();
    v.sort();
    v
}

fn check(inputs: Vec<PathBuf>, run: impl Fn(&[u8]) -> String) {
    assert!(!inputs.is_empty());
    let update = std::env::var_os("UPDATE_GOLDEN").is_some();
    let mut failures = Vec::new();
    for input in inputs {
        let got = run(&std::fs::read(&input).unwrap());
        let expected_path = input.with_extension("expected");
        if update {
            std::fs::write(&expected_path, &got).unwrap();
            continue;
        }
        let expected = std::fs::read_to_string(&expected_path).unwrap_or_else(|_| {
            panic!(
                "{} has no {}; run with UPDATE_GOLDEN=1 and review it",
                input.display(),
                expected_path.display()
            )
        });
        let name = input.file_name().unwrap().to_string_lossy().into_owned();
        // The file name says which outcome it is about.
        if name.starts_with("err-") {
            assert!(got.starts_with("error: "), "{name} should fail: {got}");
        } else if name.starts_with("ok-") {
            assert!(got.starts_with("ok\n"), "{name} should pass: {got}");
        }
        if got != expected {
            failures.push(format!(
                "{}:\n--- expected\n{expected}--- got\n{got}",
                input.display()
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

fn data() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data")
}

#[test]
fn documents() {
    check(files(&data(), "toml"), |bytes| {
        render(schema::parse(bytes).map(Some))
    });
}

#[test]
fn kernel_command_lines() {
    check(files(&data().join("cmdline"), "cmdline"), |bytes| {
        let args = KernelArgs::parse(&String::from_utf8_lossy(bytes));
        render(cmdline::config_from_args(&args))
    });
}

#[test]
fn every_document_that_passes_is_written_and_read_back_identically() {
    for input in files(&data(), "toml") {
        if let Ok(config) = schema::parse(&std::fs::read(&input).unwrap()) {
            let again = schema::parse(config.to_toml().as_bytes()).unwrap_or_else(|e| {
                panic!("{}: written form does not parse: {e}", input.display())
            });
            assert_eq!(again, config, "{}", input.display());
        }
    }
}

#[test]
fn the_full_example_in_schema_md_is_the_golden_one() {
    let doc =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("SCHEMA.md")).unwrap();
    let golden = std::fs::read_to_string(data().join("ok-full.toml")).unwrap();
    let body: String = golden.lines().skip(1).map(|l| format!("{l}\n")).collect();
    assert!(
        doc.contains(body.trim()),
        "SCHEMA.md's full example differs from tests/data/ok-full.toml"
    );
}
