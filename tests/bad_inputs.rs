//! The bad-input corpus (issue 23 part 3): every case under `testdata/bad/<NN-name>/` is a
//! fragment of a config repo laid over the shared good base `testdata/bad/_base/` (a Promise
//! `app` whose `sandbox: none` shell pipeline `render` behaves badly on demand by the request's
//! `spec.size`, a local Git state store `local`, a Destination `dev` and one GOOD request
//! `app/default/good`), run with the daemon config `testdata/bad/_promised.yaml`
//! (`pipelineTimeout: 2s`, `maxOutputBytes: 1000000`, `maxLogBytes: 65536`) plus the case's
//! own `daemon.yaml` keys when it has one (the image cases configure `images:` and the
//! bubblewrap sandbox the image runtime needs; they are skipped without bubblewrap unless
//! `PROMISED_REQUIRE_SANDBOX` is set).
//!
//! Each case's `expect.txt` holds one check per line (`#` starts a comment):
//! - `validate-exit: N` / `reconcile-exit: N`: the exit code of `promised validate` /
//!   `promised reconcile`;
//! - `message: TEXT`: TEXT appears in the output of both `validate` and `reconcile`;
//! - `reconcile: TEXT`: TEXT appears in the output of `reconcile`;
//! - `failed: KEY`: the object KEY (as `promised status` names it) is not `Reconciled`, and
//!   none of its output is in the state store;
//! - `status: TEXT`: TEXT appears in the status message of every `failed:` object;
//! - `reconciled: KEY`: the object KEY is `Reconciled` (bad input that promised accepts);
//! - `output-under: BYTES`: `reconcile` prints less than BYTES (stdout and stderr together);
//! - `generate: huge-document | file-name-not-utf8`: input built here rather than committed
//!   (a 17 MiB file, over the 16 MiB cap; a file name that is not UTF-8).
//!
//! Every case also checks that the good request is `Reconciled` with its `app.yaml` in the
//! state store, so one bad object never blocks the others. All failures are collected and
//! reported together. The pipelines run with `sandbox: none`: no bubblewrap needed.

mod common;

use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::{copy_dir, repo_root};

/// One case's expectations, parsed from its `expect.txt`.
#[derive(Default)]
struct Expect {
    validate_exit: Option<i32>,
    reconcile_exit: Option<i32>,
    message: Vec<String>,
    reconcile: Vec<String>,
    failed: Vec<String>,
    status: Vec<String>,
    reconciled: Vec<String>,
    generate: Vec<String>,
    output_under: Option<usize>,
}

fn parse_expect(path: &Path) -> Result<Expect, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let mut x = Expect::default();
    for (n, line) in text.lines().enumerate() {
        if line.trim().is_empty() || line.starts_with('#') {
            continue;
        }
        let (key, value) = line
            .split_once(": ")
            .ok_or_else(|| format!("{}:{}: expected `key: value`", path.display(), n + 1))?;
        let value = value.to_string();
        let exit = || {
            value
                .parse::<i32>()
                .map_err(|e| format!("{}:{}: {e}", path.display(), n + 1))
        };
        match key {
            "validate-exit" => x.validate_exit = Some(exit()?),
            "reconcile-exit" => x.reconcile_exit = Some(exit()?),
            "message" => x.message.push(value),
            "reconcile" => x.reconcile.push(value),
            "failed" => x.failed.push(value),
            "status" => x.status.push(value),
            "reconciled" => x.reconciled.push(value),
            "generate" => x.generate.push(value),
            "output-under" => {
                x.output_under = Some(
                    value
                        .parse()
                        .map_err(|e| format!("{}:{}: {e}", path.display(), n + 1))?,
                )
            }
            _ => return Err(format!("{}:{}: unknown key {key:?}", path.display(), n + 1)),
        }
    }
    Ok(x)
}

