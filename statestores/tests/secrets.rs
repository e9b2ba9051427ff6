//! Secrets never reach process arguments, errors or commits, and can come from the environment.
//!
//! The scenario runs in a child process of this test binary (`#[ignore]`d, started explicitly)
//! so that it can get its own `PATH` (a `git` shim that logs every argv) and its own
//! `PROMISED_SECRET_*` variables without mutating this process's environment.

#![allow(missing_docs)]

mod common;

use std::os::unix::fs::PermissionsExt;
use std::process::Command;

use base64::Engine;
use statestores::git::{GitOptions, GitStateStoreSpec, SecretRef};
use statestores::{ChangeSet, FileWrite, GitStateStore, Owner, PlacementWrite, StateStore};

const PASSWORD: &str = "env-Pa55-never-in-argv";

#[test]
fn secrets_stay_out_of_argv_and_come_from_the_environment() {
    let tmp = tempfile::tempdir().unwrap();
    let srv = tmp.path().join("srv");
    std::fs::create_dir_all(&srv).unwrap();
    common::init_bare(&srv.join("repo.git"));
    let server = common::HttpServer::start(&srv, "carol", PASSWORD);

    let real_git = String::from_utf8(
        Command::new("sh")
            .args(["-c", "command -v git"])
            .output()
            .unwrap()
            .stdout,
    )
    .unwrap();
    let shim_dir = tmp.path().join("shim");
    std::fs::create_dir_all(&shim_dir).unwrap();
    let log = tmp.path().join("argv.log");
    let shim = shim_dir.join("git");
    std::fs::write(
        &shim,
        format!(
            "#!/bin/sh\nprintf '%s\\n' \"$*\" >> '{}'\nexec '{}' \"$@\"\n",
            log.display(),
            real_git.trim()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&shim, std::fs::Permissions::from_mode(0o755)).unwrap();

    let status = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "child_scenario",
            "--include-ignored",
            "--nocapture",
        ])
        .env(
            "PATH",
            format!("{}:{}", shim_dir.display(), std::env::var("PATH").unwrap()),
        )
        .env(
            "PROMISED_TEST_CHILD_URL",
            format!("http://127.0.0.1:{}/repo.git", server.port),
        )
        .env("PROMISED_TEST_CHILD_STATE", tmp.path().join("state"))
        .env("PROMISED_SECRET_ENV_CREDS_USERNAME", "carol")
        .env("PROMISED_SECRET_ENV_CREDS_PASSWORD", PASSWORD)
        .status()
        .unwrap();
    assert!(status.success(), "child scenario failed");

    let argv = std::fs::read_to_string(&log).unwrap();
    assert!(
        argv.contains("push --porcelain"),
        "the shim saw the push: {argv}"
    );
    let b64 = base64::engine::general_purpose::STANDARD.encode(format!("carol:{PASSWORD}"));
    assert!(!argv.contains(PASSWORD) && !argv.contains(&b64), "{argv}");

    let view = common::View::of(&format!(
        "http://carol:{PASSWORD}@127.0.0.1:{}/repo.git",
        server.port
    ));
    let all = common::git(Some(&view.path()), &["log", "--format=%an %ae %B"]);
    assert!(!all.contains(PASSWORD));
    assert_eq!(view.read("d/x.yaml").unwrap(), "x: 1\n");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "run by secrets_stay_out_of_argv_and_come_from_the_environment in a child process"]
async fn child_scenario() {
    let (Ok(url), Ok(state)) = (
        std::env::var("PROMISED_TEST_CHILD_URL"),
        std::env::var("PROMISED_TEST_CHILD_STATE"),
    ) else {
        return;
    };
    let mut spec = GitStateStoreSpec::new(url);
    spec.secret_ref = Some(SecretRef {
        name: "env-creds".into(),
        namespace: "default".into(),
    });
    let store = GitStateStore::open("env", spec, GitOptions::new(state)).unwrap();
    store.check().await.unwrap();
    let cs = ChangeSet {
        writes: vec![PlacementWrite {
            owner: Owner {
                key: "d/x".into(),
                destination: "d".into(),
                promise: "p".into(),
                resource: Some("ns/x".into()),
                pipeline: None,
            }
            .into(),
            files: vec![FileWrite {
                path: "d/x.yaml".into(),
                content: b"x: 1\n".to_vec(),
            }],
        }],
        ..Default::default()
    };
    let out = store.apply(&cs).await.unwrap();
    assert!(out.version.is_some());
}
