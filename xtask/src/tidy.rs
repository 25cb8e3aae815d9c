//! `cargo xtask tidy`: the repository's own rules, checked by reading files
//! (no build). `cargo xtask test` runs it first. Each rule is a plain text
//! heuristic, kept simple on purpose; a finding names the file and line.
//!
//! 1. **The map is true, one way**: every crate and module named in the
//!    first column of a table in `ARCHITECTURE.md` exists. A table with a
//!    `path` column lists paths from the repository root (the crate table); a
//!    table whose first column is `module` lists paths relative to the
//!    directory named in backticks in the heading above it (for example
//!    "## The server (`server/src`)").
//! 2. **The map is true, the other way**: every `.rs` file under the
//!    directories in [`MAPPED_SOURCES`] and under every directory that has a
//!    `module` table (rule 1) is mentioned in `ARCHITECTURE.md`, in
//!    backticks: as its path relative to that directory (`token/jwt.rs`),
//!    or as its file name when its directory is mentioned too (`token/` and
//!    `jwt.rs`). `lib.rs` and `mod.rs` are covered by their crate or folder.
//! 3. **No test passes by skipping**: in test code (every `.rs` file under a
//!    `tests/` directory) a line that prints something containing "skip",
//!    a bare `return;` / `else { return }`, or a look at the `CI` variable
//!    is a test that passes when its prerequisite is missing. Such a test
//!    must be `#[ignore = "needs …"]` and panic, naming what is missing.
//! 4. **The project stands alone**: no code, build or CI file names the
//!    sibling `shared` folder (by its relative path) outside a comment (documentation may point
//!    at it).

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

use crate::root;

/// Source folders whose every `.rs` file must appear in `ARCHITECTURE.md`,
/// whether or not the map has a `module` table for them yet.
pub const MAPPED_SOURCES: &[&str] = &[
    "core/src",
    "auth/src",
    "store/src",
    "exchange/src",
    "server/src",
];

/// Folders never scanned (build output, tools, dependencies).
const SKIP_DIRS: &[&str] = &[
    "target",
    ".git",
    ".tools",
    "node_modules",
    "dist",
    "demo-data",
];

/// Extensions of files that can read something at build, run or test time.
const CODE_EXTENSIONS: &[&str] = &["rs", "toml", "sh", "html", "js", "j2", "lua", "yml", "yaml"];

/// One broken rule: where, and what is wrong.
#[derive(Debug, PartialEq, Eq)]
pub struct Finding {
    /// Path relative to the root, with `:line` when there is one.
    pub place: String,
    /// What is wrong and how to fix it.
    pub problem: String,
}

/// Runs every rule on the repository and fails listing every finding.
pub fn run() -> Result<()> {
    let root = root();
    let findings = check(&root)?;
    if findings.is_empty() {
        eprintln!("xtask tidy: ok");
        return Ok(());
    }
    for f in &findings {
        eprintln!("{}: {}", f.place, f.problem);
    }
    bail!(
        "tidy: {} finding(s); see above (the rules are in xtask/src/tidy.rs)",
        findings.len()
    )
}

/// All findings for the repository at `root`.
pub fn check(root: &Path) -> Result<Vec<Finding>> {
    let arch_path = root.join("ARCHITECTURE.md");
    let architecture = std::fs::read_to_string(&arch_path)
        .with_context(|| format!("cannot read {}", arch_path.display()))?;
    let files = walk(root)?;
    let (mut findings, mut mapped) = map_entries_exist(root, &architecture);
    mapped.extend(MAPPED_SOURCES.iter().map(|d| d.to_string()));
    mapped.sort();
    mapped.dedup();
    for dir in &mapped {
        findings.extend(sources_are_mapped(root, dir, &architecture, &files));
    }
    for file in &files {
        let rel = relative(root, file);
        let ext = file.extension().and_then(|e| e.to_str()).unwrap_or("");
        let is_code = CODE_EXTENSIONS.contains(&ext) || rel.starts_with(".ci/");
        if !is_code {
            continue;
        }
        let Ok(text) = std::fs::read_to_string(file) else {
            continue;
        };
        if ext == "rs" && is_test_code(&rel) {
            findings.extend(silent_skips(&rel, &text));
        }
        // This file names the folder in order to look for it.
        if rel != "xtask/src/tidy.rs" {
            findings.extend(shared_reads(&rel, &text));
        }
    }
    Ok(findings)
}

