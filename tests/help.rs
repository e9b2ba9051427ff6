//! `promised … --help` is written for users (platform engineers, not Rust developers): the
//! real binary's `-h` and `--help` of the top level and of every subcommand, found by walking
//! the `Commands:` lists, exit 0, read as plain text (no rustdoc links, no Rust paths or
//! types, no Markdown backticks) and end with an `Examples:` block of command lines that the
//! command line parser accepts. A new subcommand without examples fails here.

use clap::{CommandFactory, Parser};
use promised::cli::Cli;

/// Runs the binary; returns exit code, stdout and stderr. Environment that would show up in
/// the help (`[env: PROMISED_CONFIG=…]`) is removed.
fn promised(args: &[&str]) -> (i32, String, String) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_promised"))
        .args(args)
        .env_remove("PROMISED_CONFIG")
        .env_remove("PROMISED_LOG")
        .env_remove("PROMISED_LOG_FORMAT")
        .env("NO_COLOR", "1")
        .output()
        .expect("run promised");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8(out.stdout).expect("UTF-8 stdout"),
        String::from_utf8(out.stderr).expect("UTF-8 stderr"),
    )
}

/// The subcommands a help text lists under `Commands:`, without clap's own `help`.
fn listed_subcommands(help: &str) -> Vec<String> {
    let mut lines = help.lines().skip_while(|l| l.trim_end() != "Commands:");
    lines.next();
    lines
        .take_while(|l| l.starts_with("  "))
        .filter_map(|l| l.split_whitespace().next())
        .filter(|c| *c != "help")
        .map(str::to_string)
        .collect()
}

/// Every command path, top level (empty) first, found by walking `--help`.
fn all_commands() -> Vec<Vec<String>> {
    let mut found = vec![vec![]];
    let mut i = 0;
    while i < found.len() {
        let path = found[i].clone();
        let mut args: Vec<&str> = path.iter().map(String::as_str).collect();
        args.push("--help");
        let (code, out, err) = promised(&args);
        assert_eq!(code, 0, "promised {args:?}: {err}");
        for sub in listed_subcommands(&out) {
            let mut p = path.clone();
            p.push(sub);
            found.push(p);
        }
        i += 1;
    }
    found
}

/// Splits an example line as a shell would, for the single quotes the examples use.
fn shell_words(line: &str) -> Vec<String> {
    let mut words = vec![];
    let mut word: Option<String> = None;
    let mut quoted = false;
    for c in line.chars() {
        match c {
            '\'' => {
                quoted = !quoted;
                word.get_or_insert_with(String::new);
            }
            c if c.is_whitespace() && !quoted => {
                words.extend(word.take());
            }
            c => word.get_or_insert_with(String::new).push(c),
        }
    }
    assert!(!quoted, "unbalanced quote in {line:?}");
    words.extend(word);
    words
}

/// The example lines at the end of a help text; panics unless the text ends with an
/// `Examples:` block of lines starting with `  promised `.
fn examples<'a>(what: &str, help: &'a str) -> Vec<&'a str> {
    let (_, block) = help
        .rsplit_once("\nExamples:\n")
        .unwrap_or_else(|| panic!("{what}: no Examples: block in\n{help}"));
    let lines: Vec<&str> = block.lines().filter(|l| !l.trim().is_empty()).collect();
    assert!(
        !lines.is_empty(),
        "{what}: empty Examples: block in\n{help}"
    );
    for l in &lines {
        assert!(
            l.starts_with("  promised "),
            "{what}: Examples: must end the help, each line a command line `  promised …`; got {l:?} in\n{help}"
        );
    }
    lines
}

#[test]
fn clap_definitions_are_consistent() {
    Cli::command().debug_assert();
}

#[test]
fn every_help_is_plain_text_and_ends_with_examples() {
    let commands = all_commands();
    let names: Vec<String> = commands.iter().map(|p| p.join(" ")).collect();
    // The walk found the subcommands (so a broken `Commands:` parse cannot pass as "none").
    for want in [
        "",
        "validate",
        "reconcile",
        "status",
        "run",
        "pipeline",
        "pipeline run",
    ] {
        assert!(names.iter().any(|n| n == want), "{want:?} not in {names:?}");
    }
    for path in &commands {
        let name = format!("promised {}", path.join(" "));
        let name = name.trim_end();
        for flag in ["--help", "-h"] {
            let mut args: Vec<&str> = path.iter().map(String::as_str).collect();
            args.push(flag);
            let what = format!("{name} {flag}");
            let (code, out, err) = promised(&args);
            assert_eq!(code, 0, "{what}: exit code; stderr: {err}");
            assert!(err.is_empty(), "{what}: stderr: {err}");
            for bad in ["[`", "::", "`", "Option<", "](", "\u{1b}["] {
                assert!(
                    !out.contains(bad),
                    "{what}: help contains {bad:?}, which is not plain text for users:\n{out}"
                );
            }
            for line in examples(&what, &out) {
                // An example of `promised pipeline run` runs that subcommand.
                assert!(
                    line.trim_start().starts_with(name),
                    "{what}: example {line:?} does not run {name}"
                );
                let words = shell_words(line);
                if let Err(e) = Cli::try_parse_from(&words) {
                    panic!("{what}: example {line:?} does not parse: {e}");
                }
            }
        }
        // `promised help <command>` prints the same as `promised <command> --help`.
        let mut args = vec!["help"];
        args.extend(path.iter().map(String::as_str));
        let (code, out, err) = promised(&args);
        let mut long: Vec<&str> = path.iter().map(String::as_str).collect();
        long.push("--help");
        assert_eq!(code, 0, "promised {args:?}: {err}");
        assert_eq!(out, promised(&long).1, "promised {args:?}");
    }
}

#[test]
fn version_prints_name_and_version() {
    for flag in ["--version", "-V"] {
        let (code, out, err) = promised(&[flag]);
        assert_eq!(code, 0, "{flag}: {err}");
        assert_eq!(
            out,
            format!("promised {}\n", env!("CARGO_PKG_VERSION")),
            "{flag}"
        );
    }
}
