//! The marketplace **redis** and **namespace** Promise folders, copied into a config repo as
//! they are (image names unchanged: `ghcr.io/syntasso/kratix-marketplace/...`), reconcile
//! through the image runtime: a daemon-config mirror maps `ghcr.io` to a real registry on
//! 127.0.0.1 (`docker-registry`), which holds images this test builds from each folder's
//! `internal/configure-pipeline/Dockerfile` with `umoci` (no Docker):
//!
//! - `FROM "alpine"`: a root of `busybox-static` with every applet linked in `/bin`,
//!   `/usr/bin/env` (the scripts' `#!/usr/bin/env sh`, a busybox applet in Alpine too),
//!   `/etc/passwd`, `/etc/group`, a `1777` `/tmp`, and Alpine's `PATH`;
//! - `RUN apk update && apk add --no-cache yq`: the project-written stand-in
//!   `testdata/images/yq/yq` at `/usr/bin/yq` (where Alpine's package puts yq), which does only
//!   what these scripts ask of yq;
//! - `RUN [ "mkdir", ... ]`, `ADD`, `CMD`, `ENTRYPOINT`, `LABEL` (and `WORKDIR`, `ENV`) as
//!   Docker does them, from the folder's own files (`execute-pipeline`, `resources/`).
//!
//! The state store must then hold the files at Kratix's paths with what the upstream scripts
//! write, and status must name the `ghcr.io/...@sha256:` digest each container ran.
//!
//! Skipped with a message when `../shared/realworld/kratix-marketplace` is missing, or when the
//! image tools or bubblewrap are missing unless `PROMISED_REQUIRE_IMAGES` /
//! `PROMISED_REQUIRE_SANDBOX` is set.

mod common;
#[path = "common/registry.rs"]
mod registry;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use registry::{Registry, run, tools_available};

/// The Promise folders this test copies, and the images their `promise.yaml` names.
const PROMISES: &[(&str, &[&str])] = &[
    (
        "redis",
        &["ghcr.io/syntasso/kratix-marketplace/redis-configure-pipeline:v0.1.0"],
    ),
    (
        "namespace",
        &["ghcr.io/syntasso/kratix-marketplace/namespace-configure-pipeline:v0.1.0"],
    ),
];

/// The `PATH` of the `alpine` image (`docker inspect alpine`).
const ALPINE_PATH: &str = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// The marketplace folder when everything the test needs is here; `None` (with a message)
/// when the test is skipped.
fn ready() -> Option<PathBuf> {
    let Some(mp) = common::marketplace() else {
        eprintln!("SKIPPED marketplace_images: ../shared/realworld/kratix-marketplace not present");
        return None;
    };
    if !tools_available("marketplace_images") {
        return None;
    }
    if !common::bwrap_works() {
        assert!(
            std::env::var_os("PROMISED_REQUIRE_SANDBOX").is_none(),
            "bubblewrap cannot create a sandbox here"
        );
        eprintln!("SKIPPED marketplace_images: bubblewrap cannot create a sandbox here");
        return None;
    }
    Some(mp)
}

/// Every container image a `promise.yaml` names, in workflow order, without duplicates.
fn promise_images(promise_yaml: &Path) -> Vec<String> {
    let text = std::fs::read_to_string(promise_yaml).unwrap();
    let doc: serde_json::Value = serde_saphyr::from_str(&text).unwrap();
    let mut images: Vec<String> = Vec::new();
    for kind in ["resource", "promise"] {
        for action in ["configure", "delete"] {
            let pipelines = doc["spec"]["workflows"][kind][action].as_array();
            for p in pipelines.into_iter().flatten() {
                for c in p["spec"]["containers"].as_array().into_iter().flatten() {
                    let image = c["image"].as_str().unwrap().to_string();
                    if !images.contains(&image) {
                        images.push(image);
                    }
                }
            }
        }
    }
    images
}

/// The image config a Dockerfile leaves.
#[derive(Default)]
struct ImageConfig {
    env: Vec<String>,
    entrypoint: Option<Vec<String>>,
    cmd: Option<Vec<String>>,
    workdir: Option<String>,
    labels: Vec<String>,
}

/// An exec-form (JSON array) instruction argument.
fn json_array(arg: &str, line: &str) -> Vec<String> {
    serde_json::from_str(arg).unwrap_or_else(|e| panic!("{line}: not a JSON array: {e}"))
}

