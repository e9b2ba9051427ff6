//! `promised … --help` is written for users (platform engineers, not Rust developers): the
//! real binary's `-h` and `--help` of the top level and of every subcommand, found by walking
//! the `Commands:` lists, exit 0, read as plain text (no rustdoc links, no Rust paths or
//! types, no Markdown backticks) and end with an `Examples:` block of command lines that the
//! command line parser accepts. A new subcommand without examples fails here. The same holds
//! for the help clap renders for every subcommand found through `Cli::command()`, and the
//! walk of the binary's help must find each of them.

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

/// Every command path clap knows, top level (empty) first, without clap's own `help` and
/// hidden commands.
fn clap_commands(cmd: &clap::Command, path: Vec<String>, out: &mut Vec<Vec<String>>) {
    out.push(path.clone());
    for sub in cmd.get_subcommands() {
        if sub.get_name() == "help" || sub.is_hide_set() {
            continue;
        }
        let mut p = path.clone();
        p.push(sub.get_name().to_string());
        clap_commands(sub, p, out);
    }
}

/// The help texts clap renders for `promised` and every subcommand (walked through
/// `Cli::command()`, so none can be missed), short and long: plain text for users, ending
/// with examples of that command, and the binary's walk finds every one of them.
#[test]
fn every_subcommand_clap_knows_has_plain_help_with_examples() {
    let mut top = Cli::command();
    top.build();
    let mut paths = vec![];
    clap_commands(&top, vec![], &mut paths);
    assert!(paths.len() >= 7, "too few commands: {paths:?}");
    let mut walked = all_commands();
    walked.sort();
    let mut known = paths.clone();
    known.sort();
    assert_eq!(
        walked, known,
        "walking --help must find every subcommand clap defines"
    );
    for path in &paths {
        let name = format!("promised {}", path.join(" "));
        let name = name.trim_end().to_string();
        let mut cmd = &mut top;
        for p in path {
            cmd = cmd
                .find_subcommand_mut(p)
                .unwrap_or_else(|| panic!("{name}: no subcommand {p}"));
        }
        for (kind, help) in [
            ("long help", cmd.render_long_help().to_string()),
            ("short help", cmd.render_help().to_string()),
        ] {
            let what = format!("{name} ({kind})");
            for bad in ["[`", "::"] {
                assert!(
                    !help.contains(bad),
                    "{what}: contains {bad:?} (a rustdoc link or Rust path), not plain text:\n{help}"
                );
            }
            let lines = examples(&what, &help);
            assert!(
                lines.iter().any(|l| l.trim_start().starts_with(&name)),
                "{what}: no example runs {name}:\n{help}"
            );
        }
    }
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
        "images",
        "images pull",
        "images prune",
        "images list",
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
