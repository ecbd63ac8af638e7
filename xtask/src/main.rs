//! Development tasks of nbdroot, kept out of the shipped binary.
//!
//! `cargo xtask gen` writes the man pages and shell completions, generated from the clap
//! definitions (`nbdroot::cli::Cli`) and the boot parameter table
//! (`nbdroot::cmdline::params::PARAMS`), into the repository; `cargo xtask check` fails when
//! the committed files differ from what the sources generate (CI runs it).

mod boot_params;
mod completions;
mod man;

use std::fmt::Write as _;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

/// The directories that hold only generated files.
const GENERATED_DIRS: [&str; 2] = ["man", "completions"];

/// A generated file: its path in the repository and its content.
pub struct File {
    pub path: String,
    pub content: Vec<u8>,
}

const USAGE: &str = "\
Usage: cargo xtask <TASK>

Tasks:
  gen    write man/ and completions/ from the clap definitions and the boot parameter table
  check  fail if the committed man/ and completions/ differ from what `gen` would write";

fn main() -> ExitCode {
    let task = std::env::args().nth(1);
    let result = match task.as_deref() {
        Some("gen") => gen(),
        Some("check") => check(),
        Some("-h" | "--help") => {
            println!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        _ => {
            eprintln!("{USAGE}");
            return ExitCode::from(2);
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xtask: {e}");
            ExitCode::FAILURE
        }
    }
}

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask/ is inside the repository")
        .to_path_buf()
}

fn generate() -> Result<Vec<File>, String> {
    let mut files = man::pages()?;
    files.push(boot_params::page()?);
    files.extend(completions::scripts());
    Ok(files)
}

/// The files in the generated directories that `files` does not have.
fn strays(root: &Path, files: &[File]) -> Vec<String> {
    let mut strays = Vec::new();
    for dir in GENERATED_DIRS {
        let Ok(entries) = fs::read_dir(root.join(dir)) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = format!("{dir}/{}", entry.file_name().to_string_lossy());
            if !files.iter().any(|f| f.path == path) {
                strays.push(path);
            }
        }
    }
    strays.sort();
    strays
}

fn gen() -> Result<(), String> {
    let root = repo_root();
    let files = generate()?;
    for dir in GENERATED_DIRS {
        fs::create_dir_all(root.join(dir)).map_err(|e| format!("{dir}: {e}"))?;
    }
    for f in &files {
        fs::write(root.join(&f.path), &f.content).map_err(|e| format!("{}: {e}", f.path))?;
        println!("wrote {}", f.path);
    }
    // A page for a command that is gone would otherwise linger.
    for path in strays(&root, &files) {
        fs::remove_file(root.join(&path)).map_err(|e| format!("{path}: {e}"))?;
        println!("removed {path}");
    }
    Ok(())
}

fn check() -> Result<(), String> {
    let root = repo_root();
    let files = generate()?;
    let mut problems = String::new();
    for f in &files {
        match fs::read(root.join(&f.path)) {
            Ok(committed) if committed == f.content => {}
            Ok(committed) => {
                let line = first_difference(&committed, &f.content);
                let _ = writeln!(
                    problems,
                    "  {} is stale (differs from line {line} on)",
                    f.path
                );
            }
            Err(e) => {
                let _ = writeln!(problems, "  {} is missing ({e})", f.path);
            }
        }
    }
    for path in strays(&root, &files) {
        let _ = writeln!(problems, "  {path} is not generated any more");
    }
    if problems.is_empty() {
        println!(
            "xtask check: {} generated files are up to date",
            files.len()
        );
        return Ok(());
    }
    Err(format!(
        "the generated files do not match their sources (src/cli/args.rs, src/cmdline/params.rs):\n\
         {problems}run `cargo xtask gen` and commit the result"
    ))
}

/// The first line (from 1) where `a` and `b` differ.
fn first_difference(a: &[u8], b: &[u8]) -> usize {
    let mut lines_a = a.split(|&c| c == b'\n');
    let mut lines_b = b.split(|&c| c == b'\n');
    let mut n = 1;
    loop {
        match (lines_a.next(), lines_b.next()) {
            (Some(x), Some(y)) if x == y => n += 1,
            _ => return n,
        }
    }
}
