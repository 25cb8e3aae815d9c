//! `vmr-scheduler` command line: `serve` (the default), `manifest`, `check-config`, `check`,
//! `recover`.
//!
//! Configuration comes from `--config <file>` (TOML) plus `VMR__…` environment
//! overrides; see `config.rs`. An invalid config prints the key and the
//! problem and exits with status 2.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use vmr_core::config::{Config, Role};
use vmr_server::app::{serve, App};

#[derive(Parser)]
#[command(
    name = "vmr-scheduler",
    version,
    about = "Single-use video meeting rooms for Outlook"
)]
struct Cli {
    /// TOML configuration file (all keys have defaults).
    #[arg(long, short, global = true, env = "VMR_CONFIG")]
    config: Option<PathBuf>,
    /// Overrides `role` from the config file.
    #[arg(long, global = true, value_enum)]
    role: Option<Role>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Run the server (the default).
    Serve,
    /// Print the add-in manifest of an integration.
    Manifest {
        /// Integration id (default: the first).
        #[arg(long)]
        integration: Option<String>,
    },
    /// Load and validate the configuration, then exit.
    CheckConfig,
    /// Check every Exchange resource mailbox: EWS reachable, credentials, impersonation, and
    /// the calendar-processing settings its contents betray; prints the commands that fix
    /// what is wrong. Exit status 0: all fine; 1: something must be fixed; 2: config error.
    Check {
        /// A sample organizer (SMTP address) to impersonate and compare copies with.
        #[arg(long)]
        organizer: Option<String>,
    },
    /// Rebuild meetings and VMRs from the resource calendars after a database restore; where
    /// an alias was lost, issue a new one and send new instructions as the organizer. Exit
    /// status 0: done; 1: some meetings failed; 2: config error. Stop the server first.
    Recover {
        /// Read and report only; write and send nothing.
        #[arg(long)]
        dry_run: bool,
        /// Only this integration.
        #[arg(long)]
        integration: Option<String>,
    },
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "info,sqlx=warn".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let mut config = match Config::load(cli.config.as_deref(), std::env::vars()) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("vmr-scheduler: invalid configuration: {e}");
            return ExitCode::from(2);
        }
    };
    if let Some(role) = cli.role {
        config.role = role;
        if let Err(e) = config.validate() {
            eprintln!("vmr-scheduler: invalid configuration: {e}");
            return ExitCode::from(2);
        }
    }
    match cli.command.unwrap_or(Command::Serve) {
        Command::CheckConfig => {
            // Local Office.js needs files on disk; serving checks them too.
            if let Err(e) = config.server.check_office_js_files() {
                eprintln!("vmr-scheduler: invalid configuration: {e}");
                return ExitCode::from(2);
            }
            println!("configuration is valid");
            ExitCode::SUCCESS
        }
        Command::Manifest { integration } => {
            let found = match &integration {
                Some(id) => config.integration(id),
                None => config.integrations.first(),
            };
            let Some(found) = found else {
                eprintln!(
                    "vmr-scheduler: no integration {:?}",
                    integration.unwrap_or_default()
                );
                return ExitCode::from(2);
            };
            match vmr_server::manifest::render(&config.server, found) {
                Ok(xml) => {
                    print!("{xml}");
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("vmr-scheduler: cannot render the manifest: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Check { organizer } => run_check(config, organizer),
        Command::Recover {
            dry_run,
            integration,
        } => run_recover(
            config,
            vmr_server::recover::RecoverOptions {
                dry_run,
                integration,
            },
        ),
        Command::Serve => run_server(config),
    }
}

/// The multi-threaded runtime every command runs on (failure: printed, exit status 1).
fn runtime() -> Result<tokio::runtime::Runtime, ExitCode> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| {
            eprintln!("vmr-scheduler: cannot start the async runtime: {e}");
            ExitCode::FAILURE
        })
}

fn run_check(config: Config, organizer: Option<String>) -> ExitCode {
    let runtime = match runtime() {
        Ok(r) => r,
        Err(code) => return code,
    };
    let options = vmr_server::check::CheckOptions { organizer };
    let report = runtime.block_on(vmr_server::check::run(
        &config,
        &options,
        vmr_core::clock::system(),
    ));
    print!("{}", report.text);
    if report.integrations == 0 {
        ExitCode::from(2)
    } else if report.must_fix {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}

fn run_recover(config: Config, options: vmr_server::recover::RecoverOptions) -> ExitCode {
    let runtime = match runtime() {
        Ok(r) => r,
        Err(code) => return code,
    };
    runtime.block_on(async move {
        let state = match App::build(config).await {
            Ok(App::Management(state)) => state,
            Ok(App::Edge(_)) => {
                eprintln!("vmr-scheduler: recover runs with the management or all role");
                return ExitCode::from(2);
            }
            Err(e) => {
                eprintln!("vmr-scheduler: cannot start: {e:#}");
                return ExitCode::from(2);
            }
        };
        match vmr_server::recover::run(&state, &options).await {
            Ok(summary) => {
                print!("{}", summary.text(options.dry_run));
                if summary.failed > 0 {
                    ExitCode::FAILURE
                } else {
                    ExitCode::SUCCESS
                }
            }
            Err(e) => {
                eprintln!("vmr-scheduler: recover stopped: {e:#}");
                ExitCode::FAILURE
            }
        }
    })
}

fn run_server(config: Config) -> ExitCode {
    let runtime = match runtime() {
        Ok(r) => r,
        Err(code) => return code,
    };
    runtime.block_on(async move {
        let app = match App::build(config).await {
            Ok(app) => app,
            Err(e) => {
                eprintln!("vmr-scheduler: cannot start: {e:#}");
                return ExitCode::from(2);
            }
        };
        let scheme = if app.shared().config.server.plain_http {
            "http"
        } else {
            "https"
        };
        let shutdown = async {
            let _ = tokio::signal::ctrl_c().await;
        };
        match serve(app, shutdown).await {
            Ok((addr, fut)) => {
                // Machine-readable line: test harnesses wait for it.
                println!("listening on {scheme}://{addr}");
                match fut.await {
                    Ok(()) => ExitCode::SUCCESS,
                    Err(e) => {
                        eprintln!("vmr-scheduler: {e:#}");
                        ExitCode::FAILURE
                    }
                }
            }
            Err(e) => {
                eprintln!("vmr-scheduler: cannot start: {e:#}");
                ExitCode::from(2)
            }
        }
    })
}
