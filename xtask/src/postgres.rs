//! A throwaway PostgreSQL server for the test run.
//!
//! [`start`] initialises a fresh cluster under `/tmp`, starts it on a free
//! loopback port with trust authentication (tests only: it listens on
//! 127.0.0.1 alone and has no Unix socket), waits until it accepts
//! connections and creates the database `vmr_test`. The server never runs as
//! root: when xtask itself is root (CI containers), `initdb` and `pg_ctl` run
//! as the `postgres` system user through `runuser` (or `setpriv`). Dropping
//! the returned [`TestPostgres`] stops the server and removes its data.
//!
//! The binaries come from Debian's `postgresql` package
//! (`/usr/lib/postgresql/<version>/bin`), which `cargo xtask setup` installs.

use std::fs;
use std::io::Write;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context, Result};

/// Where Debian installs the server binaries, one directory per major version.
const PG_LIB: &str = "/usr/lib/postgresql";
/// The system user the server runs as when xtask is root.
const PG_USER: &str = "postgres";
/// The database created for the tests.
const DATABASE: &str = "vmr_test";
/// How long to wait for the server to accept connections.
const READY_TIMEOUT: Duration = Duration::from_secs(30);
/// Start attempts (another process may grab the chosen port first).
const START_ATTEMPTS: u32 = 3;

/// A running throwaway server; dropping it stops the server and deletes its data.
#[derive(Debug)]
pub struct TestPostgres {
    /// `postgres://postgres@127.0.0.1:<port>/vmr_test`.
    pub url: String,
    /// The server's port on 127.0.0.1.
    pub port: u16,
    bin: PathBuf,
    data_dir: PathBuf,
    as_postgres: bool,
}

/// Starts a server and creates `vmr_test`; see the module docs.
pub fn start() -> Result<TestPostgres> {
    let bin = find_bin_dir()?;
    let as_postgres = running_as_root()?;
    let mut last_err = None;
    for attempt in 1..=START_ATTEMPTS {
        match start_once(&bin, as_postgres) {
            Ok(pg) => return Ok(pg),
            Err(e) => {
                eprintln!("xtask: PostgreSQL start attempt {attempt} failed: {e:#}");
                last_err = Some(e);
            }
        }
    }
    Err(last_err.unwrap_or_else(|| anyhow::anyhow!("PostgreSQL did not start")))
}

fn start_once(bin: &Path, as_postgres: bool) -> Result<TestPostgres> {
    let port = free_port()?;
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    let data_dir = std::env::temp_dir().join(format!(
        "vmr-test-pg-{}-{port}-{nanos:08x}",
        std::process::id()
    ));
    // From here on Drop cleans up whatever was created, even on failure.
    let pg = TestPostgres {
        url: format!("postgres://{PG_USER}@127.0.0.1:{port}/{DATABASE}"),
        port,
        bin: bin.to_path_buf(),
        data_dir,
        as_postgres,
    };
    let data = pg.data_dir_str()?;

    // initdb creates the data directory itself (owned by whoever runs it;
    // the temp dir is world-writable).
    pg.run(
        "initdb",
        &[
            "-D",
            data,
            "-U",
            PG_USER,
            "--auth=trust",
            "--encoding=UTF8",
            "--no-locale",
            "--no-sync",
        ],
    )
    .context("initdb failed")?;

    let mut conf = fs::OpenOptions::new()
        .append(true)
        .open(pg.data_dir.join("postgresql.conf"))
        .context("cannot open postgresql.conf")?;
    write!(
        conf,
        "\n# vmr-scheduler test run\n\
         listen_addresses = '127.0.0.1'\n\
         port = {port}\n\
         unix_socket_directories = ''\n\
         max_connections = 300\n\
         fsync = off\n\
         synchronous_commit = off\n\
         full_page_writes = off\n"
    )
    .context("cannot write postgresql.conf")?;
    drop(conf);

    let log = pg.data_dir.join("server.log");
    let log = log.to_str().context("non-UTF-8 temp dir")?;
    let timeout = READY_TIMEOUT.as_secs().to_string();
    if let Err(e) = pg.run(
        "pg_ctl",
        &["-D", data, "-l", log, "-w", "-t", &timeout, "start"],
    ) {
        let tail = fs::read_to_string(log).unwrap_or_default();
        let tail: Vec<&str> = tail.lines().rev().take(20).collect();
        let tail: Vec<&str> = tail.into_iter().rev().collect();
        bail!(
            "pg_ctl start failed: {e:#}\nserver log:\n{}",
            tail.join("\n")
        );
    }
    pg.wait_ready()?;
    pg.run_client(
        "createdb",
        &[
            "-h",
            "127.0.0.1",
            "-p",
            &port.to_string(),
            "-U",
            PG_USER,
            DATABASE,
        ],
    )
    .context("createdb failed")?;
    eprintln!("xtask: PostgreSQL for tests at {}", pg.url);
    Ok(pg)
}

impl TestPostgres {
    fn data_dir_str(&self) -> Result<&str> {
        self.data_dir.to_str().context("non-UTF-8 temp dir")
    }