/// Every file under `root`, minus [`SKIP_DIRS`].
fn walk(root: &Path) -> Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let entries =
            std::fs::read_dir(&dir).with_context(|| format!("cannot list {}", dir.display()))?;
        for entry in entries {
            let entry = entry?;
            let path = entry.path();
            let name = entry.file_name();
            if entry.file_type()?.is_dir() {
                if !SKIP_DIRS.iter().any(|s| name == *s) {
                    stack.push(path);
                }
            } else {
                out.push(path);
            }
        }
    }
    out.sort();
    Ok(out)
}

fn relative(root: &Path, path: &Path) -> String {
    path.strip_prefix(root)
        .unwrap_or(path)
        .to_string_lossy()
        .replace('\\', "/")
}

/// The texts in backticks on `line`.
fn backticked(line: &str) -> Vec<&str> {
    line.split('`').skip(1).step_by(2).collect()
}

/// Rule 1: the crates and modules the tables name exist. Also returns the
/// directories that have a `module` table.
fn map_entries_exist(root: &Path, architecture: &str) -> (Vec<Finding>, Vec<String>) {
    let mut findings = Vec::new();
    let mut module_dirs = Vec::new();
    // The directory named by the latest heading, for `module` tables.
    let mut heading_dir: Option<String> = None;
    // (column holding the entry, base directory) of the table being read.
    let mut table: Option<(usize, Option<String>)> = None;
    for (n, line) in architecture.lines().enumerate() {
        let place = format!("ARCHITECTURE.md:{}", n + 1);
        let trimmed = line.trim();
        if trimmed.starts_with('#') {
            heading_dir = backticked(trimmed).first().map(|d| d.to_string());
            table = None;
            continue;
        }
        if !trimmed.starts_with('|') {
            table = None;
            continue;
        }
        let cells: Vec<&str> = trimmed
            .trim_matches('|')
            .split('|')
            .map(str::trim)
            .collect();
        if cells
            .iter()
            .all(|c| c.chars().all(|ch| ch == '-' || ch == ':'))
        {
            continue; // the |---| separator row
        }
        let Some((column, base)) = &table else {
            // A header row: which column names things on disk, relative to what?
            if let Some(i) = cells.iter().position(|c| *c == "path") {
                table = Some((i, None));
            } else if cells.first() == Some(&"module") {
                match &heading_dir {
                    Some(dir) => {
                        module_dirs.push(dir.trim_end_matches('/').to_string());
                        table = Some((0, Some(dir.clone())));
                    }
                    None => findings.push(Finding {
                        place,
                        problem: "a `module` table needs the directory it maps, in backticks, \
                                  in the heading above it"
                            .into(),
                    }),
                }
            }
            continue;
        };
        let Some(cell) = cells.get(*column) else {
            continue;
        };
        for entry in backticked(cell) {
            let path = match base {
                Some(dir) => root.join(dir).join(entry),
                None => root.join(entry),
            };
            if !path.exists() {
                findings.push(Finding {
                    place: place.clone(),
                    problem: format!(
                        "the map names `{entry}` but {} does not exist; fix the table or the code",
                        relative(root, &path)
                    ),
                });
            }
        }
    }
    (findings, module_dirs)
}

