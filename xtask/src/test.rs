//! `cargo xtask test`: everything CI checks, in order, failing fast.
//!
//! 1. `tidy` (the repository's own rules, see `tidy.rs`);
//! 2. `setup` (install what is missing) and `build-pane` (the e2e tests and
//!    the `dist/` API tests use the real Trunk build);
//! 3. `cargo fmt --check`, clippy with `-D warnings` (native and wasm32);
//! 4. the binaries the e2e tests start (`cargo build --bins`);
//! 5. a throwaway PostgreSQL on loopback for the storage tests;
//! 6. `cargo test --workspace -- --include-ignored`: unit, integration,
//!    token, manifest and EWS schema (xmllint), storage (SQLite and
//!    PostgreSQL) and end-to-end browser tests. Tests that need something a
//!    plain `cargo test` may lack (PostgreSQL, `dist/`, Office.js) are
//!    `#[ignore = "needs …"]`; everything they need exists by now, so they run;
//! 7. the pane's Office.js bridge tests in headless Chromium
//!    (wasm-bindgen-test).
//!
//! The closing line sums every `test result:` line: `tests: N passed, N
//! failed`. An ignored test is never counted as passed: if any are reported,
//! a line before it says how many.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

use anyhow::{bail, Context, Result};

use crate::{cmd, pane, postgres, root, setup, tidy};

/// Flags of `cargo xtask test`.
#[derive(Debug, clap::Args)]
pub struct TestArgs {
    /// Skip `cargo fmt --check` and clippy.
    #[arg(long)]
    pub quick: bool,
}

/// Runs every check.
pub fn run(args: &TestArgs) -> Result<()> {
    // A full run rebuilds little twice, and incremental caches of some 60 test and binary
    // targets cost gigabytes of disk: off unless the caller asks for it.
    if std::env::var_os("CARGO_INCREMENTAL").is_none() {
        std::env::set_var("CARGO_INCREMENTAL", "0");
    }
    report_free_disk();
    tidy::run()?;
    setup::run()?;
    pane::build()?;
    if !args.quick {
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
        &[
            "test",
            "--workspace",
            "--",
            "--include-ignored",
            "--test-threads=2",
        ],
        &[("VMR_TEST_POSTGRES_URL", pg.url.as_str())],
        &mut totals,
    )?;
    drop(pg);
    report_free_disk();
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
    if totals.ignored > 0 {
        println!(
            "xtask: {} tests were ignored (not run, not counted as passed)",
            totals.ignored
        );
    }
    // The closing line CI reads.
    println!("tests: {} passed, {} failed", totals.passed, totals.failed);
    if totals.passed == 0 {
        bail!("no test ran");
    }
    Ok(())
}

/// Prints the space left where the build goes, so a CI log that ends in "No space left on
/// device" says how much there was. Informational: a failure to ask is printed, not fatal.
fn report_free_disk() {
    let target = root().join("target");
    let at = if target.exists() { target } else { root() };
    match Command::new("df").args(["-Pk"]).arg(&at).output() {
        Ok(out) if out.status.success() => {
            let text = String::from_utf8_lossy(&out.stdout);
            // POSIX format: the second line's fourth field is the available 1 KiB blocks.
            let available = text
                .lines()
                .nth(1)
                .and_then(|l| l.split_whitespace().nth(3))
                .and_then(|k| k.parse::<u64>().ok());
            match available {
                Some(kib) => eprintln!(
                    "xtask: {:.1} GiB free at {}",
                    kib as f64 / (1024.0 * 1024.0),
                    at.display()
                ),
                None => eprintln!("xtask: cannot read `df -Pk` output: {text}"),
            }
        }
        Ok(out) => eprintln!(
            "xtask: `df -Pk` failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ),
        Err(e) => eprintln!("xtask: cannot run df: {e}"),
    }
}

/// Passed, failed and ignored tests summed over every `test result:` line.
#[derive(Default)]
struct Totals {
    passed: u64,
    failed: u64,
    ignored: u64,
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
            totals.ignored += count(rest, "ignored");
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

#[cfg(test)]
mod tests {
    use super::count;

    #[test]
    fn counts_come_from_the_result_line() {
        let line =
            "ok. 8 passed; 1 failed; 3 ignored; 0 measured; 2 filtered out; finished in 0.01s";
        assert_eq!(count(line, "passed"), 8);
        assert_eq!(count(line, "failed"), 1);
        assert_eq!(count(line, "ignored"), 3);
        assert_eq!(count("FAILED. 0 passed; 4 failed; 0 ignored", "failed"), 4);
    }
}
