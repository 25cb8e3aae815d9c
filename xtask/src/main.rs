//! `cargo xtask`: the project's automation, in Rust instead of shell scripts.
//!
//! * `setup` — install missing tools (see `setup.rs`);
//! * `build-pane` — Trunk release build of the pane into `dist/`, precompressed;
//! * `demo` — setup, build, then run the simulator and the server on loopback;
//! * `test` — every check and test CI runs (see `test.rs`);
//! * `bench` — print the performance budgets' numbers (see `bench.rs`).

mod bench;
mod demo;
mod pane;
mod postgres;
mod setup;
mod test;

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("setup") => setup::run(),
        Some("build-pane") => setup::run().and_then(|_| pane::build()),
        Some("demo") => demo::run(&args[1..]),
        Some("test") => test::run(&args[1..]),
        Some("bench") => bench::run(&args[1..]),
        _ => {
            eprintln!(
                "usage: cargo xtask <setup | build-pane | demo | test [--quick] | bench>\n\
                 \n  setup       install missing tools (rust targets, trunk, wasm-bindgen, npm, apt)\
                 \n  build-pane  build the Outlook pane into dist/\
                 \n  demo        start simulator + server on loopback and print the URLs\
                 \n  test        run every check and test (what CI runs)\
                 \n  bench       print the performance numbers"
            );
            std::process::exit(2);
        }
    };
    if let Err(e) = result {
        eprintln!("xtask: {e:#}");
        std::process::exit(1);
    }
}

/// The workspace root.
pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."))
}

/// Runs a command (with the tool PATH) in `dir` or the root; fails on non-zero exit.
pub fn cmd(program: &str, args: &[&str], dir: Option<&Path>) -> Result<()> {
    cmd_env(program, args, dir, &[])
}

/// [`cmd`] with extra environment variables.
pub fn cmd_env(
    program: &str,
    args: &[&str],
    dir: Option<&Path>,
    env: &[(&str, &str)],
) -> Result<()> {
    eprintln!("xtask: $ {program} {}", args.join(" "));
    let status = Command::new(program)
        .args(args)
        .current_dir(dir.map_or_else(root, Path::to_path_buf))
        .env("PATH", setup::tool_path())
        .envs(env.iter().copied())
        .status()
        .with_context(|| format!("cannot run {program}"))?;
    if !status.success() {
        bail!("`{program} {}` failed with {status}", args.join(" "));
    }
    Ok(())
}

/// Runs a command and returns its standard output.
pub fn cmd_output(program: &str, args: &[&str]) -> Result<String> {
    let out = Command::new(program)
        .args(args)
        .env("PATH", setup::tool_path())
        .output()
        .with_context(|| format!("cannot run {program}"))?;
    if !out.status.success() {
        bail!(
            "`{program} {}` failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}