/// Rule 2: every source file under `dir` is mentioned.
fn sources_are_mapped(
    root: &Path,
    dir: &str,
    architecture: &str,
    files: &[PathBuf],
) -> Vec<Finding> {
    let mentioned: Vec<&str> = architecture.lines().flat_map(backticked).collect();
    let base = root.join(dir);
    let mut findings = Vec::new();
    for file in files {
        let Ok(rel) = file.strip_prefix(&base) else {
            continue;
        };
        if file.extension().and_then(|e| e.to_str()) != Some("rs") {
            continue;
        }
        let rel = rel.to_string_lossy().replace('\\', "/");
        let name = rel.rsplit('/').next().unwrap_or(&rel);
        let folder = rel.rsplit_once('/').map(|(folder, _)| format!("{folder}/"));
        let covered = match (name, &folder) {
            ("lib.rs", None) => true,
            ("mod.rs", Some(folder)) => mentioned.contains(&folder.as_str()),
            (_, None) => mentioned.contains(&name),
            (_, Some(folder)) => {
                mentioned.contains(&rel.as_str())
                    || (mentioned.contains(&folder.as_str()) && mentioned.contains(&name))
            }
        };
        if !covered {
            findings.push(Finding {
                place: format!("{dir}/{rel}"),
                problem: format!(
                    "not mentioned in ARCHITECTURE.md: add `{rel}` and what it does to the map"
                ),
            });
        }
    }
    findings
}

/// Test code: integration tests, benches' and harness files under `tests/`.
fn is_test_code(rel: &str) -> bool {
    rel.split('/').any(|part| part == "tests")
}

/// Rule 3: a test that passes when its prerequisite is missing.
fn silent_skips(rel: &str, text: &str) -> Vec<Finding> {
    let mut findings = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let code = line.trim();
        if code.starts_with("//") {
            continue;
        }
        let lower = code.to_lowercase();
        let prints = ["eprintln!", "println!", "print!", "eprint!"]
            .iter()
            .any(|m| lower.contains(m));
        let problem = if prints && lower.contains("skip") {
            Some("prints a \"skip\" note: a test that skips passes without checking anything")
        } else if code == "return;"
            || code.contains("else { return }")
            || code.contains("else { return; }")
        {
            Some("returns early: a test that returns when something is missing passes without checking anything")
        } else if code.contains("var_os(\"CI\")") || code.contains("var(\"CI\")") {
            Some("behaves differently under CI: a check either runs everywhere or is #[ignore]d")
        } else {
            None
        };
        if let Some(problem) = problem {
            findings.push(Finding {
                place: format!("{rel}:{}", n + 1),
                problem: format!(
                    "{problem}; mark the test #[ignore = \"needs …\"] and panic naming what is missing"
                ),
            });
        }
    }
    findings
}

/// The sibling folder's relative path, spelt in pieces so that this file does
/// not name it itself.
const SHARED_PATH: &str = concat!("..", "/", "shared");