/// Builds a `generate:` input in the config repo at `config`.
fn generate(config: &Path, what: &str) -> Result<(), String> {
    let request = |name: &str, extra: &str| {
        format!(
            "apiVersion: example.com/v1\nkind: App\nmetadata:\n  name: {name}\n  namespace: default\nspec:\n  size: small\n{extra}"
        )
    };
    match what {
        "huge-document" => {
            let owner = format!("  owner: {}\n", "a".repeat(17 * 1024 * 1024));
            std::fs::write(config.join("requests/huge.yaml"), request("bad", &owner))
        }
        "file-name-not-utf8" => {
            let name = std::ffi::OsStr::from_bytes(b"bad\xff.yaml");
            std::fs::write(config.join("requests").join(name), request("bad", ""))
        }
        other => return Err(format!("unknown generate: {other}")),
    }
    .map_err(|e| format!("generate {what}: {e}"))
}

/// `promised` with `args`, without the caller's log settings; (exit code, stdout + stderr).
fn run(args: &[&str]) -> (i32, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_promised"))
        .args(args)
        .env_remove("PROMISED_LOG")
        .env_remove("PROMISED_LOG_FORMAT")
        .output()
        .expect("promised runs");
    let mut text = String::from_utf8_lossy(&out.stdout).into_owned();
    text.push_str(&String::from_utf8_lossy(&out.stderr));
    (out.status.code().unwrap_or(-1), text)
}

/// The rows of `promised status --output json` for the state directory `state`.
fn status_rows(state: &Path) -> Vec<serde_json::Value> {
    let (_, out) = run(&[
        "status",
        "--state-dir",
        state.to_str().expect("utf-8 path"),
        "--output",
        "json",
        "--listen",
        "127.0.0.1:1",
    ]);
    match serde_json::from_str::<serde_json::Value>(&out) {
        Ok(serde_json::Value::Array(rows)) => rows,
        _ => Vec::new(),
    }
}

/// The file paths in the `main` branch of the local Git state store under `state`.
fn store_files(state: &Path) -> Vec<String> {
    let out = Command::new("git")
        .arg("--git-dir")
        .arg(state.join("state.git"))
        .args(["ls-tree", "-r", "--name-only", "main"])
        .output()
        .expect("git runs");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_string)
        .collect()
}