    /// A server binary, run as the `postgres` user when we are root.
    fn server_command(&self, tool: &str) -> Command {
        let program = self.bin.join(tool);
        let mut command = if self.as_postgres {
            if Path::new("/usr/sbin/runuser").exists() || Path::new("/sbin/runuser").exists() {
                let mut c = Command::new("runuser");
                c.args(["-u", PG_USER, "--"]).arg(program);
                c
            } else {
                let mut c = Command::new("setpriv");
                c.args([
                    &format!("--reuid={PG_USER}"),
                    &format!("--regid={PG_USER}"),
                    "--init-groups",
                    "--reset-env",
                    "--",
                ])
                .arg(program);
                c
            }
        } else {
            Command::new(program)
        };
        // The postgres user may not be able to read the caller's directory.
        command.current_dir(std::env::temp_dir());
        command.env_remove("PGDATA").env("LC_ALL", "C");
        command
    }

    fn run(&self, tool: &str, args: &[&str]) -> Result<()> {
        let out = self
            .server_command(tool)
            .args(args)
            .output()
            .with_context(|| format!("cannot run {tool}"))?;
        check(tool, &out)
    }

    /// A client binary; clients need no particular user.
    fn run_client(&self, tool: &str, args: &[&str]) -> Result<()> {
        let out = Command::new(self.bin.join(tool))
            .args(args)
            .current_dir(std::env::temp_dir())
            .env("PGCONNECT_TIMEOUT", "5")
            .output()
            .with_context(|| format!("cannot run {tool}"))?;
        check(tool, &out)
    }

    /// `pg_ctl -w` already waited; confirm over TCP (bounded) anyway.
    fn wait_ready(&self) -> Result<()> {
        let addr = SocketAddr::from(([127, 0, 0, 1], self.port));
        let deadline = Instant::now() + READY_TIMEOUT;
        let port = self.port.to_string();
        loop {
            let tcp = TcpStream::connect_timeout(&addr, Duration::from_secs(1)).is_ok();
            let ready = tcp
                && Command::new(self.bin.join("pg_isready"))
                    .args(["-h", "127.0.0.1", "-p", &port, "-U", PG_USER, "-t", "2"])
                    .current_dir(std::env::temp_dir())
                    .output()
                    // pg_isready may be missing from the version dir; TCP then suffices.
                    .map_or(true, |o| o.status.success());
            if ready {
                return Ok(());
            }
            if Instant::now() >= deadline {
                bail!(
                    "PostgreSQL did not accept connections on {addr} within {}s",
                    READY_TIMEOUT.as_secs()
                );
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

impl Drop for TestPostgres {
    fn drop(&mut self) {
        if self.data_dir.join("postmaster.pid").exists() {
            if let Ok(data) = self.data_dir_str() {
                let stop = ["-D", data, "-m", "immediate", "-w", "stop"];
                if let Err(e) = self.run("pg_ctl", &stop) {
                    eprintln!("xtask: stopping the test PostgreSQL: {e:#}");
                }
            }
        }
        if self.data_dir.exists() {
            if let Err(e) = fs::remove_dir_all(&self.data_dir) {
                eprintln!(
                    "xtask: cannot remove {}: {e} (remove it by hand)",
                    self.data_dir.display()
                );
            }
        }
    }
}

fn check(tool: &str, out: &Output) -> Result<()> {
    if out.status.success() {
        return Ok(());
    }
    bail!(
        "{tool} exited with {}: {}{}",
        out.status,
        String::from_utf8_lossy(&out.stderr).trim(),
        String::from_utf8_lossy(&out.stdout).trim()
    )
}

/// The newest `/usr/lib/postgresql/<version>/bin` holding `initdb` and `pg_ctl`.
fn find_bin_dir() -> Result<PathBuf> {
    let missing = || {
        anyhow::anyhow!(
            "PostgreSQL server binaries (initdb, pg_ctl) not found under {PG_LIB}/*/bin; \
             run `cargo xtask setup` (it installs Debian's `postgresql` package)"
        )
    };
    let entries = fs::read_dir(PG_LIB).map_err(|_| missing())?;
    let mut best: Option<(Vec<u32>, PathBuf)> = None;
    for entry in entries.flatten() {
        let bin = entry.path().join("bin");
        if !bin.join("initdb").is_file() || !bin.join("pg_ctl").is_file() {
            continue;
        }
        let name = entry.file_name().to_string_lossy().into_owned();
        let version: Vec<u32> = name.split('.').map(|p| p.parse().unwrap_or(0)).collect();
        if best.as_ref().is_none_or(|(v, _)| version > *v) {
            best = Some((version, bin));
        }
    }
    best.map(|(_, bin)| bin).ok_or_else(missing)
}

/// Whether this process is root (then the server must run as `postgres`).
fn running_as_root() -> Result<bool> {
    // /proc/self belongs to the process's effective uid.
    let uid = fs::metadata("/proc/self")
        .context("cannot read /proc/self")?
        .uid();
    if uid != 0 {
        return Ok(false);
    }
    let known = Command::new("id")
        .args(["-u", PG_USER])
        .output()
        .is_ok_and(|o| o.status.success());
    if !known {
        bail!(
            "running as root but there is no `{PG_USER}` system user to run PostgreSQL as; \
             run `cargo xtask setup` (it installs Debian's `postgresql` package)"
        );
    }
    Ok(true)
}

/// A port on 127.0.0.1 that was free a moment ago.
fn free_port() -> Result<u16> {
    let listener = TcpListener::bind(("127.0.0.1", 0)).context("cannot bind 127.0.0.1:0")?;
    Ok(listener.local_addr()?.port())
}