/// Rule 4: a code file that names the sibling `shared` folder's path.
fn shared_reads(rel: &str, text: &str) -> Vec<Finding> {
    text.lines()
        .enumerate()
        .filter(|(_, line)| {
            let code = line.trim_start();
            // Comments (`//`, `#`) may say that nothing reads it.
            !code.starts_with("//") && !code.starts_with('#') && line.contains(SHARED_PATH)
        })
        .map(|(n, _)| Finding {
            place: format!("{rel}:{}", n + 1),
            problem: format!(
                "names {SHARED_PATH}: the project must build, run and test without it; \
                 vendor what is needed into the repository (see schemas/)"
            ),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A throwaway repository with an ARCHITECTURE.md and the given files.
    fn repo(architecture: &str, files: &[(&str, &str)]) -> tempfile::TempDir {
        let dir = tempfile::tempdir().expect("temp dir");
        std::fs::write(dir.path().join("ARCHITECTURE.md"), architecture).expect("write map");
        for (path, text) in files {
            let path = dir.path().join(path);
            std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
            std::fs::write(path, text).expect("write file");
        }
        dir
    }

    const MAP: &str = "# Map\n\n| crate | path | what |\n|---|---|---|\n\
        | `a` | `server/` | the server |\n\n\
        ## The server (`server/src`)\n\n| module | concern |\n|---|---|\n\
        | `main.rs` | CLI |\n| `token/` | tokens: `jwt.rs` |\n";

    fn problems(dir: &tempfile::TempDir) -> Vec<String> {
        check(dir.path())
            .expect("check runs")
            .into_iter()
            .map(|f| format!("{} {}", f.place, f.problem))
            .collect()
    }

    #[test]
    fn a_true_map_and_honest_tests_pass() {
        let dir = repo(
            MAP,
            &[
                ("server/src/main.rs", "fn main() {}"),
                ("server/src/lib.rs", ""),
                ("server/src/token/mod.rs", ""),
                ("server/src/token/jwt.rs", ""),
                (
                    "server/tests/t.rs",
                    "#[test]\n#[ignore = \"needs x\"]\nfn t() { assert!(true) }\n",
                ),
            ],
        );
        assert_eq!(problems(&dir), Vec::<String>::new());
    }

    #[test]
    fn a_missing_module_or_crate_is_found() {
        let dir = repo(MAP, &[("server/src/main.rs", "")]);
        let p = problems(&dir);
        assert!(p.iter().any(|p| p.contains("`token/`")), "{p:?}");
        let dir = repo(MAP, &[]);
        let p = problems(&dir);
        assert!(p.iter().any(|p| p.contains("`server/`")), "{p:?}");
    }

    #[test]
    fn an_unmapped_source_file_is_found() {
        let dir = repo(
            MAP,
            &[
                ("server/src/main.rs", ""),
                ("server/src/token/jwt.rs", ""),
                ("server/src/token/extra.rs", ""),
                ("server/src/clock.rs", ""),
            ],
        );
        let p = problems(&dir);
        assert!(
            p.iter().any(|p| p.starts_with("server/src/clock.rs")),
            "{p:?}"
        );
        assert!(
            p.iter().any(|p| p.starts_with("server/src/token/extra.rs")),
            "{p:?}"
        );
        assert_eq!(p.len(), 2, "{p:?}");
    }

    #[test]
    fn every_directory_with_a_module_table_is_checked_both_ways() {
        let map = format!(
            "{MAP}\n## Core (`core/src`)\n\n| module | concern |\n|---|---|\n| `clock.rs` | time |\n"
        );
        let dir = repo(
            &map,
            &[
                ("server/src/main.rs", ""),
                ("server/src/token/jwt.rs", ""),
                ("core/src/lib.rs", ""),
                ("core/src/clock.rs", ""),
                ("core/src/unmapped.rs", ""),
            ],
        );
        let p = problems(&dir);
        assert!(
            p.iter().any(|p| p.starts_with("core/src/unmapped.rs")),
            "{p:?}"
        );
        assert_eq!(p.len(), 1, "{p:?}");
    }

    #[test]
    fn silent_skips_are_found() {
        let dir = repo(
            MAP,
            &[
                ("server/src/main.rs", ""),
                ("server/src/token/jwt.rs", ""),
                (
                    "server/tests/a.rs",
                    "fn t() {\n    if missing {\n        eprintln!(\"dist/ not built; skipping\");\n        return;\n    }\n}\n",
                ),
                (
                    "tests/tests/b.rs",
                    "fn t() {\n    let Some(s) = schema() else { return };\n    \
                     assert!(std::env::var_os(\"CI\").is_none());\n}\n",
                ),
            ],
        );
        let p = problems(&dir);
        for place in [
            "server/tests/a.rs:3",
            "server/tests/a.rs:4",
            "tests/tests/b.rs:2",
            "tests/tests/b.rs:3",
        ] {
            assert!(
                p.iter().any(|p| p.starts_with(&format!("{place} "))),
                "{place}: {p:?}"
            );
        }
        assert_eq!(p.len(), 4, "{p:?}");
    }

    #[test]
    fn reading_the_shared_folder_is_found_in_code_but_not_in_docs() {
        let dir = repo(
            MAP,
            &[
                ("server/src/main.rs", ""),
                ("server/src/token/jwt.rs", ""),
                (
                    "server/tests/m.rs",
                    &format!("// Nothing here reads {SHARED_PATH}.\nconst X: &str = \"{SHARED_PATH}/manifest-schema\";\n"),
                ),
                (".ci/run", &format!("ls {SHARED_PATH}\n")),
                ("README.md", &format!("The design is in {SHARED_PATH}/DESIGN.md.\n")),
            ],
        );
        let p = problems(&dir);
        assert!(
            p.iter().any(|p| p.starts_with("server/tests/m.rs:2 ")),
            "{p:?}"
        );
        assert!(p.iter().any(|p| p.starts_with(".ci/run:1 ")), "{p:?}");
        assert_eq!(p.len(), 2, "{p:?}");
    }
}