/// `path` inside `rootfs` (`path` absolute in the image).
fn in_root(rootfs: &Path, path: &str) -> PathBuf {
    assert!(path.starts_with('/'), "{path} is not absolute");
    assert!(!path.split('/').any(|c| c == ".."), "{path}");
    rootfs.join(path.trim_start_matches('/'))
}

/// Copies the file or the contents of the directory `from` to `to` (Docker's `ADD` of a
/// directory copies its contents); files keep their mode, directories are `0755`.
fn add(from: &Path, to: &Path) {
    if from.is_dir() {
        common::copy_dir(from, to);
    } else {
        std::fs::create_dir_all(to.parent().unwrap()).unwrap();
        std::fs::copy(from, to).unwrap();
    }
}

/// Docker's `ADD <src> <dest>` (local sources only) from `context` into `rootfs`, `dest`
/// relative to `workdir` unless absolute.
fn add_instruction(context: &Path, rootfs: &Path, workdir: &str, src: &str, dest: &str) {
    let dest = if dest.starts_with('/') {
        dest.to_string()
    } else {
        format!("{}/{dest}", workdir.trim_end_matches('/'))
    };
    let to_dir = dest.ends_with('/');
    let sources: Vec<PathBuf> = match src.strip_suffix("/*") {
        // A glob of a directory's entries: several sources, so `dest` must be a directory.
        Some(dir) => {
            assert!(
                to_dir,
                "ADD {src} {dest}: a glob needs a directory destination"
            );
            let mut v: Vec<PathBuf> = std::fs::read_dir(context.join(dir))
                .unwrap()
                .map(|e| e.unwrap().path())
                .collect();
            v.sort();
            v
        }
        None => {
            assert!(
                !src.contains(['*', '?', '[']),
                "ADD {src}: unsupported glob"
            );
            vec![context.join(src.trim_end_matches('/'))]
        }
    };
    for s in sources {
        let target = if s.is_dir() {
            in_root(rootfs, &dest)
        } else if to_dir {
            in_root(rootfs, &dest).join(s.file_name().unwrap())
        } else {
            in_root(rootfs, &dest)
        };
        add(&s, &target);
    }
}

/// Builds the image of the Dockerfile in `context` into the OCI layout `<work>/img` as `tag`,
/// for the instructions the marketplace pipeline Dockerfiles use; panics on any other, so a
/// changed upstream Dockerfile shows up here instead of being built wrongly.
fn build_from_dockerfile(work: &Path, context: &Path, tag: &str) -> PathBuf {
    let layout = work.join("img");
    if !layout.exists() {
        run(Command::new("umoci")
            .arg("init")
            .arg("--layout")
            .arg(&layout));
    }
    let image = format!("{}:{tag}", layout.display());
    run(Command::new("umoci").args(["new", "--image", &image]));
    let bundle = work.join(format!("bundle-{tag}"));
    run(Command::new("umoci")
        .args(["unpack", "--rootless", "--image", &image])
        .arg(&bundle));
    let rootfs = bundle.join("rootfs");
    let yq = common::repo_root().join("testdata/images/yq/yq");

    let dockerfile = std::fs::read_to_string(context.join("Dockerfile")).unwrap();
    let mut cfg = ImageConfig::default();
    let mut from = false;
    for line in dockerfile.lines().map(str::trim) {
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        assert!(!line.ends_with('\\'), "{line}: continuation lines");
        let (op, arg) = line.split_once(char::is_whitespace).unwrap_or((line, ""));
        let arg = arg.trim();
        match op.to_ascii_uppercase().as_str() {
            "FROM" => {
                assert_eq!(arg.trim_matches('"'), "alpine", "{line}");
                run(Command::new("sh")
                    .args([
                        "-c",
                        r#"set -eu
R=$1
mkdir -p "$R/bin" "$R/etc" "$R/tmp" "$R/usr/bin" "$R/root"
chmod 1777 "$R/tmp"
cp "$(command -v busybox)" "$R/bin/busybox"
for a in $(busybox --list); do [ "$a" = busybox ] || ln -s busybox "$R/bin/$a"; done
ln -s /bin/busybox "$R/usr/bin/env"
echo 'root:x:0:0:root:/root:/bin/sh' > "$R/etc/passwd"
echo 'root:x:0:' > "$R/etc/group"
"#,
                        "alpine-base",
                    ])
                    .arg(&rootfs));
                cfg.env.push(ALPINE_PATH.to_string());
                from = true;
            }
            "LABEL" => {
                assert!(arg.contains('='), "{line}");
                cfg.labels.push(arg.to_string());
            }
            "RUN" if arg.starts_with('[') => {
                let argv = json_array(arg, line);
                match argv.iter().map(String::as_str).collect::<Vec<_>>()[..] {
                    ["mkdir", dir] => std::fs::create_dir(in_root(&rootfs, dir)).unwrap(),
                    _ => panic!("{line}: unsupported RUN"),
                }
            }
            "RUN" => {
                assert_eq!(
                    arg, "apk update && apk add --no-cache yq",
                    "{line}: unsupported RUN"
                );
                add(&yq, &rootfs.join("usr/bin/yq"));
            }
            "ADD" | "COPY" => {
                let parts: Vec<&str> = arg.split_whitespace().collect();
                let [src, dest] = parts[..] else {
                    panic!("{line}: one source and one destination expected")
                };
                let workdir = cfg.workdir.clone().unwrap_or_else(|| "/".into());
                add_instruction(context, &rootfs, &workdir, src, dest);
            }
            "CMD" => cfg.cmd = Some(json_array(arg, line)),
            "ENTRYPOINT" => cfg.entrypoint = Some(json_array(arg, line)),
            "WORKDIR" => {
                assert!(arg.starts_with('/'), "{line}");
                std::fs::create_dir_all(in_root(&rootfs, arg)).unwrap();
                cfg.workdir = Some(arg.to_string());
            }
            "ENV" => {
                assert!(arg.contains('=') && !arg.contains(' '), "{line}");
                cfg.env.push(arg.to_string());
            }
            _ => panic!("{line}: unsupported instruction"),
        }
        assert!(from, "{line}: before FROM");
    }
    run(Command::new("umoci")
        .args(["repack", "--image", &image])
        .arg(&bundle));
    let mut config = Command::new("umoci");
    config.args(["config", "--image", &image]);
    // `umoci new` leaves Entrypoint and Cmd empty; clearing them is what `ENTRYPOINT []` does.
    config.args(["--clear=config.entrypoint", "--clear=config.cmd"]);
    for e in &cfg.env {
        config.args(["--config.env", e]);
    }
    for e in cfg.entrypoint.iter().flatten() {
        config.args(["--config.entrypoint", e]);
    }
    for c in cfg.cmd.iter().flatten() {
        config.args(["--config.cmd", c]);
    }
    if let Some(w) = &cfg.workdir {
        config.args(["--config.workingdir", w]);
    }
    for l in &cfg.labels {
        config.args(["--config.label", l]);
    }
    run(&mut config);
    layout
}