/// Runs one case; returns what did not hold.
fn check_case(case: &Path, work: &Path) -> Vec<String> {
    let mut problems = Vec::new();
    let expect = match parse_expect(&case.join("expect.txt")) {
        Ok(x) => x,
        Err(e) => return vec![e],
    };
    let base = repo_root().join("testdata/bad");
    let config = work.join("config");
    let state = work.join("state");
    copy_dir(&base.join("_base"), &config);
    copy_dir(case, &config);
    std::fs::remove_file(config.join("expect.txt")).expect("expect.txt was copied");
    // A case's own daemon config keys (`daemon.yaml`) replace the shared ones.
    let mut daemon: serde_json::Map<String, serde_json::Value> =
        serde_saphyr::from_str(&std::fs::read_to_string(base.join("_promised.yaml")).unwrap())
            .unwrap();
    if let Ok(extra) = std::fs::read_to_string(case.join("daemon.yaml")) {
        let extra: serde_json::Map<String, serde_json::Value> =
            serde_saphyr::from_str(&extra).unwrap();
        if extra.get("sandbox").is_some_and(|s| s == "bwrap") && !common::bwrap_works() {
            assert!(
                std::env::var_os("PROMISED_REQUIRE_SANDBOX").is_none(),
                "{}: bubblewrap cannot create a sandbox",
                case.display()
            );
            eprintln!("skipped {}: no bubblewrap", case.display());
            return Vec::new();
        }
        daemon.extend(extra);
        std::fs::remove_file(config.join("daemon.yaml")).expect("daemon.yaml was copied");
    }
    let daemon_config = work.join("promised.yaml");
    std::fs::write(&daemon_config, serde_json::to_string(&daemon).unwrap()).unwrap();
    for what in &expect.generate {
        if let Err(e) = generate(&config, what) {
            return vec![e];
        }
    }
    let config_arg = config.to_str().expect("utf-8 path");

    let (code, validate) = run(&["validate", config_arg]);
    if let Some(want) = expect.validate_exit
        && code != want
    {
        problems.push(format!("validate exited {code}, expected {want}"));
    }
    let (code, reconcile) = run(&[
        "reconcile",
        "--config",
        config_arg,
        "--state-dir",
        state.to_str().expect("utf-8 path"),
        "--daemon-config",
        daemon_config.to_str().expect("utf-8 path"),
    ]);
    if let Some(want) = expect.reconcile_exit
        && code != want
    {
        problems.push(format!("reconcile exited {code}, expected {want}"));
    }
    if let Some(cap) = expect.output_under
        && reconcile.len() >= cap
    {
        problems.push(format!(
            "reconcile printed {} bytes, expected under {cap}",
            reconcile.len()
        ));
    }
    for m in &expect.message {
        if !validate.contains(m.as_str()) {
            problems.push(format!("validate output lacks {m:?}"));
        }
    }
    for m in expect.message.iter().chain(&expect.reconcile) {
        if !reconcile.contains(m.as_str()) {
            problems.push(format!("reconcile output lacks {m:?}"));
        }
    }

    let rows = status_rows(&state);
    let row = |key: &str| rows.iter().find(|r| r["key"] == key);
    let reconciled = |key: &str| {
        row(key).is_some_and(|r| {
            r["status"]["conditions"].as_array().is_some_and(|cs| {
                cs.iter()
                    .any(|c| c["type"] == "Reconciled" && c["status"] == "True")
            })
        })
    };
    let files = store_files(&state);
    let output_of = |key: &str| -> Vec<&String> {
        // Request `app/<namespace>/<name>` writes under `dev/resources/<namespace>/app/<name>/`.
        let mut parts = key.splitn(3, '/');
        let (Some(_), Some(ns), Some(name)) = (parts.next(), parts.next(), parts.next()) else {
            return Vec::new();
        };
        let prefix = format!("dev/resources/{ns}/app/{name}/");
        files.iter().filter(|f| f.starts_with(&prefix)).collect()
    };

    for key in expect
        .reconciled
        .iter()
        .map(String::as_str)
        .chain(["app/default/good"])
    {
        if !reconciled(key) {
            problems.push(format!("{key} is not Reconciled: {:?}", row(key)));
        }
        if !output_of(key).iter().any(|f| f.ends_with("/app.yaml")) {
            problems.push(format!(
                "no app.yaml of {key} in the state store: {files:?}"
            ));
        }
    }
    for key in &expect.failed {
        match row(key) {
            None => problems.push(format!("no status row for {key}")),
            Some(r) => {
                if reconciled(key) {
                    problems.push(format!("{key} is Reconciled, expected it to fail"));
                }
                let message = r["status"]["message"].as_str().unwrap_or_default();
                for s in &expect.status {
                    if !message.contains(s.as_str()) {
                        problems.push(format!("{key} status message {message:?} lacks {s:?}"));
                    }
                }
            }
        }
        let leaked = output_of(key);
        if !leaked.is_empty() {
            problems.push(format!(
                "{key} failed but has output in the store: {leaked:?}"
            ));
        }
    }
    if !problems.is_empty() {
        problems.push(format!(
            "--- validate output:\n{validate}--- reconcile output:\n{reconcile}"
        ));
    }
    problems
}

/// The corpus holds at least 60 cases and each one is answered as its `expect.txt` says,
/// with the good request reconciled next to it.
#[test]
fn every_bad_input_fails_only_its_own_object_with_a_clear_message() {
    let dir = repo_root().join("testdata/bad");
    let mut cases: Vec<PathBuf> = std::fs::read_dir(&dir)
        .expect("testdata/bad exists")
        .map(|e| e.expect("readable entry").path())
        .filter(|p| p.is_dir() && !p.file_name().unwrap().to_string_lossy().starts_with('_'))
        .collect();
    cases.sort();
    assert!(cases.len() >= 60, "only {} bad-input cases", cases.len());

    let tmp = tempfile::tempdir().unwrap();
    let mut failures = Vec::new();
    for case in &cases {
        let name = case.file_name().unwrap().to_string_lossy().into_owned();
        let work = tmp.path().join(&name);
        let problems = check_case(case, &work);
        if !problems.is_empty() {
            failures.push(format!("{name}:\n  {}", problems.join("\n  ")));
        }
        // A case's state store and generated files are not needed once it is checked.
        let _ = std::fs::remove_dir_all(&work);
    }
    assert!(
        failures.is_empty(),
        "{} of {} bad-input cases failed:\n\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n\n")
    );
    println!("{} bad-input cases checked", cases.len());
}
