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

use anyhow::Result;

use crate::{cmd, cmd_env, pane, postgres, root, setup};

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
    cmd_env(
        "cargo",
        &["test", "--workspace", "--", "--test-threads=2"],
        None,
        &[("VMR_TEST_POSTGRES_URL", pg.url.as_str())],
    )?;
    drop(pg);
    let webdriver = root().join("addin/webdriver.json");
    cmd_env(
        "cargo",
        &[
            "test",
            "-p",
            "vmr-addin",
            "--target",
            "wasm32-unknown-unknown",
        ],
        None,
        &[
            ("CHROMEDRIVER", "/usr/bin/chromedriver"),
            (
                "WASM_BINDGEN_TEST_WEBDRIVER_JSON",
                &webdriver.display().to_string(),
            ),
        ],
    )?;
    eprintln!("xtask test: all checks passed");
    Ok(())
}