/// The sha256 digest of the manifest the registry serves at `repo_tag`.
fn manifest_digest(reg: &Registry, repo_tag: &str) -> String {
    use sha2::Digest;
    format!(
        "sha256:{}",
        hex::encode(sha2::Sha256::digest(reg.raw_manifest(repo_tag)))
    )
}

/// The `<container>: <image>@<digest>` entries of each pipeline of an object's status.
fn ran_images(state: &Path, key: &str) -> Vec<Vec<String>> {
    let row = common::status_row(state, key);
    let text = row.to_string();
    row["status"]["pipelines"]
        .as_array()
        .unwrap_or_else(|| panic!("no pipelines in {text}"))
        .iter()
        .map(|p| {
            p["images"]
                .as_array()
                .unwrap_or_else(|| panic!("no images in {text}"))
                .iter()
                .map(|v| v.as_str().unwrap().to_string())
                .collect()
        })
        .collect()
}

#[test]
fn marketplace_folders_reconcile_through_images_built_from_their_dockerfiles() {
    let Some(mp) = ready() else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let reg = Registry::start(&tmp.path().join("reg"));

    // One image per name the Promises use, built from the folder's Dockerfile and pushed
    // under its published repository path and tag.
    let mut digests: BTreeMap<String, String> = BTreeMap::new();
    for (promise, expected) in PROMISES {
        let images = promise_images(&mp.join(promise).join("promise.yaml"));
        assert_eq!(&images, expected, "{promise}/promise.yaml");
        for image in images {
            let repo_tag = image.strip_prefix("ghcr.io/").unwrap();
            let context = mp.join(promise).join("internal/configure-pipeline");
            let layout = build_from_dockerfile(tmp.path(), &context, promise);
            reg.push(&layout, promise, repo_tag, &[]);
            digests.insert(image.clone(), manifest_digest(&reg, repo_tag));
        }
    }

    // The folders as they are, a Destination and a local GitStateStore.
    let config = tmp.path().join("config");
    for (p, _) in PROMISES {
        common::copy_dir(&mp.join(p), &config.join("promises").join(p));
    }
    std::fs::write(
        config.join("platform.yaml"),
        "apiVersion: platform.kratix.io/v1alpha1\nkind: GitStateStore\nmetadata:\n  name: local\nspec:\n  url: state.git\n  branch: main\n---\napiVersion: platform.kratix.io/v1alpha1\nkind: Destination\nmetadata:\n  name: dev\n  labels:\n    environment: dev\nspec:\n  path: clusters/dev\n  stateStoreRef:\n    kind: GitStateStore\n    name: local\n",
    )
    .unwrap();
    // The image runtime with ghcr.io mirrored to the loopback registry; no imageOverrides.
    let daemon_config = tmp.path().join("promised.yaml");
    std::fs::write(
        &daemon_config,
        format!(
            "images:\n  mirrors:\n    ghcr.io: \"{0}\"\n  insecureRegistries: [\"{0}\"]\n",
            reg.host
        ),
    )
    .unwrap();
    let state = tmp.path().join("state");
    let (code, out, err) = common::promised(&[
        "reconcile",
        "--config",
        config.to_str().unwrap(),
        "--daemon-config",
        daemon_config.to_str().unwrap(),
        "--state-dir",
        state.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(!out.contains("INVALID"), "{out}\n{err}");
    for key in ["redis/default/example", "namespace/default/example"] {
        assert!(
            out.lines()
                .any(|l| l.contains(key) && l.contains(" ran ") && l.contains("Reconciled")),
            "{key}: {out}"
        );
    }

    // Kratix's paths, with what the upstream scripts write.
    let store = state.join("state.git");
    let files: Vec<String> = common::git(&store, &["ls-tree", "-r", "--name-only", "main"])
        .lines()
        .map(str::to_string)
        .collect();
    let show = |f: &str| {
        assert!(
            files.iter().any(|x| x == f),
            "no {f} in\n{}",
            files.join("\n")
        );
        common::git(&store, &["show", &format!("main:{f}")])
    };
    let redis_resources = mp.join("redis/internal/configure-pipeline/resources");
    let source = |p: &Path| std::fs::read_to_string(p).unwrap();

    // Resource workflow: `yq` set metadata.name and both replica counts (size small: 1).
    let redis = show(
        "clusters/dev/resources/default/redis/example/instance-configure/5058f/redis-instance.yaml",
    );
    assert!(
        redis.contains("name: example") && redis.contains("replicas: 1"),
        "{redis}"
    );
    assert_eq!(
        redis,
        source(&redis_resources.join("redis-instance.yaml"))
            .replace("name: NAME_PLACEHOLDER", "name: example")
            .replace("replicas: 3", "replicas: 1"),
    );
    // Promise workflow: the dependencies copied as they are.
    for f in [
        "all-redis-operator-resources.yaml",
        "databases.spotahome.com_redisfailovers.yaml",
    ] {
        assert_eq!(
            show(&format!(
                "clusters/dev/dependencies/redis/promise-configure/5058f/{f}"
            )),
            source(&redis_resources.join("dependencies").join(f)),
            "{f}"
        );
    }
    // Namespace: TBDNAMESPACE replaced by spec.namespaceName; no destination selectors (the
    // upstream script tests `${cluserName}`, never set).
    let ns = show(
        "clusters/dev/resources/default/namespace/example/instance-configure/5058f/namespace.yaml",
    );
    assert_eq!(
        ns,
        source(&mp.join("namespace/internal/configure-pipeline/resources/namespace.yaml"))
            .replace("TBDNAMESPACE", "promised-namespace"),
    );
    assert!(ns.contains("name: promised-namespace"), "{ns}");
    assert!(
        !files.iter().any(|f| f.contains("internal/")),
        "{}",
        files.join("\n")
    );

    // Status names the digest each container ran, under the image's own (ghcr.io) name.
    let redis_img = PROMISES[0].1[0];
    let ns_img = PROMISES[1].1[0];
    assert_eq!(
        ran_images(&state, "redis/default/example"),
        [[format!(
            "redis-configure-pipeline: {redis_img}@{}",
            digests[redis_img]
        )]]
    );
    // The redis Promise's own workflow ran the same image.
    assert_eq!(
        ran_images(&state, "promise/redis"),
        [[format!(
            "redis-configure-pipeline: {redis_img}@{}",
            digests[redis_img]
        )]]
    );
    assert_eq!(
        ran_images(&state, "namespace/default/example"),
        [[format!(
            "namespace-configure-pipeline: {ns_img}@{}",
            digests[ns_img]
        )]]
    );
}
