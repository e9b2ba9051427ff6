//! The engine's layout rules (issue 17), checked on every run so they stay true:
//! no source file over 800 lines, and no import cycle among the top-level modules of `src/`
//! nor among the folders of `statestores/src/` (`scripts/module-cycles` prints the graph).

use std::path::{Path, PathBuf};

/// Longest `.rs` file allowed under `src/` and `statestores/src/`, test modules included.
const MAX_LINES: usize = 800;

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

#[test]
fn no_source_file_is_over_800_lines() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut files = Vec::new();
    rust_files(&root.join("src"), &mut files);
    rust_files(&root.join("statestores/src"), &mut files);
    assert!(files.len() > 20, "found only {files:?}");
    let long: Vec<String> = files
        .iter()
        .filter_map(|f| {
            let n = std::fs::read_to_string(f).unwrap().lines().count();
            (n > MAX_LINES).then(|| format!("{}: {n} lines", f.display()))
        })
        .collect();
    assert!(
        long.is_empty(),
        "over {MAX_LINES} lines:\n{}",
        long.join("\n")
    );
}

#[test]
fn top_level_modules_import_one_way() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let out = std::process::Command::new("python3")
        .arg(root.join("scripts/module-cycles"))
        .arg(root.join("src"))
        .arg(root.join("statestores/src"))
        .output()
        .expect("python3 runs scripts/module-cycles");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && !text.contains("CYCLE"),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The graph is read from real imports: the engine depends on the runner, never back.
    let line = |m: &str| {
        text.lines()
            .find(|l| l.starts_with(&format!("{m} -> ")))
            .unwrap_or_else(|| panic!("no line for {m} in:\n{text}"))
            .to_string()
    };
    assert!(line("reconcile").contains("pipeline"), "{text}");
    assert!(!line("pipeline").contains("reconcile"), "{text}");
}
