//! Outages and outside edits (issue 23 part 2), each against real servers on 127.0.0.1 and the
//! real `promised run`:
//! - the Git state store's remote (`git daemon`) stopped for 30 s in the middle of a pass;
//! - the S3 server (s3s-fs) stopped for 30 s in the middle of a pass;
//! - the state store branch edited and force-pushed by a person in the middle of a pass;
//! - the config remote (`git daemon`) unreachable;
//! - the state directory on a full file system (a 16 MiB tmpfs) and read-only, for
//!   `promised reconcile` and for `promised run`.
//!
//! Helpers (the daemon, a `git daemon` that stops and starts on its port, the gated pipeline,
//! store checks) are in `outages_support/`.
//!
//! "In the middle of a pass" is made exact, not timed: the pipeline of the request the test
//! adds writes a mark and waits for a gate file (the pipelines run with `sandbox: none`, so
//! they see the test's directory); the test acts on the server, then opens the gate. Nothing
//! asserts elapsed time: the test waits for each event (with generous limits that only bound
//! a hang).

mod common;
mod outages_support;
#[path = "../statestores/tests/s3_server/mod.rs"]
mod s3_server;

use std::process::Command;
use std::time::{Duration, Instant};

use common::git;
use outages_support::*;

#[test]
fn git_state_store_remote_down_for_30s_mid_pass() {
    let tmp = tempfile::tempdir().unwrap();
    let mut server = GitServer::new(&tmp.path().join("srv"));
    let url = server.bare_repo("state.git");
    let repo = server.base.join("state.git");
    let (config, gates) = config_dir(
        tmp.path(),
        &format!(
            "apiVersion: platform.kratix.io/v1alpha1\nkind: GitStateStore\nmetadata:\n  name: store\nspec:\n  url: {url}\n  branch: main\n"
        ),
        "GitStateStore",
    );
    add_request(&config, "one");
    let state = tmp.path().join("state");
    let mut d = Daemon::start(
        &[
            "--config",
            config.to_str().unwrap(),
            "--state-dir",
            state.to_str().unwrap(),
        ],
        tmp.path(),
        &[],
    );
    d.wait_for("the first request committed", |d| {
        tree(&repo).contains_key(&app_file("one")) && is_reconciled(d, "app/default/one")
    });

    // A second request; while its pipeline runs, the remote goes away.
    gates.hold("two");
    add_request(&config, "two");
    d.wait_for("the pipeline of two started", |_| gates.started("two"));
    server.stop();
    let down = Instant::now();
    gates.open("two");

    // The write fails; the daemon stays up and says why, on every surface.
    let key = "GitStateStore/store";
    d.wait_for("the state store not ready", |d| {
        store_ready(d, key).is_some_and(|(s, _)| s == "False")
    });
    // The refused connection, on one line (the table shows first lines): the in-process
    // push names the server as `git daemon <host>:<port>`.
    let server_addr = url.trim_start_matches("git://").split('/').next().unwrap();
    let says_why = |text: &str| {
        text.contains(&format!("transport error talking to {url}"))
            && text.contains(&format!("git daemon {server_addr}"))
            && text.contains("Connection refused")
    };
    let (_, message) = store_ready(&d, key).unwrap();
    assert!(says_why(&message), "{message}");
    let (status, reason, message) = reconciled(d.rows().get("app/default/two")).unwrap();
    assert_eq!(
        (status.as_str(), reason.as_str()),
        ("False", "WorksFailing")
    );
    let row = &d.rows()["app/default/two"];
    assert!(
        says_why(row["status"]["message"].as_str().unwrap()),
        "{row} {message}"
    );
    let (code, out) = d.status_cli(&[key]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("NotReady") && says_why(&out), "{out}");
    let (_, table) = d.status_cli(&[]);
    let line = |prefix: &str| {
        table
            .lines()
            .find(|l| l.starts_with(prefix))
            .unwrap_or_else(|| panic!("no {prefix} in {table}"))
            .to_string()
    };
    assert!(says_why(&line("app/default/two")), "{table}");
    assert!(says_why(&line("GitStateStore/store")), "{table}");
    assert!(line("app/default/one").contains("Reconciled"), "{table}");
    while down.elapsed() < OUTAGE {
        assert!(d.alive(), "the daemon stays up: {}", d.log());
        std::thread::sleep(Duration::from_millis(500));
    }
    assert_eq!(d.get("/healthz").map(|(c, _)| c), Some(200));

    // Back on the same port: the next retry writes.
    server.start();
    d.wait_for("the second request committed", |d| {
        tree(&repo).contains_key(&app_file("two"))
            && is_reconciled(d, "app/default/two")
            && store_ready(d, key).is_some_and(|(s, _)| s == "True")
    });
    let owned = check_index(&repo, &[]);
    assert!(owned.contains(&app_file("one")) && owned.contains(&app_file("two")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_server_down_for_30s_mid_pass() {
    use s3_server::{ACCESS_KEY, S3Server, SECRET_KEY};
    let tmp = tempfile::tempdir().unwrap();
    let mut s3 = S3Server::start(&tmp.path().join("s3")).await;
    let (config, gates) = config_dir(
        tmp.path(),
        &format!(
            "apiVersion: platform.kratix.io/v1alpha1\nkind: BucketStateStore\nmetadata:\n  name: store\nspec:\n  bucketName: {}\n  endpoint: {}\n  insecure: true\n  path: state/\n  authMethod: accessKey\n  secretRef:\n    name: minio-creds\n    namespace: default\n",
            s3_server::BUCKET,
            s3.endpoint()
        ),
        "BucketStateStore",
    );
    add_request(&config, "one");
    let state = tmp.path().join("state");
    let key = "BucketStateStore/store";
    let bucket = s3.file("state");
    let object = |name: &str| bucket.join(app_file(name));
    let mut d = blocking(|| {
        let mut d = Daemon::start(
            &[
                "--config",
                config.to_str().unwrap(),
                "--state-dir",
                state.to_str().unwrap(),
            ],
            tmp.path(),
            &[
                ("PROMISED_SECRET_MINIO_CREDS_ACCESSKEYID", ACCESS_KEY),
                ("PROMISED_SECRET_MINIO_CREDS_SECRETACCESSKEY", SECRET_KEY),
            ],
        );
        d.wait_for("the first request written", |d| {
            object("one").is_file() && is_reconciled(d, "app/default/one")
        });
        gates.hold("two");
        add_request(&config, "two");
        d.wait_for("the pipeline of two started", |_| gates.started("two"));
        d
    });
    s3.stop().await;
    let down = Instant::now();
    blocking(|| {
        gates.open("two");
        d.wait_for("the state store not ready", |d| {
            store_ready(d, key).is_some_and(|(s, _)| s == "False")
        });
        // The S3 client's own text, on one line.
        let says_why = |text: &str| {
            text.contains("transport error talking to s3://kratix/state at http://127.0.0.1:")
                && text.contains("Connection refused")
        };
        let (_, message) = store_ready(&d, key).unwrap();
        assert!(says_why(&message), "{message}");
        let (status, reason, _) = reconciled(d.rows().get("app/default/two")).unwrap();
        assert_eq!(
            (status.as_str(), reason.as_str()),
            ("False", "WorksFailing")
        );
        let (code, out) = d.status_cli(&[key]);
        assert_eq!(code, 0, "{out}");
        assert!(out.contains("NotReady") && says_why(&out), "{out}");
        let (_, table) = d.status_cli(&[]);
        let two = table
            .lines()
            .find(|l| l.starts_with("app/default/two"))
            .unwrap();
        assert!(says_why(two), "{table}");
        while down.elapsed() < OUTAGE {
            assert!(d.alive(), "the daemon stays up: {}", d.log());
            std::thread::sleep(Duration::from_millis(500));
        }
        assert_eq!(d.get("/healthz").map(|(c, _)| c), Some(200));
    });
    s3.restart().await;
    blocking(|| {
        d.wait_for("the second request written", |d| {
            object("two").is_file()
                && is_reconciled(d, "app/default/two")
                && store_ready(d, key).is_some_and(|(s, _)| s == "True")
        });
        assert!(object("one").is_file(), "nothing lost");
    });
}

#[test]
fn state_store_branch_edited_and_force_pushed_by_a_person() {
    let tmp = tempfile::tempdir().unwrap();
    let server = GitServer::new(&tmp.path().join("srv"));
    let url = server.bare_repo("state.git");
    let repo = server.base.join("state.git");
    let (config, gates) = config_dir(
        tmp.path(),
        &format!(
            "apiVersion: platform.kratix.io/v1alpha1\nkind: GitStateStore\nmetadata:\n  name: store\nspec:\n  url: {url}\n  branch: main\n"
        ),
        "GitStateStore",
    );
    add_request(&config, "one");
    add_request(&config, "three");
    let state = tmp.path().join("state");
    let mut d = Daemon::start(
        &[
            "--config",
            config.to_str().unwrap(),
            "--state-dir",
            state.to_str().unwrap(),
        ],
        tmp.path(),
        &[],
    );
    d.wait_for("the first requests committed", |d| {
        tree(&repo).contains_key(&app_file("three")) && is_reconciled(d, "app/default/three")
    });
    let ours = tree(&repo);

    // Mid-pass: a person rewrites the branch (a new root commit: force-pushed) without one
    // of our files, with another changed, and with files of their own.
    gates.hold("two");
    add_request(&config, "two");
    d.wait_for("the pipeline of two started", |_| gates.started("two"));
    let work = tmp.path().join("person");
    person_clone(&repo, &work);
    git(&work, &["checkout", "-q", "--orphan", "rewritten"]);
    git(&work, &["rm", "-qf", &app_file("one")]);
    std::fs::write(work.join(app_file("three")), "kind: Edited\n").unwrap();
    std::fs::create_dir_all(work.join("people")).unwrap();
    std::fs::write(work.join("people/notes.yaml"), "note: mine\n").unwrap();
    std::fs::write(work.join("dev/README.md"), "# ours too\n").unwrap();
    git(&work, &["add", "-A"]);
    git(&work, &["commit", "-qm", "history rewritten by a person"]);
    git(
        &work,
        &["push", "-q", "--force", "origin", "rewritten:main"],
    );
    gates.open("two");

    let foreign = ["people/notes.yaml", "dev/README.md"];
    d.wait_for("two committed on top of the person's branch", |d| {
        tree(&repo).contains_key(&app_file("two")) && is_reconciled(d, "app/default/two")
    });
    let now = tree(&repo);
    for f in foreign {
        assert!(now.contains_key(f), "the person's {f} is kept: {now:#?}");
    }
    for (path, oid) in &ours {
        if !path.starts_with(".promised/") {
            assert_eq!(now.get(path), Some(oid), "our {path} is restored");
        }
    }
    check_index(&repo, &foreign);

    // Between passes: a person deletes our index and edits our file in a normal commit.
    git(&work, &["fetch", "-q", "origin"]);
    git(&work, &["reset", "-q", "--hard", "origin/main"]);
    git(&work, &["rm", "-q", "-r", ".promised"]);
    std::fs::write(work.join(app_file("two")), "kind: Edited\n").unwrap();
    git(&work, &["commit", "-qam", "index deleted by a person"]);
    git(&work, &["push", "-q", "origin", "HEAD:main"]);
    let edited = tree(&repo);
    // A config change starts the next pass at once (no drift check interval to wait for).
    add_request(&config, "four");
    d.wait_for("four committed and the edits repaired", |d| {
        let t = tree(&repo);
        t.contains_key(&app_file("four"))
            && t.get(&app_file("two")) != edited.get(&app_file("two"))
            && is_reconciled(d, "app/default/four")
    });
    let owned = check_index(&repo, &foreign);
    for name in ["one", "two", "three", "four"] {
        assert!(owned.contains(&app_file(name)), "{name} indexed: {owned:?}");
    }
    let now = tree(&repo);
    for (path, oid) in &ours {
        if !path.starts_with(".promised/") {
            assert_eq!(now.get(path), Some(oid), "our {path} is restored");
        }
    }
}

#[test]
fn config_remote_unreachable_keeps_the_last_good_config() {
    let tmp = tempfile::tempdir().unwrap();
    let mut server = GitServer::new(&tmp.path().join("srv"));
    let config_url = server.bare_repo("config.git");
    // A local Git state store in the state directory (`url: state.git`).
    let (work, _gates) = config_dir(
        tmp.path(),
        "apiVersion: platform.kratix.io/v1alpha1\nkind: GitStateStore\nmetadata:\n  name: store\nspec:\n  url: state.git\n",
        "GitStateStore",
    );
    add_request(&work, "one");
    git(&work, &["init", "-q"]);
    git(&work, &["add", "-A"]);
    git(&work, &["commit", "-qm", "config"]);
    git(&work, &["push", "-q", &config_url, "HEAD:main"]);
    let state = tmp.path().join("state");
    let store = state.join("state.git");
    let args = [
        "--config",
        config_url.as_str(),
        "--ref",
        "main",
        "--state-dir",
        state.to_str().unwrap(),
        "--poll-interval",
        "300ms",
    ];
    let mut d = Daemon::start(&args, tmp.path(), &[]);
    d.wait_for("one committed", |d| {
        tree(&store).contains_key(&app_file("one")) && is_reconciled(d, "app/default/one")
    });
    let before = tree(&store);

    server.stop();
    // The poll fails: status says why, on the table's first line and in /readyz.
    let says_why = |text: &str| {
        text.contains("config remote unreachable since")
            && text.contains("Connection refused")
            && text.contains("stays in force")
    };
    d.wait_for("the config remote's outage in `promised status`", |d| {
        says_why(d.status_cli(&[]).1.lines().next().unwrap_or_default())
    });
    let (code, body) = d.get("/readyz").unwrap();
    assert!(says_why(&body), "{body}");
    assert_eq!(
        code, 200,
        "still ready: the last good config is served\n{body}"
    );

    // A pass during the outage (a webhook delivery) reconciles the last good config: it
    // restores our file that a person deleted from the store, and prunes nothing.
    let person = tmp.path().join("person");
    person_clone(&store, &person);
    git(&person, &["rm", "-q", &app_file("one")]);
    git(&person, &["commit", "-qm", "deleted by a person"]);
    git(&person, &["push", "-q", "origin", "HEAD:main"]);
    let n = passes(&d);
    assert_eq!(hook(&d), 202);
    d.wait_for("a pass during the outage", |d| passes(d) > n);
    d.wait_for("the deleted file restored", |_| tree(&store) == before);
    assert!(is_reconciled(&d, "app/default/one"), "{:?}", d.rows());
    assert!(!d.log().contains("reconcile pass failed"), "{}", d.log());
    assert!(d.alive());

    // Back: the outage line goes, new commits are applied.
    server.start();
    add_request(&work, "two");
    git(&work, &["add", "-A"]);
    git(&work, &["commit", "-qm", "two"]);
    git(&work, &["push", "-q", &config_url, "HEAD:main"]);
    d.wait_for("two committed", |d| {
        tree(&store).contains_key(&app_file("two")) && is_reconciled(d, "app/default/two")
    });
    d.wait_for("the outage line gone", |d| {
        !d.status_cli(&[]).1.contains("unreachable")
            && d.get("/readyz")
                .is_some_and(|(_, b)| !b.contains("unreachable"))
    });
    assert!(!state.join("config-unreachable.json").exists());
}

/// The state directory on a full file system, then read-only. One script runs in a user and
/// mount namespace (`unshare --user --map-root-user --mount`: no mount outlives it) with the
/// state directory on a 16 MiB tmpfs: each `promised reconcile` writes its exit code, stdout
/// and stderr to `<out>/<step>.*`, and copies of the state directory are kept for the test.
#[test]
fn state_directory_full_or_read_only() {
    if !can_mount_tmpfs() {
        assert!(
            std::env::var_os("PROMISED_REQUIRE_SANDBOX").is_none(),
            "PROMISED_REQUIRE_SANDBOX is set but no tmpfs can be mounted in a user and mount namespace (unshare --user --map-root-user --mount)"
        );
        eprintln!("skipped: cannot mount a tmpfs in a user and mount namespace here (unshare -rm)");
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let server = GitServer::new(&tmp.path().join("srv"));
    let url = server.bare_repo("state.git");
    let repo = server.base.join("state.git");
    let (config, _gates) = config_dir(
        tmp.path(),
        &format!(
            "apiVersion: platform.kratix.io/v1alpha1\nkind: GitStateStore\nmetadata:\n  name: store\nspec:\n  url: {url}\n  branch: main\n"
        ),
        "GitStateStore",
    );
    add_request(&config, "one");
    // Requests the script adds: two while the file system is full, three while read-only.
    let extra = tmp.path().join("extra");
    std::fs::create_dir_all(&extra).unwrap();
    for name in ["two", "three"] {
        std::fs::write(
            extra.join(format!("{name}.yaml")),
            common::app::request(name, "default"),
        )
        .unwrap();
    }
    let state = tmp.path().join("state");
    std::fs::create_dir_all(&state).unwrap();
    let out = tmp.path().join("out");
    std::fs::create_dir_all(&out).unwrap();
    let daemon_config = tmp.path().join("promised.yaml");
    std::fs::write(&daemon_config, "sandbox: none\n").unwrap();
    let script = r#"set -u
run() {
  "$PROMISED" reconcile --config "$CONFIG" --state-dir "$STATE" --daemon-config "$DC" >"$OUT/$1.out" 2>"$OUT/$1.err"
  echo $? >"$OUT/$1.code"
  git --git-dir "$REPO" ls-tree -r --name-only main >"$OUT/$1.tree"
}
snapshot() { cp -a "$STATE" "$OUT/$1"; rm -f "$OUT/$1/filler"; }
mount -t tmpfs -o size=16m tmpfs "$STATE" || exit 90
run 1-converge
snapshot 1-state
cp "$EXTRA/two.yaml" "$CONFIG/requests/"
dd if=/dev/zero of="$STATE/filler" bs=64k 2>/dev/null
run 2-full
snapshot 2-state
rm -f "$STATE/filler"
run 3-space-back
snapshot 3-state
cp "$EXTRA/three.yaml" "$CONFIG/requests/"
mount -o remount,ro "$STATE" || exit 91
run 4-read-only
mount -o remount,rw "$STATE" || exit 92
snapshot 4-state
run 5-writable
snapshot 5-state
umount "$STATE"
"#;
    let status = Command::new("unshare")
        .args(["--user", "--map-root-user", "--mount", "sh", "-c", script])
        .env("PROMISED", env!("CARGO_BIN_EXE_promised"))
        .env("CONFIG", &config)
        .env("STATE", &state)
        .env("DC", &daemon_config)
        .env("OUT", &out)
        .env("EXTRA", &extra)
        .env("REPO", &repo)
        .status()
        .unwrap();
    assert!(status.success(), "the script: {status}");
    let step = |name: &str| -> (i32, String) {
        let code = std::fs::read_to_string(out.join(format!("{name}.code"))).unwrap();
        let text = std::fs::read_to_string(out.join(format!("{name}.out"))).unwrap()
            + &std::fs::read_to_string(out.join(format!("{name}.err"))).unwrap();
        (code.trim().parse().unwrap(), text)
    };
    let store_tree =
        |name: &str| std::fs::read_to_string(out.join(format!("{name}.tree"))).unwrap();
    let state_json = |name: &str| std::fs::read(out.join(name).join("state.json")).unwrap();
    let state_path = state.display().to_string();

    let (code, text) = step("1-converge");
    assert_eq!(code, 0, "{text}");
    let before = store_tree("1-converge");

    // Full: the run fails naming the state directory's file and the cause; the state
    // directory is as before (no half-written file), the store has no commit.
    let (code, text) = step("2-full");
    assert_ne!(code, 0, "{text}");
    assert!(
        text.contains(&format!("error: state directory {state_path}/"))
            && text.contains("No space left on device"),
        "{text}"
    );
    assert_eq!(
        state_json("2-state"),
        state_json("1-state"),
        "state.json unchanged"
    );
    no_temporary_files(&out.join("2-state"));
    assert_eq!(store_tree("2-full"), before);

    // Space back: converges, the request of the failed run included.
    let (code, text) = step("3-space-back");
    assert_eq!(code, 0, "{text}");
    assert!(store_tree("3-space-back").contains(&app_file("two")));

    // Read-only: the same.
    let (code, text) = step("4-read-only");
    assert_ne!(code, 0, "{text}");
    assert!(
        text.contains(&format!("error: state directory {state_path}/"))
            && text.contains("Read-only file system"),
        "{text}"
    );
    assert_eq!(
        state_json("4-state"),
        state_json("3-state"),
        "state.json unchanged"
    );
    no_temporary_files(&out.join("4-state"));
    assert_eq!(store_tree("4-read-only"), store_tree("3-space-back"));

    // Writable again: converges, nothing lost.
    let (code, text) = step("5-writable");
    assert_eq!(code, 0, "{text}");
    for name in ["one", "two", "three"] {
        assert!(
            text.lines()
                .any(|l| l.contains(&format!("app/default/{name} ")) && l.contains("Reconciled")),
            "{name}: {text}"
        );
    }
    let owned = check_index(&repo, &[]);
    for name in ["one", "two", "three"] {
        assert!(owned.contains(&app_file(name)), "{name} indexed: {owned:?}");
    }
}

/// `promised run` with its state directory on a 16 MiB tmpfs in a user and mount namespace of
/// its own; the test fills the file system and makes it read-only from inside that namespace
/// (`nsenter`). The daemon stays up, `/readyz` answers 503 naming the path and the cause, and it
/// converges once space and write access are back.
#[test]
fn daemon_state_directory_full_or_read_only() {
    if !can_mount_tmpfs() {
        assert!(
            std::env::var_os("PROMISED_REQUIRE_SANDBOX").is_none(),
            "PROMISED_REQUIRE_SANDBOX is set but no tmpfs can be mounted in a user and mount namespace (unshare --user --map-root-user --mount)"
        );
        eprintln!("skipped: cannot mount a tmpfs in a user and mount namespace here (unshare -rm)");
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let server = GitServer::new(&tmp.path().join("srv"));
    let url = server.bare_repo("state.git");
    let repo = server.base.join("state.git");
    let (config, _gates) = config_dir(
        tmp.path(),
        &format!(
            "apiVersion: platform.kratix.io/v1alpha1\nkind: GitStateStore\nmetadata:\n  name: store\nspec:\n  url: {url}\n  branch: main\n"
        ),
        "GitStateStore",
    );
    add_request(&config, "one");
    let state = tmp.path().join("state");
    std::fs::create_dir_all(&state).unwrap();
    let mount = format!(
        "mount -t tmpfs -o size=16m tmpfs '{}' && exec \"$@\"",
        state.display()
    );
    let mut d = Daemon::start_wrapped(
        &[
            "unshare",
            "--user",
            "--map-root-user",
            "--mount",
            "sh",
            "-c",
            &mount,
            "sh",
        ],
        &[
            "--config",
            config.to_str().unwrap(),
            "--state-dir",
            state.to_str().unwrap(),
        ],
        tmp.path(),
        &[],
    );
    // Runs `script` in the daemon's namespaces (where its tmpfs is mounted).
    let pid = d.child.id().to_string();
    let inside = |script: &str| {
        let st = Command::new("nsenter")
            .args([
                "-t",
                &pid,
                "--user",
                "--mount",
                "--preserve-credentials",
                "sh",
                "-c",
                script,
            ])
            .env("STATE", &state)
            .status()
            .unwrap();
        assert!(st.success(), "{script}: {st}");
    };
    d.wait_for("one committed", |d| {
        tree(&repo).contains_key(&app_file("one")) && is_reconciled(d, "app/default/one")
    });
    assert!(
        !state.join("state.json").exists(),
        "the state directory is the daemon's tmpfs"
    );
    let state_path = state.display().to_string();
    let readyz_says = |d: &Daemon, cause: &str| {
        d.get("/readyz").is_some_and(|(c, b)| {
            c == 503
                && b.contains(&format!("last pass failed: state directory {state_path}/"))
                && b.contains(cause)
        })
    };
    let ready = |d: &Daemon| d.get("/readyz").is_some_and(|(c, _)| c == 200);

    for (name, break_it, cause, mend) in [
        (
            "two",
            "dd if=/dev/zero of=\"$STATE/filler\" bs=64k 2>/dev/null; true",
            "No space left on device",
            "rm \"$STATE/filler\"",
        ),
        (
            "three",
            "mount -o remount,ro \"$STATE\"",
            "Read-only file system",
            "mount -o remount,rw \"$STATE\"",
        ),
    ] {
        inside(break_it);
        add_request(&config, name);
        d.wait_for(&format!("/readyz naming {cause}"), |d| {
            readyz_says(d, cause)
        });
        assert!(d.alive());
        assert!(
            is_reconciled(&d, "app/default/one"),
            "the last status is still served"
        );
        inside(mend);
        d.wait_for(&format!("{name} committed"), |d| {
            tree(&repo).contains_key(&app_file(name))
                && is_reconciled(d, &format!("app/default/{name}"))
                && ready(d)
        });
    }
    let owned = check_index(&repo, &[]);
    for name in ["one", "two", "three"] {
        assert!(owned.contains(&app_file(name)), "{name} indexed: {owned:?}");
    }
}
