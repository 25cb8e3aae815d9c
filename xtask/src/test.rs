//! `cargo xtask test`: everything CI checks, in order, failing fast.
//!
//! 1. `setup` (install what is missing) and `build-pane` (the e2e tests use
//!    the real Trunk build);
//! 2. `cargo fmt --check`, clippy with `-D warnings` (native and wasm32);
//! 3. the binaries the e2e tests start (`cargo build --bins`);
//! 4. a throwaway PostgreSQL on loopback for the storage tests;
//! 5. `cargo test --workspace`: unit, integration, token, manifest (xmllint),
//!    storage (SQLite and PostgreSQL) and end-to-end browser tests;
//! 6. the pane's Office.js bridge tests in headless Chromium
//!    (wasm-bindgen-test).
//!
//! `--quick` skips formatting and clippy.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

use anyhow::{bail, Context, Result};

use crate::{cmd, pane, postgres, root, setup};

/// Runs every check.
pub fn run(args: &[String]) -> Result<()> {
    let quick = args.iter().any(|a| a == "--quick");
    setup::run()?;
    pane::build()?;
    if !quick {
        cmd("cargo", &["fmt", "--all", "--", "--check"], None)?;
        cmd(
            "cargo",
            &[
                "clippy",
                "--workspace",
                "--all-targets",
                "--",
                "-D",
                "warnings",
            ],
            None,
        )?;
        cmd(
            "cargo",
            &[
                "clippy",
                "-p",
                "vmr-addin",
                "--all-targets",
                "--target",
                "wasm32-unknown-unknown",
                "--",
                "-D",
                "warnings",
            ],
            None,
        )?;
    }
    cmd("cargo", &["build", "--workspace", "--bins"], None)?;
    let pg = postgres::start()?;
    let mut totals = Totals::default();
    cargo_test(
        &["test", "--workspace", "--", "--test-threads=2"],
        &[("VMR_TEST_POSTGRES_URL", pg.url.as_str())],
        &mut totals,
    )?;
    drop(pg);
    let webdriver = root().join("addin/webdriver.json");
    cargo_test(
        &[
            "test",
            "-p",
            "vmr-addin",
            "--target",
            "wasm32-unknown-unknown",
            "--test",
            "bridge",
        ],
        &[
            ("CHROMEDRIVER", "/usr/bin/chromedriver"),
            (
                "WASM_BINDGEN_TEST_WEBDRIVER_JSON",
                &webdriver.display().to_string(),
            ),
        ],
        &mut totals,
    )?;
    // The closing line CI reads.
    println!("tests: {} passed, {} failed", totals.passed, totals.failed);
    if totals.passed == 0 {
        bail!("no test ran");
    }
    Ok(())
}

/// Passed and failed tests summed over every `test result:` line.
#[derive(Default)]
struct Totals {
    passed: u64,
    failed: u64,
}

/// Runs `cargo <args>`, echoing its output and adding its results to `totals`.
fn cargo_test(args: &[&str], env: &[(&str, &str)], totals: &mut Totals) -> Result<()> {
    eprintln!("xtask: $ cargo {}", args.join(" "));
    let mut child = Command::new("cargo")
        .args(args)
        .current_dir(root())
        .env("PATH", setup::tool_path())
        .envs(env.iter().copied())
        .stdout(Stdio::piped())
        .spawn()
        .context("cannot run cargo")?;
    let stdout = child.stdout.take().context("no stdout")?;
    for line in BufReader::new(stdout).lines().map_while(Result::ok) {
        println!("{line}");
        if let Some(rest) = line.strip_prefix("test result: ") {
            totals.passed += count(rest, "passed");
            totals.failed += count(rest, "failed");
        }
    }
    let status = child.wait()?;
    if !status.success() {
        bail!("`cargo {}` failed with {status}", args.join(" "));
    }
    Ok(())
}

/// The number before `word` in a `test result:` line
/// (`ok. 8 passed; 0 failed; 0 ignored; …`).
fn count(line: &str, word: &str) -> u64 {
    line.split(';')
        .find_map(|part| part.trim().strip_suffix(word))
        .and_then(|n| n.trim().rsplit(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}
