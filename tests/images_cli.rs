//! `promised images pull|prune|list` with the real binary against a real registry
//! (`docker-registry` on 127.0.0.1, images built by `umoci` from `busybox-static`): pull prints
//! each image's manifest digest and size and says `cached` the second time, a missing tag
//! fails only its own row (exit 1) with the registry's answer, prune keeps what the config
//! repo uses and frees the rest, and without `images:` in the daemon config the commands say
//! how to turn the image runtime on.
//!
//! Skipped with a message when the image tools are missing, unless `PROMISED_REQUIRE_IMAGES`
//! is set (CI sets it). Pulling needs no sandbox.

mod common;
#[path = "common/registry.rs"]
mod registry;

use std::path::{Path, PathBuf};

use registry::{Registry, build_images, tools_available};
use sha2::Digest;

fn sha256(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(sha2::Sha256::digest(bytes)))
}

/// Writes `promises/<name>/promise.yaml`: a Promise whose promise configure pipeline runs
/// `images[0]` and whose promise delete pipeline runs the rest (with `imagePullPolicy` when
/// given).
fn promise(config: &Path, name: &str, images: &[(&str, Option<&str>)]) {
    let dir = config.join("promises").join(name);
    std::fs::create_dir_all(&dir).unwrap();
    let container = |i: usize, (image, policy): &(&str, Option<&str>)| {
        let mut s = format!("              - name: c{i}\n                image: {image}\n");
        if let Some(p) = policy {
            s.push_str(&format!("                imagePullPolicy: {p}\n"));
        }
        s
    };
    let pipeline = |pname: &str, containers: String| {
        format!(
            "        - apiVersion: platform.kratix.io/v1alpha1
          kind: Pipeline
          metadata: {{name: {pname}}}
          spec:
            containers:
{containers}"
        )
    };
    let (first, rest) = images.split_first().unwrap();
    let mut workflows = format!(
        "    promise:\n      configure:\n{}",
        pipeline("setup", container(0, first))
    );
    if !rest.is_empty() {
        let cs: String = rest
            .iter()
            .enumerate()
            .map(|(i, c)| container(i, c))
            .collect();
        workflows.push_str(&format!("      delete:\n{}", pipeline("teardown", cs)));
    }
    std::fs::write(
        dir.join("promise.yaml"),
        format!(
            "apiVersion: platform.kratix.io/v1alpha1
kind: Promise
metadata: {{name: {name}}}
spec:
  workflows:
{workflows}"
        ),
    )
    .unwrap();
}

/// The daemon config: the image runtime on, the registry over plain HTTP.
fn daemon_config(dir: &Path, reg: &Registry) -> PathBuf {
    let path = dir.join("promised.yaml");
    std::fs::write(
        &path,
        format!("images:\n  insecureRegistries: [\"{}\"]\n", reg.host),
    )
    .unwrap();
    path
}

/// `promised images <cmd> --config <config> --daemon-config <dc> --state-dir <state> <extra>`.
fn images(
    cmd: &str,
    config: &Path,
    dc: &Path,
    state: &Path,
    extra: &[&str],
) -> (i32, String, String) {
    let mut args = vec![
        "images",
        cmd,
        "--config",
        config.to_str().unwrap(),
        "--daemon-config",
        dc.to_str().unwrap(),
        "--state-dir",
        state.to_str().unwrap(),
    ];
    args.extend(extra);
    common::promised(&args)
}

/// The JSON rows of `promised images pull --output json`, by image.
fn pull_json(config: &Path, dc: &Path, state: &Path) -> (i32, serde_json::Value, String) {
    let (code, out, err) = images("pull", config, dc, state, &["--output", "json"]);
    let rows: serde_json::Value =
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}\n{err}"));
    (code, rows, err)
}

fn row<'a>(rows: &'a serde_json::Value, image: &str) -> &'a serde_json::Value {
    rows.as_array()
        .unwrap()
        .iter()
        .find(|r| r["image"] == image)
        .unwrap_or_else(|| panic!("no row for {image} in {rows:#}"))
}

