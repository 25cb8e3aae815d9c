//! `cargo xtask`: the project's automation, in Rust instead of shell scripts.
//!
//! * `setup` — install missing tools (see `setup.rs`);
//! * `build-pane` — Trunk release build of the pane into `dist/`, precompressed;
//! * `demo` — setup, build, then run the simulator and the server on loopback;
//! * `tidy` — the repository's own rules: the code map is true, no test skips
//!   silently, nothing reads the sibling `shared` folder (see `tidy.rs`);
//! * `test` — every check and test CI runs (see `test.rs`);
//! * `bench` — print the performance budgets' numbers (see `bench.rs`).
//!
//! Arguments are parsed by clap: an unknown subcommand or flag is an error
//! (exit status 2), never silently ignored.

mod bench;
mod demo;
mod pane;
mod postgres;
mod setup;
mod test;
mod tidy;

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};

/// Project automation for vmr-scheduler.
#[derive(Debug, Parser)]
#[command(name = "cargo xtask", bin_name = "cargo xtask")]
struct Cli {
    #[command(subcommand)]
    task: Task,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
enum Task {
    /// Install missing tools (rust targets, trunk, wasm-bindgen, npm, apt).
    Setup,
    /// Build the Outlook pane into dist/ (runs setup first).
    BuildPane,
    /// Start simulator + server on loopback and print the URLs.
    Demo,
    /// Check the repository's own rules (code map, honest tests, nothing read from the sibling shared folder).
    Tidy,
    /// Run every check and test (what CI runs).
    Test(test::TestArgs),
    /// Print the performance numbers.
    Bench(bench::BenchArgs),
}

fn main() {
    let cli = Cli::parse();
    let result = match cli.task {
        Task::Setup => setup::run(),
        Task::BuildPane => setup::run().and_then(|_| pane::build()),
        Task::Demo => demo::run(),
        Task::Tidy => tidy::run(),
        Task::Test(args) => test::run(&args),
        Task::Bench(args) => bench::run(&args),
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

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::{Cli, Task};

    #[test]
    fn unknown_flags_and_subcommands_are_errors() {
        for args in [
            &["cargo xtask", "test", "--quik"][..],
            &["cargo xtask", "bench", "--uniq", "5"],
            &["cargo xtask", "demo", "--port", "1"],
            &["cargo xtask", "tidy", "extra"],
            &["cargo xtask", "tset"],
            &["cargo xtask"],
        ] {
            assert!(
                Cli::try_parse_from(args).is_err(),
                "{args:?} was accepted; clap must reject it"
            );
        }
    }

    #[test]
    fn declared_flags_parse() {
        let cli = Cli::try_parse_from(["cargo xtask", "test", "--quick"]).expect("test --quick");
        assert!(matches!(cli.task, Task::Test(ref a) if a.quick));
        let cli = Cli::try_parse_from(["cargo xtask", "bench", "--unique", "1_000"])
            .expect("bench --unique 1_000");
        assert!(matches!(cli.task, Task::Bench(ref a) if a.unique == 1_000));
    }
}
