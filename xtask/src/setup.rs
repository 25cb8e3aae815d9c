//! `cargo xtask setup`: installs whatever the build and the tests need and is
//! missing, so a fresh machine gets from `git clone` to a green test run with
//! one command. Each step first checks whether its tool is already there.
//!
//! * wasm32 target (rustup), Trunk 0.21.14, wasm-bindgen-cli at exactly the
//!   version in Cargo.lock;
//! * npm tools into `.tools/` (git-ignored): binaryen's wasm-opt (Debian's is
//!   too old for current rustc output) and `@microsoft/office-js`, whose `dist/`
//!   is copied to `static/office-js/` (its licence forbids committing it);
//! * `MicrosoftAjax.js` for local Office.js, copied next to it from the file
//!   named by `VMR_MICROSOFT_AJAX_JS` when given (it is in no registry);
//! * Debian packages: chromium, chromium-driver, libxml2-utils, postgresql,
//!   python3-venv;
//! * a Python venv at `.tools/exchangelib` with exchangelib, the third-party
//!   EWS client `simulator/tests/integration/ews_third_party.rs` drives the simulated
//!   Exchange with.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

use crate::{cmd, cmd_output, root};

/// Trunk release known to build offline with this toolchain.
const TRUNK_VERSION: &str = "0.21.14";
const APT_PACKAGES: &[(&str, &str)] = &[
    ("chromium", "/usr/bin/chromium"),
    ("chromium-driver", "/usr/bin/chromedriver"),
    ("libxml2-utils", "/usr/bin/xmllint"),
    ("postgresql", "/usr/lib/postgresql"),
    // Load generator for `cargo xtask bench`.
    ("wrk", "/usr/bin/wrk"),
    // `python3 -m venv` for the exchangelib venv.
    ("python3-venv", "/usr/share/doc/python3-venv"),
];

/// The exchangelib release `simulator/tests/integration/ews_third_party.rs` is checked with.
const EXCHANGELIB_VERSION: &str = "5.6.0";

/// The `.tools/` folder.
pub fn tools_dir() -> PathBuf {
    root().join(".tools")
}