/// The manifest digests of the unpacked roots in the cache.
fn roots(state: &Path) -> Vec<String> {
    let mut out: Vec<String> = std::fs::read_dir(state.join("images/roots"))
        .unwrap()
        .map(|e| format!("sha256:{}", e.unwrap().file_name().to_string_lossy()))
        .collect();
    out.sort();
    out
}

/// A registry with `test/app:v1` (image v1) and `test/other:v1` (image v2) pushed.
struct Env {
    dir: tempfile::TempDir,
    reg: Registry,
}

fn env() -> Env {
    let dir = tempfile::tempdir().unwrap();
    let reg = Registry::start(&dir.path().join("reg"));
    let layout = build_images(dir.path());
    reg.push(&layout, "v1", "test/app:v1", &[]);
    reg.push(&layout, "v2", "test/other:v1", &[]);
    Env { dir, reg }
}

#[test]
fn pull_prints_digest_and_size_then_cached_and_prune_keeps_what_the_config_uses() {
    if !tools_available("images_cli") {
        return;
    }
    let e = env();
    let (app, other) = (e.reg.image("test/app:v1"), e.reg.image("test/other:v1"));
    let app_digest = sha256(&e.reg.raw_manifest("test/app:v1"));
    let other_digest = sha256(&e.reg.raw_manifest("test/other:v1"));
    let config = e.dir.path().join("config");
    let state = e.dir.path().join("state");
    promise(&config, "app", &[(&app, None)]);
    promise(
        &config,
        "other",
        &[(&app, None), (&other, Some("IfNotPresent"))],
    );
    let dc = daemon_config(e.dir.path(), &e.reg);

    // First pull: the table names both images, their digests and sizes.
    let (code, out, err) = images("pull", &config, &dc, &state, &[]);
    assert_eq!(code, 0, "{out}\n{err}");
    let line = |out: &str, image: &str| {
        out.lines()
            .find(|l| l.starts_with(&format!("{image} ")))
            .unwrap_or_else(|| panic!("no line for {image} in\n{out}"))
            .to_string()
    };
    for (image, digest) in [(&app, &app_digest), (&other, &other_digest)] {
        let l = line(&out, image);
        assert!(l.contains(digest.as_str()), "{l}");
        assert!(l.ends_with("  pulled"), "{l}");
        assert!(l.contains(" KiB") || l.contains(" MiB"), "size: {l}");
    }
    assert!(
        out.contains("2 images: 2 pulled, 0 cached, 0 failed"),
        "{out}"
    );
    assert_eq!(roots(&state), {
        let mut v = vec![app_digest.clone(), other_digest.clone()];
        v.sort();
        v
    });

    // Second pull: cached, same digests; JSON has the bytes.
    let (code, rows, err) = pull_json(&config, &dc, &state);
    assert_eq!(code, 0, "{rows:#}\n{err}");
    let r = row(&rows, &app);
    assert_eq!(r["status"], "cached", "{r}");
    assert_eq!(r["digest"], app_digest.as_str(), "{r}");
    assert_eq!(r["policy"], "IfNotPresent", "{r}");
    assert_eq!(r["promises"], serde_json::json!(["app", "other"]), "{r}");
    assert!(r["size"].as_u64().unwrap() > 100_000, "busybox: {r}");
    let r = row(&rows, &other);
    assert_eq!(r["status"], "cached", "{r}");
    assert_eq!(r["digest"], other_digest.as_str(), "{r}");

    // list shows both, with their references.
    let (code, out, err) = common::promised(&[
        "images",
        "list",
        "--daemon-config",
        dc.to_str().unwrap(),
        "--state-dir",
        state.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(
        out.contains(&app_digest) && out.contains(&other_digest),
        "{out}"
    );
    assert!(out.contains(&other), "{out}");

    // The Promise using `other` leaves the config: prune frees its image, keeps `app`.
    std::fs::remove_dir_all(config.join("promises/other")).unwrap();
    let (code, out, err) = images("prune", &config, &dc, &state, &[]);
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(
        out.lines()
            .any(|l| l.starts_with("removed") && l.contains(&other_digest)),
        "{out}"
    );
    assert!(
        out.lines()
            .any(|l| l.starts_with("kept") && l.contains(&app_digest)),
        "{out}"
    );
    assert!(out.contains("freed "), "{out}");
    assert_eq!(roots(&state), vec![app_digest.clone()]);

    // Pruning again removes nothing; `app` is still cached for the next pull.
    let (code, out, err) = images("prune", &config, &dc, &state, &["--output", "json"]);
    assert_eq!(code, 0, "{out}\n{err}");
    let report: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(report["removed"], serde_json::json!([]), "{report:#}");
    assert_eq!(report["freedBytes"], 0, "{report:#}");
    let (code, rows, err) = pull_json(&config, &dc, &state);
    assert_eq!(code, 0, "{rows:#}\n{err}");
    assert_eq!(row(&rows, &app)["status"], "cached");
}

#[test]
fn a_missing_tag_fails_its_row_with_exit_1_and_the_other_image_is_pulled() {
    if !tools_available("images_cli") {
        return;
    }
    let e = env();
    let (app, missing) = (e.reg.image("test/app:v1"), e.reg.image("test/app:nope"));
    let config = e.dir.path().join("config");
    let state = e.dir.path().join("state");
    promise(&config, "app", &[(&app, None), (&missing, None)]);
    let dc = daemon_config(e.dir.path(), &e.reg);
    let (code, out, err) = images("pull", &config, &dc, &state, &[]);
    assert_eq!(code, 1, "{out}\n{err}");
    let l = out
        .lines()
        .find(|l| l.starts_with(&missing))
        .unwrap_or_else(|| panic!("{out}"));
    assert!(l.contains("MANIFEST_UNKNOWN"), "{l}");
    assert!(l.contains(&format!("{missing:?}")), "names the image: {l}");
    let l = out.lines().find(|l| l.starts_with(&app)).unwrap();
    assert!(l.ends_with("  pulled"), "{l}");
    assert!(out.contains("1 pulled, 0 cached, 1 failed"), "{out}");

    let (code, rows, err) = pull_json(&config, &dc, &state);
    assert_eq!(code, 1, "{rows:#}\n{err}");
    let r = row(&rows, &missing);
    assert_eq!(r["status"], "failed", "{r}");
    assert!(
        r["error"].as_str().unwrap().contains("MANIFEST_UNKNOWN"),
        "{r}"
    );
    assert_eq!(row(&rows, &app)["status"], "cached");
}

#[test]
fn prune_refuses_while_a_promise_is_invalid() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config");
    promise(&config, "app", &[("127.0.0.1:1/test/app:v1", None)]);
    std::fs::create_dir_all(config.join("promises/broken")).unwrap();
    std::fs::write(
        config.join("promises/broken/promise.yaml"),
        "apiVersion: platform.kratix.io/v1alpha1\nkind: Promise\nmetadata: {name: broken}\nspec: {workflows: {promise: {configure: [{kind: Pipeline}]}}}\n",
    )
    .unwrap();
    let dc = dir.path().join("promised.yaml");
    std::fs::write(&dc, "images: {}\n").unwrap();
    let state = dir.path().join("state");
    let (code, out, err) = images("prune", &config, &dc, &state, &[]);
    assert_eq!(code, 2, "{out}\n{err}");
    assert!(
        err.contains("not pruning") && err.contains("broken"),
        "{err}"
    );
}

#[test]
fn without_images_in_the_daemon_config_the_commands_say_how_to_turn_it_on() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config");
    promise(&config, "app", &[("127.0.0.1:1/test/app:v1", None)]);
    let dc = dir.path().join("promised.yaml");
    std::fs::write(&dc, "concurrency: 2\n").unwrap();
    let state = dir.path().join("state");
    for cmd in ["pull", "prune"] {
        let (code, out, err) = images(cmd, &config, &dc, &state, &[]);
        assert_eq!(code, 2, "{cmd}: {out}\n{err}");
        assert!(out.is_empty(), "{cmd}: {out}");
        assert!(
            err.contains("image runtime is off") && err.contains("images: {}"),
            "{cmd}: {err}"
        );
        assert!(err.contains(dc.to_str().unwrap()), "{cmd}: {err}");
    }
    assert!(!state.join("images").exists(), "no cache was created");
}
