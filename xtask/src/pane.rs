//! `cargo xtask build-pane`: Trunk release build of `addin/` into `dist/`
//! (offline: tool versions pinned in Trunk.toml), then a `.br` and a `.gz`
//! next to every text and wasm file so the server can send them precompressed.

use std::io::Write;

use anyhow::{Context, Result};

use crate::{cmd_env, root};

/// Builds and precompresses the pane.
pub fn build() -> Result<()> {
    cmd_env(
        "trunk",
        &["build", "--release"],
        None,
        &[
            ("TRUNK_SKIP_VERSION_CHECK", "true"),
            ("TRUNK_OFFLINE", "true"),
        ],
    )?;
    precompress()
}

fn precompress() -> Result<()> {
    let dist = root().join("dist");
    for entry in std::fs::read_dir(&dist).context("reading dist/")? {
        let path = entry?.path();
        let ext = path.extension().and_then(|e| e.to_str()).unwrap_or("");
        if !matches!(ext, "wasm" | "js" | "css") {
            continue;
        }
        let data = std::fs::read(&path)?;
        let mut br = Vec::new();
        {
            let mut w = brotli::CompressorWriter::new(&mut br, 4096, 11, 22);
            w.write_all(&data)?;
        }
        std::fs::write(format!("{}.br", path.display()), br)?;
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
        gz.write_all(&data)?;
        std::fs::write(format!("{}.gz", path.display()), gz.finish()?)?;
    }
    Ok(())
}

/// Brotli sizes of the pane's transfer (wasm + js + css), for the bench.
pub fn transfer_sizes() -> Result<Vec<(String, u64)>> {
    let dist = root().join("dist");
    let mut out = Vec::new();
    for entry in std::fs::read_dir(&dist).context("reading dist/ (run build-pane)")? {
        let path = entry?.path();
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or("")
            .to_string();
        if let Some(orig) = name.strip_suffix(".br") {
            if orig.ends_with(".wasm") || orig.ends_with(".js") || orig.ends_with(".css") {
                out.push((orig.to_string(), std::fs::metadata(&path)?.len()));
            }
        }
    }
    out.sort();
    Ok(out)
}