/// PATH with `.tools/node_modules/.bin` and `~/.cargo/bin` first.
pub fn tool_path() -> String {
    let mut parts = vec![tools_dir().join("node_modules/.bin")];
    if let Some(home) = std::env::var_os("HOME") {
        parts.push(PathBuf::from(home).join(".cargo/bin"));
    }
    let old = std::env::var_os("PATH").unwrap_or_default();
    parts.extend(std::env::split_paths(&old));
    std::env::join_paths(parts)
        .map(|p| p.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// Installs everything that is missing.
pub fn run() -> Result<()> {
    apt()?;
    rust_tools()?;
    npm_tools()?;
    office_js()?;
    microsoft_ajax()?;
    exchangelib()?;
    Ok(())
}

/// The venv holding exchangelib (`.tools/exchangelib`).
pub fn exchangelib_venv() -> PathBuf {
    tools_dir().join("exchangelib")
}

/// Creates `.tools/exchangelib` with `python3 -m venv` and installs exchangelib at
/// [`EXCHANGELIB_VERSION`] from PyPI, unless the venv already imports that version.
fn exchangelib() -> Result<()> {
    let venv = exchangelib_venv();
    let python = venv.join("bin/python");
    let probe = format!(
        "import sys, exchangelib; sys.exit(exchangelib.__version__ != '{EXCHANGELIB_VERSION}')"
    );
    let installed = std::process::Command::new(&python)
        .args(["-c", &probe])
        .output()
        .is_ok_and(|out| out.status.success());
    if installed {
        return Ok(());
    }
    // Debian's interpreter is the one python3-venv serves; another python3 on PATH will do.
    let system_python = if Path::new("/usr/bin/python3").exists() {
        "/usr/bin/python3"
    } else {
        "python3"
    };
    eprintln!(
        "xtask setup: creating {} with exchangelib {EXCHANGELIB_VERSION}",
        venv.display()
    );
    let venv_text = venv.to_string_lossy().into_owned();
    cmd(system_python, &["-m", "venv", "--clear", &venv_text], None).with_context(|| {
        format!(
            "cannot create the Python venv {venv_text} with `{system_python} -m venv`: \
             install Python 3 with its venv module (Debian: apt-get install python3 python3-venv)"
        )
    })?;
    let pip = venv.join("bin/pip").to_string_lossy().into_owned();
    let requirement = format!("exchangelib=={EXCHANGELIB_VERSION}");
    cmd(
        &pip,
        &[
            "install",
            "--quiet",
            "--disable-pip-version-check",
            &requirement,
        ],
        None,
    )
    .with_context(|| format!("cannot install {requirement} into {venv_text} from PyPI"))
}

/// Environment variable naming a downloaded `MicrosoftAjax.js` for local
/// (air-gapped) Office.js.
const MICROSOFT_AJAX_ENV: &str = "VMR_MICROSOFT_AJAX_JS";

/// Copies the admin-supplied `MicrosoftAjax.js` (in no package registry; from
/// Microsoft's CDN on a connected machine) next to the local Office.js.
fn microsoft_ajax() -> Result<()> {
    let dst = root().join("static/office-js/MicrosoftAjax.js");
    let Some(src) = std::env::var_os(MICROSOFT_AJAX_ENV).map(PathBuf::from) else {
        if !dst.exists() {
            eprintln!(
                "xtask setup: no {} (needed only for server.office_js = \"local\"): download \
                 https://ajax.aspnetcdn.com/ajax/3.5/MicrosoftAjax.js on a connected machine and \
                 run `{MICROSOFT_AJAX_ENV}=<that file> cargo xtask setup`, or copy it there",
                dst.display()
            );
        }
        return Ok(());
    };
    let text = std::fs::read_to_string(&src)
        .with_context(|| format!("{MICROSOFT_AJAX_ENV}: cannot read {}", src.display()))?;
    if !text.contains("Type.registerNamespace") {
        bail!(
            "{MICROSOFT_AJAX_ENV}: {} does not look like MicrosoftAjax.js (no Type.registerNamespace)",
            src.display()
        );
    }
    std::fs::create_dir_all(dst.parent().context("no parent")?)?;
    std::fs::write(&dst, text).with_context(|| format!("writing {}", dst.display()))
}

fn apt() -> Result<()> {
    let missing: Vec<&str> = APT_PACKAGES
        .iter()
        .filter(|(_, probe)| !Path::new(probe).exists())
        .map(|(name, _)| *name)
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    eprintln!("xtask setup: installing Debian packages {missing:?}");
    cmd("apt-get", &["update", "-qq"], None)?;
    let mut args = vec!["install", "-y", "-qq", "--no-install-recommends"];
    args.extend(&missing);
    cmd(
        "env",
        &[&["DEBIAN_FRONTEND=noninteractive", "apt-get"][..], &args].concat(),
        None,
    )
}

/// The wasm-bindgen version locked in Cargo.lock.
pub fn locked_wasm_bindgen() -> Result<String> {
    let lock = std::fs::read_to_string(root().join("Cargo.lock")).context("reading Cargo.lock")?;
    let mut lines = lock.lines();
    while let Some(line) = lines.next() {
        if line == "name = \"wasm-bindgen\"" {
            if let Some(v) = lines.next().and_then(|l| l.strip_prefix("version = \"")) {
                return Ok(v.trim_end_matches('"').to_string());
            }
        }
    }
    bail!("Cargo.lock has no wasm-bindgen package")
}

fn installed_version(tool: &str) -> Option<String> {
    let out = std::process::Command::new(tool)
        .arg("--version")
        .env("PATH", tool_path())
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
}

fn rust_tools() -> Result<()> {
    let targets = cmd_output("rustup", &["target", "list", "--installed"])?;
    if !targets
        .lines()
        .any(|t| t.trim() == "wasm32-unknown-unknown")
    {
        cmd("rustup", &["target", "add", "wasm32-unknown-unknown"], None)?;
    }
    if !installed_version("trunk").is_some_and(|v| v.ends_with(TRUNK_VERSION)) {
        cmd(
            "cargo",
            &["install", "--locked", "trunk", "--version", TRUNK_VERSION],
            None,
        )?;
    }
    let wbg = locked_wasm_bindgen()?;
    if !installed_version("wasm-bindgen").is_some_and(|v| v.ends_with(&wbg)) {
        // Without --locked: the CLI's own lockfile pins a crate the registry lacks.
        cmd(
            "cargo",
            &["install", "wasm-bindgen-cli", "--version", &wbg],
            None,
        )?;
    }
    Ok(())
}

fn npm_tools() -> Result<()> {
    let dir = tools_dir();
    std::fs::create_dir_all(&dir)?;
    let wanted = std::fs::read_to_string(root().join("xtask/tools/package.json"))?;
    let have = std::fs::read_to_string(dir.join("package.json")).unwrap_or_default();
    let installed = dir.join("node_modules/binaryen/package.json").exists()
        && dir
            .join("node_modules/@microsoft/office-js/package.json")
            .exists();
    if have == wanted && installed {
        return Ok(());
    }
    std::fs::write(dir.join("package.json"), wanted)?;
    cmd(
        "npm",
        &[
            "install",
            "--no-package-lock",
            "--no-audit",
            "--no-fund",
            "--loglevel=error",
        ],
        Some(&dir),
    )
}

fn office_js() -> Result<()> {
    let src = tools_dir().join("node_modules/@microsoft/office-js/dist");
    let dst = root().join("static/office-js");
    if dst.join("office.js").exists() {
        return Ok(());
    }
    if !src.join("office.js").exists() {
        bail!("{} has no office.js", src.display());
    }
    copy_dir(&src, &dst).with_context(|| format!("copying Office.js to {}", dst.display()))
}

fn copy_dir(src: &Path, dst: &Path) -> Result<()> {
    std::fs::create_dir_all(dst)?;
    for entry in std::fs::read_dir(src)? {
        let entry = entry?;
        let to = dst.join(entry.file_name());
        if entry.file_type()?.is_dir() {
            copy_dir(&entry.path(), &to)?;
        } else {
            std::fs::copy(entry.path(), to)?;
        }
    }
    Ok(())
}
