//! The image store against a real registry (`docker-registry` on 127.0.0.1) with images built
//! by `umoci` from `busybox-static` and pushed by `skopeo`. Skipped with a message when the
//! tools are missing, unless `PROMISED_REQUIRE_IMAGES` is set.

#[path = "common/registry.rs"]
mod registry;

use std::collections::{BTreeMap, BTreeSet};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use promised::image::{ImageError, ImageSettings, ImageStore, PullPolicy};
use registry::{
    Entry, Registry, add_layer, build_images, log_text, logs, raw_tar, tag_descriptor,
    tools_available,
};
use sha2::Digest;
use statestores::NetworkTimeouts;

/// A test's directory, registry and image layout.
struct Env {
    dir: tempfile::TempDir,
    reg: Registry,
    layout: PathBuf,
}

fn setup(test: &str) -> Option<Env> {
    if !tools_available(test) {
        return None;
    }
    logs();
    let dir = tempfile::tempdir().unwrap();
    let reg = Registry::start(&dir.path().join("reg"));
    let layout = build_images(dir.path());
    Some(Env { dir, reg, layout })
}

impl Env {
    fn settings(&self, cache: &str) -> ImageSettings {
        ImageSettings {
            cache_dir: Some(self.dir.path().join(cache)),
            insecure_registries: vec![self.reg.host.clone()],
            ..ImageSettings::default()
        }
    }

    fn store(&self, cache: &str) -> ImageStore {
        store(&self.settings(cache), self.dir.path())
    }
}

fn store(settings: &ImageSettings, state: &Path) -> ImageStore {
    ImageStore::new(settings, state, &NetworkTimeouts::default()).unwrap()
}

fn sha256(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(sha2::Sha256::digest(bytes)))
}

/// Every path under `root` with its kind, mode and content hash or link target.
fn tree(root: &Path) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for e in std::fs::read_dir(&dir).unwrap() {
            let e = e.unwrap();
            let p = e.path();
            let rel = p.strip_prefix(root).unwrap().display().to_string();
            let m = std::fs::symlink_metadata(&p).unwrap();
            let mode = m.permissions().mode() & 0o7777;
            let desc = if m.file_type().is_symlink() {
                format!("l {}", std::fs::read_link(&p).unwrap().display())
            } else if m.is_dir() {
                stack.push(p.clone());
                format!("d {mode:o}")
            } else {
                format!("f {mode:o} {}", sha256(&std::fs::read(&p).unwrap()))
            };
            out.insert(rel, desc);
        }
    }
    out
}

fn names(dir: &Path) -> BTreeSet<String> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn whiteouts_opaque_directories_and_config() {
    let Some(env) = setup("whiteouts_opaque_directories_and_config") else {
        return;
    };
    env.reg.push(&env.layout, "v3", "test/busybox:v3", &[]);
    let store = env.store("cache");
    let image = env.reg.image("test/busybox:v3");
    let pulled = store
        .ensure(&image, PullPolicy::IfNotPresent)
        .await
        .unwrap();
    assert_eq!(pulled.image, image);
    assert_eq!(
        pulled.digest,
        sha256(&env.reg.raw_manifest("test/busybox:v3"))
    );
    let r = &pulled.rootfs;
    // Layer 2's whiteout removed layer 1's file; its new file is there.
    assert!(!r.join("etc/removed-later.txt").exists());
    assert_eq!(
        std::fs::read_to_string(r.join("etc/added.txt")).unwrap(),
        "layer two\n"
    );
    assert_eq!(
        std::fs::read_to_string(r.join("etc/passwd")).unwrap(),
        "root:x:0:0:root:/root:/bin/sh\n"
    );
    // Layer 3 made opq/ opaque: only its own content is left (the new file came before the
    // marker in the tar).
    assert_eq!(
        names(&r.join("opq")),
        BTreeSet::from(["new.txt".to_string()])
    );
    assert_eq!(
        std::fs::read_to_string(r.join("opq/new.txt")).unwrap(),
        "new\n"
    );
    // busybox is executable; an absolute symlink is kept verbatim.
    let bb = std::fs::metadata(r.join("bin/busybox")).unwrap();
    assert!(bb.permissions().mode() & 0o111 != 0 && bb.len() > 100_000);
    assert_eq!(
        std::fs::read_link(r.join("bin/abs-link")).unwrap(),
        PathBuf::from("/bin/busybox")
    );
    assert_eq!(
        std::fs::read_link(r.join("bin/sh")).unwrap(),
        PathBuf::from("busybox")
    );
    assert_eq!(
        std::fs::symlink_metadata(r.join("tmp"))
            .unwrap()
            .permissions()
            .mode()
            & 0o7777,
        0o1777
    );
    // Mount points for the sandbox.
    for d in [
        "proc",
        "dev",
        "tmp",
        "work",
        "kratix/input",
        "kratix/output",
        "kratix/metadata",
    ] {
        assert!(r.join(d).is_dir(), "{d}");
    }
    // Files belong to us.
    assert_eq!(bb.uid(), rustix::process::getuid().as_raw());
    // Config.
    let c = &pulled.config;
    assert_eq!(c.entrypoint, ["/bin/sh", "-c"]);
    assert_eq!(c.cmd, ["echo hello from $GREETING"]);
    assert!(
        c.env.contains(&("GREETING".into(), "world".into())),
        "{:?}",
        c.env
    );
    assert!(
        c.env.contains(&("PATH".into(), "/bin".into())),
        "{:?}",
        c.env
    );
    assert_eq!(c.working_dir.as_deref(), Some("/work"));
    assert_eq!(c.user.as_deref(), Some("1000:1000"));
    assert!(pulled.size > 100_000);
    let expected_tree = tree(r);
    // Idempotent; listed.
    let again = store
        .ensure(&image, PullPolicy::IfNotPresent)
        .await
        .unwrap();
    assert_eq!(again, pulled);
    let cached = store.pulled().unwrap();
    assert_eq!(cached.len(), 1);
    assert_eq!(cached[0].digest, pulled.digest);
    assert_eq!(cached[0].references, std::slice::from_ref(&image));
    // A new store on the same cache has it without the registry.
    drop(env.reg);
    let reopened = store_same_cache(&store, &env.dir);
    let p = reopened.ensure(&image, PullPolicy::Never).await.unwrap();
    assert_eq!(p.rootfs, pulled.rootfs);
    // `Never` unpacks again from the cached blobs, without a registry.
    std::fs::remove_dir_all(pulled.rootfs.parent().unwrap()).unwrap();
    let p = reopened.ensure(&image, PullPolicy::Never).await.unwrap();
    assert_eq!(tree(&p.rootfs), expected_tree);
}

fn store_same_cache(store: &ImageStore, dir: &tempfile::TempDir) -> ImageStore {
    let settings = ImageSettings {
        cache_dir: Some(store.cache_dir().to_path_buf()),
        ..ImageSettings::default()
    };
    ImageStore::new(&settings, dir.path(), &NetworkTimeouts::default()).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gzip_zstd_and_docker_v2s2_give_the_same_root() {
    let Some(env) = setup("gzip_zstd_and_docker_v2s2_give_the_same_root") else {
        return;
    };
    let zlayout = env.dir.path().join("imgz");
    registry::run(
        std::process::Command::new("skopeo")
            .args(["copy", "--quiet", "--dest-compress-format", "zstd"])
            .arg(format!("oci:{}:v3", env.layout.display()))
            .arg(format!("oci:{}:v3", zlayout.display())),
    );
    env.reg
        .push(&zlayout, "v3", "test/zstd:v3", &["--preserve-digests"]);
    env.reg.push(&env.layout, "v3", "test/gzip:v3", &[]);
    env.reg
        .push(&env.layout, "v3", "test/docker:v3", &["--format", "v2s2"]);
    let zmanifest = String::from_utf8(env.reg.raw_manifest("test/zstd:v3")).unwrap();
    assert!(zmanifest.contains("tar+zstd"), "{zmanifest}");
    let dmanifest = String::from_utf8(env.reg.raw_manifest("test/docker:v3")).unwrap();
    assert!(
        dmanifest.contains("application/vnd.docker.distribution.manifest.v2+json"),
        "{dmanifest}"
    );

    let store = env.store("cache");
    let mut roots = Vec::new();
    for repo in ["test/gzip:v3", "test/zstd:v3", "test/docker:v3"] {
        let p = store
            .ensure(&env.reg.image(repo), PullPolicy::IfNotPresent)
            .await
            .unwrap();
        roots.push((p.digest, tree(&p.rootfs)));
    }
    assert_ne!(roots[0].0, roots[1].0);
    assert_ne!(roots[0].0, roots[2].0);
    assert!(roots[0].1.contains_key("opq/new.txt"));
    assert_eq!(roots[0].1, roots[1].1, "gzip and zstd roots differ");
    assert_eq!(roots[0].1, roots[2].1, "OCI and Docker v2s2 roots differ");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_index_resolves_to_this_hosts_platform() {
    let Some(env) = setup("an_index_resolves_to_this_hosts_platform") else {
        return;
    };
    env.reg
        .push(&env.layout, "multi", "test/multi:latest", &["--all"]);
    registry::add_index(&env.layout, "s390x-only", &[("v1-arm64", "s390x", None)]);
    env.reg
        .push(&env.layout, "s390x-only", "test/multi:s390x", &["--all"]);
    let store = env.store("cache");
    if std::env::consts::ARCH != "s390x" {
        let e = store
            .ensure(&env.reg.image("test/multi:s390x"), PullPolicy::IfNotPresent)
            .await
            .unwrap_err();
        let text = e.to_string();
        assert!(matches!(e, ImageError::NoPlatform { .. }), "{text}");
        assert!(
            text.contains("linux/s390x") && text.contains("test/multi:s390x"),
            "{text}"
        );
    }
    let image = env.reg.image("test/multi");
    assert_eq!(PullPolicy::default_for(&image), PullPolicy::Always);
    let arch = match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => {
            let e = store.ensure(&image, PullPolicy::Always).await.unwrap_err();
            assert!(matches!(e, ImageError::NoPlatform { .. }), "{other}: {e}");
            return;
        }
    };
    let pulled = store
        .ensure(&image, PullPolicy::default_for(&image))
        .await
        .unwrap();
    assert!(
        pulled
            .config
            .env
            .contains(&("PLATFORM".into(), arch.into())),
        "{:?}",
        pulled.config.env
    );
    let expected = tag_descriptor(&env.layout, &format!("v1-{arch}"))["digest"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(pulled.digest, expected);
    // The index by digest resolves to the same manifest, from the cache.
    let index_digest = sha256(&env.reg.raw_manifest("test/multi:latest"));
    assert_ne!(index_digest, expected);
    let by_digest = format!("{}/test/multi@{index_digest}", env.reg.host);
    drop(env.reg);
    let r = store
        .resolve(&by_digest, PullPolicy::IfNotPresent)
        .await
        .unwrap();
    assert_eq!(r.digest, expected);
    assert_eq!(r.image, by_digest);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn basic_auth_from_a_docker_config_json() {
    if !tools_available("basic_auth_from_a_docker_config_json") {
        return;
    }
    let logs_before = log_text().len();
    let dir = tempfile::tempdir().unwrap();
    let password = "s3cret-Pw-4711";
    let wrong = "wrong-Pw-0815";
    let reg = Registry::start_with_htpasswd(&dir.path().join("reg"), "tester", password);
    let layout = build_images(dir.path());
    reg.push(&layout, "v1", "test/private:v1", &[]);
    let image = reg.image("test/private:v1");
    let auth_file = dir.path().join("config.json");
    let settings = ImageSettings {
        cache_dir: Some(dir.path().join("cache")),
        insecure_registries: vec![reg.host.clone()],
        auth_file: Some(auth_file.clone()),
        ..ImageSettings::default()
    };
    let mut errors = Vec::new();

    // No auth file configured at all.
    let anonymous = store(
        &ImageSettings {
            auth_file: None,
            ..settings.clone()
        },
        dir.path(),
    );
    let e = anonymous
        .ensure(&image, PullPolicy::IfNotPresent)
        .await
        .unwrap_err();
    let text = e.to_string();
    assert!(matches!(e, ImageError::Unauthorized { .. }), "{text}");
    assert!(text.contains("401") && text.contains(&reg.host), "{text}");
    assert!(text.contains("no auth file configured"), "{text}");
    errors.push(e);

    // An auth file without an entry for this registry.
    std::fs::write(&auth_file, r#"{"auths":{"other.example":{"auth":"dTpw"}}}"#).unwrap();
    let s = store(&settings, dir.path());
    let e = s
        .ensure(&image, PullPolicy::IfNotPresent)
        .await
        .unwrap_err();
    let text = e.to_string();
    assert!(
        text.contains(&format!("has no entry for {}", reg.host)),
        "{text}"
    );
    errors.push(e);

    // A wrong password (base64 `auth`).
    use base64::Engine;
    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
    std::fs::write(
        &auth_file,
        format!(
            r#"{{"auths":{{"{}":{{"auth":"{}"}}}}}}"#,
            reg.host,
            b64(&format!("tester:{wrong}"))
        ),
    )
    .unwrap();
    let e = s
        .ensure(&image, PullPolicy::IfNotPresent)
        .await
        .unwrap_err();
    let text = e.to_string();
    assert!(matches!(e, ImageError::Unauthorized { .. }), "{text}");
    assert!(
        text.contains("401") && text.contains("user \"tester\""),
        "{text}"
    );
    assert!(text.contains(&auth_file.display().to_string()), "{text}");
    errors.push(e);

    // The right one (username/password, key with scheme and path): the file is re-read.
    std::fs::write(
        &auth_file,
        format!(
            r#"{{"auths":{{"http://{}/v2/":{{"username":"tester","password":"{password}"}}}}}}"#,
            reg.host
        ),
    )
    .unwrap();
    let pulled = s.ensure(&image, PullPolicy::IfNotPresent).await.unwrap();
    assert!(pulled.rootfs.join("bin/busybox").is_file());

    // No secret anywhere: messages, debug output, logs.
    let logs = log_text()[logs_before..].to_string();
    assert!(logs.contains(&reg.host), "the logs were not captured");
    for secret in [
        password.to_string(),
        wrong.to_string(),
        b64(&format!("tester:{password}")),
        b64(&format!("tester:{wrong}")),
    ] {
        for e in &errors {
            assert!(!e.to_string().contains(&secret), "{e}");
            assert!(!format!("{e:?}").contains(&secret), "{e:?}");
        }
        assert!(!logs.contains(&secret), "a secret is in the logs");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mirror_serves_another_registrys_name() {
    let Some(env) = setup("a_mirror_serves_another_registrys_name") else {
        return;
    };
    env.reg.push(&env.layout, "v1", "test/busybox:v1", &[]);
    let mut settings = env.settings("cache");
    settings
        .mirrors
        .insert("ghcr.io".into(), env.reg.host.clone());
    let store = store(&settings, env.dir.path());
    let pulled = store
        .ensure("ghcr.io/test/busybox:v1", PullPolicy::IfNotPresent)
        .await
        .unwrap();
    assert_eq!(pulled.image, "ghcr.io/test/busybox:v1");
    assert_eq!(
        pulled.digest,
        sha256(&env.reg.raw_manifest("test/busybox:v1"))
    );
    let r = store
        .resolve("ghcr.io/test/busybox:v1", PullPolicy::Always)
        .await
        .unwrap();
    assert_eq!(r.pulled_from, env.reg.host);
    assert_eq!(r.image, "ghcr.io/test/busybox:v1");
    assert_eq!(
        store.pulled().unwrap()[0].references,
        ["ghcr.io/test/busybox:v1"]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_moved_tag_is_seen_with_always_not_with_if_not_present() {
    let Some(env) = setup("a_moved_tag_is_seen_with_always_not_with_if_not_present") else {
        return;
    };
    env.reg.push(&env.layout, "v1", "test/moving:stable", &[]);
    let d1 = sha256(&env.reg.raw_manifest("test/moving:stable"));
    let image = env.reg.image("test/moving:stable");
    let mut eager = env.settings("eager");
    eager.resolve_interval = std::time::Duration::ZERO;
    let eager = store(&eager, env.dir.path());
    let patient = env.store("patient"); // default interval: 5 minutes
    assert_eq!(
        eager
            .ensure(&image, PullPolicy::Always)
            .await
            .unwrap()
            .digest,
        d1
    );
    assert_eq!(
        patient
            .resolve(&image, PullPolicy::Always)
            .await
            .unwrap()
            .digest,
        d1
    );

    env.reg.push(&env.layout, "v2", "test/moving:stable", &[]);
    let d2 = sha256(&env.reg.raw_manifest("test/moving:stable"));
    assert_ne!(d1, d2);
    assert_eq!(
        eager
            .resolve(&image, PullPolicy::IfNotPresent)
            .await
            .unwrap()
            .digest,
        d1
    );
    assert_eq!(
        eager
            .resolve(&image, PullPolicy::Never)
            .await
            .unwrap()
            .digest,
        d1
    );
    assert_eq!(
        patient
            .resolve(&image, PullPolicy::Always)
            .await
            .unwrap()
            .digest,
        d1
    );
    let moved = eager.ensure(&image, PullPolicy::Always).await.unwrap();
    assert_eq!(moved.digest, d2);
    assert!(moved.rootfs.join("etc/added.txt").exists());
    assert_eq!(
        eager
            .resolve(&image, PullPolicy::IfNotPresent)
            .await
            .unwrap()
            .digest,
        d2
    );
    // Unchanged tag: still d2 (answered by a HEAD).
    assert_eq!(
        eager
            .resolve(&image, PullPolicy::Always)
            .await
            .unwrap()
            .digest,
        d2
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unsafe_layers_are_refused_and_nothing_escapes() {
    let Some(env) = setup("unsafe_layers_are_refused_and_nothing_escapes") else {
        return;
    };
    let canary = env.dir.path().join("canary");
    std::fs::create_dir(&canary).unwrap();
    std::fs::write(canary.join("target.txt"), "canary\n").unwrap();
    let abs = canary.display().to_string();
    let up = format!("{}{}", "../".repeat(16), abs.trim_start_matches('/'));
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        (
            "dotdot",
            raw_tar(&[Entry::File(&format!("{up}/dotdot.txt"), b"x")]),
            "'..'",
        ),
        (
            "absolute",
            raw_tar(&[Entry::File(&format!("{abs}/abs.txt"), b"x")]),
            "absolute path",
        ),
        (
            "symlink-out",
            raw_tar(&[
                Entry::Symlink("evil", &up),
                Entry::File("evil/pwned.txt", b"x"),
            ]),
            "outside the image root",
        ),
        (
            "hardlink-out",
            raw_tar(&[Entry::HardLink("hl", &format!("{up}/target.txt"))]),
            "hard link",
        ),
        (
            "hardlink-abs",
            raw_tar(&[Entry::HardLink("hl", &format!("{abs}/target.txt"))]),
            "absolute path",
        ),
        (
            "hardlink-symlink",
            raw_tar(&[Entry::HardLink("hl", "bin/sh")]),
            "not a regular file",
        ),
    ];
    let store = env.store("cache");
    for (name, tar, reason) in &cases {
        let tag = format!("evil-{name}");
        add_layer(&env.layout, "v1", &tag, tar);
        env.reg
            .push(&env.layout, &tag, &format!("test/evil:{name}"), &[]);
        let image = env.reg.image(&format!("test/evil:{name}"));
        let e = store
            .ensure(&image, PullPolicy::IfNotPresent)
            .await
            .unwrap_err();
        let text = e.to_string();
        assert!(
            matches!(e, ImageError::UnsafeEntry { .. }),
            "{name}: {text}"
        );
        assert!(text.contains(reason), "{name}: {text}");
        assert!(text.contains(&image), "{name}: {text}");
        let layers = layer_digests(&env.reg, &format!("test/evil:{name}"));
        assert!(
            text.contains(layers.last().unwrap()),
            "{name}: names the layer: {text}"
        );
    }
    assert_eq!(names(&canary), BTreeSet::from(["target.txt".to_string()]));
    assert_eq!(
        std::fs::read_to_string(canary.join("target.txt")).unwrap(),
        "canary\n"
    );
    assert!(store.pulled().unwrap().is_empty());
    assert!(
        names(&store.cache_dir().join("roots")).is_empty(),
        "no half-unpacked root is left"
    );

    // Accepted, and kept inside: an absolute symlink is followed inside the root; devices and
    // FIFOs are skipped; a hard link to a file inside works.
    let ok = raw_tar(&[
        Entry::Symlink("evil", &abs),
        Entry::File("evil/pwned.txt", b"inside\n"),
        Entry::CharDevice("dev/c0"),
        Entry::Fifo("fifo"),
        Entry::HardLink("bin/hard", "bin/busybox"),
        Entry::Dir("newdir/"),
    ]);
    add_layer(&env.layout, "v1", "contained", &ok);
    env.reg
        .push(&env.layout, "contained", "test/evil:contained", &[]);
    let pulled = store
        .ensure(
            &env.reg.image("test/evil:contained"),
            PullPolicy::IfNotPresent,
        )
        .await
        .unwrap();
    let r = &pulled.rootfs;
    assert_eq!(std::fs::read_link(r.join("evil")).unwrap(), canary);
    let inside = r.join(abs.trim_start_matches('/')).join("pwned.txt");
    assert_eq!(std::fs::read_to_string(&inside).unwrap(), "inside\n");
    assert!(!r.join("dev/c0").exists() && !r.join("fifo").exists());
    assert_eq!(
        std::fs::metadata(r.join("bin/hard")).unwrap().ino(),
        std::fs::metadata(r.join("bin/busybox")).unwrap().ino()
    );
    assert!(r.join("newdir").is_dir());
    assert_eq!(names(&canary), BTreeSet::from(["target.txt".to_string()]));
}

fn layer_digests(reg: &Registry, repo_tag: &str) -> Vec<String> {
    let m: serde_json::Value = serde_json::from_slice(&reg.raw_manifest(repo_tag)).unwrap();
    m["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["digest"].as_str().unwrap().to_string())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn corrupt_blobs_are_detected_and_never_used() {
    let Some(env) = setup("corrupt_blobs_are_detected_and_never_used") else {
        return;
    };
    env.reg.push(&env.layout, "v2", "test/busybox:v2", &[]);
    let image = env.reg.image("test/busybox:v2");
    let store = env.store("cache");
    let first = store
        .ensure(&image, PullPolicy::IfNotPresent)
        .await
        .unwrap();
    let expected = tree(&first.rootfs);
    let layers = layer_digests(&env.reg, "test/busybox:v2");
    let last = layers.last().unwrap();
    let blob = store
        .cache_dir()
        .join("blobs/sha256")
        .join(last.strip_prefix("sha256:").unwrap());

    // A truncated blob in the cache (and the root gone): found, downloaded again.
    std::fs::remove_dir_all(first.rootfs.parent().unwrap()).unwrap();
    let len = std::fs::metadata(&blob).unwrap().len();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&blob)
        .unwrap()
        .set_len(len / 2)
        .unwrap();
    let second = store
        .ensure(&image, PullPolicy::IfNotPresent)
        .await
        .unwrap();
    assert_eq!(tree(&second.rootfs), expected);
    assert_eq!(&sha256(&std::fs::read(&blob).unwrap()), last);

    // The registry serves altered content: refused, nothing kept.
    let stored = env.reg.blob_file(last);
    let mut bytes = std::fs::read(&stored).unwrap();
    let n = bytes.len();
    bytes[n / 2] ^= 0xff;
    std::fs::write(&stored, &bytes).unwrap();
    let fresh = env.store("cache2");
    let e = fresh
        .ensure(&image, PullPolicy::IfNotPresent)
        .await
        .unwrap_err();
    let text = e.to_string();
    assert!(matches!(e, ImageError::DigestMismatch { .. }), "{text}");
    assert!(text.contains(last.as_str()), "{text}");
    let blobs = names(&fresh.cache_dir().join("blobs/sha256"));
    assert!(!blobs.contains(last.strip_prefix("sha256:").unwrap()));
    assert!(blobs.iter().all(|b| !b.starts_with(".tmp-")), "{blobs:?}");
    assert!(names(&fresh.cache_dir().join("roots")).is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prune_removes_what_is_not_kept() {
    let Some(env) = setup("prune_removes_what_is_not_kept") else {
        return;
    };
    env.reg.push(&env.layout, "v1", "test/busybox:v1", &[]);
    env.reg.push(&env.layout, "v3", "test/busybox:v3", &[]);
    let (i1, i3) = (
        env.reg.image("test/busybox:v1"),
        env.reg.image("test/busybox:v3"),
    );
    let store = env.store("cache");
    let p1 = store.ensure(&i1, PullPolicy::IfNotPresent).await.unwrap();
    let p3 = store.ensure(&i3, PullPolicy::IfNotPresent).await.unwrap();
    let v1_config =
        serde_json::from_slice::<serde_json::Value>(&env.reg.raw_manifest("test/busybox:v1"))
            .unwrap()["config"]["digest"]
            .as_str()
            .unwrap()
            .to_string();
    let v3_layers = layer_digests(&env.reg, "test/busybox:v3");
    let blob_dir = store.cache_dir().join("blobs/sha256");
    let hex = |d: &str| d.strip_prefix("sha256:").unwrap().to_string();

    let report = store.prune(&BTreeSet::from([p3.digest.clone()])).unwrap();
    assert_eq!(report.removed_images, std::slice::from_ref(&p1.digest));
    assert_eq!(report.removed_references, std::slice::from_ref(&i1));
    assert!(report.removed_blobs >= 2, "{report:?}"); // v1's manifest and config
    assert!(!p1.rootfs.exists());
    assert!(p3.rootfs.join("opq/new.txt").exists());
    let blobs = names(&blob_dir);
    assert!(!blobs.contains(&hex(&v1_config)));
    assert!(!blobs.contains(&hex(&p1.digest)));
    for l in &v3_layers {
        assert!(
            blobs.contains(&hex(l)),
            "shared and own layers of v3 are kept"
        );
    }
    let listed: Vec<String> = store
        .pulled()
        .unwrap()
        .into_iter()
        .map(|c| c.digest)
        .collect();
    assert_eq!(listed, std::slice::from_ref(&p3.digest));

    // Kept means usable without the registry; pruned means pulled again.
    let host = env.reg.host.clone();
    drop(env.reg);
    assert_eq!(
        store
            .ensure(&i3, PullPolicy::IfNotPresent)
            .await
            .unwrap()
            .rootfs,
        p3.rootfs
    );
    let e = store
        .ensure(&i1, PullPolicy::IfNotPresent)
        .await
        .unwrap_err();
    let text = e.to_string();
    assert!(matches!(e, ImageError::Unreachable { .. }), "{text}");
    assert!(text.contains(&host), "{text}");

    let report = store.prune(&BTreeSet::new()).unwrap();
    assert_eq!(report.removed_images, std::slice::from_ref(&p3.digest));
    assert!(names(&blob_dir).is_empty());
    assert!(store.pulled().unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_ensures_download_once() {
    let Some(env) = setup("concurrent_ensures_download_once") else {
        return;
    };
    env.reg.push(&env.layout, "v3", "test/busybox:v3", &[]);
    let image = env.reg.image("test/busybox:v3");
    let store = Arc::new(env.store("cache"));
    let tasks: Vec<_> = (0..6)
        .map(|_| {
            let (store, image) = (store.clone(), image.clone());
            tokio::spawn(async move { store.ensure(&image, PullPolicy::Always).await })
        })
        .collect();
    let mut results = Vec::new();
    for t in tasks {
        results.push(t.await.unwrap().unwrap());
    }
    assert!(results.iter().all(|p| p == &results[0]));
    let manifest: serde_json::Value =
        serde_json::from_slice(&env.reg.raw_manifest("test/busybox:v3")).unwrap();
    let mut blobs = vec![manifest["config"]["digest"].as_str().unwrap().to_string()];
    blobs.extend(layer_digests(&env.reg, "test/busybox:v3"));
    let logs = log_text();
    for b in &blobs {
        let downloads = logs
            .lines()
            .filter(|l| {
                l.contains("image blob downloaded") && l.contains(&image) && l.contains(b.as_str())
            })
            .count();
        assert_eq!(downloads, 1, "{b} downloaded {downloads} times");
    }
    assert_eq!(store.pulled().unwrap().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failures_name_the_image_and_the_registrys_answer() {
    let Some(env) = setup("failures_name_the_image_and_the_registrys_answer") else {
        return;
    };
    env.reg.push(&env.layout, "v1", "test/busybox:v1", &[]);
    let store = env.store("cache");

    let missing_tag = env.reg.image("test/busybox:nope");
    let e = store
        .ensure(&missing_tag, PullPolicy::IfNotPresent)
        .await
        .unwrap_err();
    let text = e.to_string();
    assert!(matches!(e, ImageError::NotFound { .. }), "{text}");
    assert!(
        text.contains("MANIFEST_UNKNOWN") && text.contains(&missing_tag),
        "{text}"
    );

    let missing_repo = env.reg.image("test/nothing:v1");
    let e = store
        .ensure(&missing_repo, PullPolicy::IfNotPresent)
        .await
        .unwrap_err();
    assert!(matches!(e, ImageError::NotFound { .. }), "{e}");

    let e = store
        .ensure("Bad/Name:x", PullPolicy::IfNotPresent)
        .await
        .unwrap_err();
    assert!(matches!(e, ImageError::InvalidReference { .. }), "{e}");

    let image = env.reg.image("test/busybox:v1");
    let e = store.ensure(&image, PullPolicy::Never).await.unwrap_err();
    assert!(matches!(e, ImageError::NotPresent { .. }), "{e}");

    // Connection refused: a port nobody listens on any more.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let down = format!("127.0.0.1:{port}/test/busybox:v1");
    let mut s = env.settings("cache-down");
    s.insecure_registries.push(format!("127.0.0.1:{port}"));
    let e = self::store(&s, env.dir.path())
        .ensure(&down, PullPolicy::IfNotPresent)
        .await
        .unwrap_err();
    let text = e.to_string();
    assert!(matches!(e, ImageError::Unreachable { .. }), "{text}");
    assert!(text.contains(&format!("127.0.0.1:{port}")), "{text}");

    // HTTPS spoken to a plain-HTTP registry: the hint names the setting.
    let mut s = env.settings("cache-tls");
    s.insecure_registries.clear();
    let e = self::store(&s, env.dir.path())
        .ensure(&image, PullPolicy::IfNotPresent)
        .await
        .unwrap_err();
    assert!(e.to_string().contains("insecureRegistries"), "{e}");

    // Size caps.
    let mut s = env.settings("cache-small");
    s.max_layer_bytes = 1000;
    let e = self::store(&s, env.dir.path())
        .ensure(&image, PullPolicy::IfNotPresent)
        .await
        .unwrap_err();
    let text = e.to_string();
    assert!(
        matches!(e, ImageError::TooLarge { .. }) && text.contains("maxLayerBytes"),
        "{text}"
    );
    let mut s = env.settings("cache-small2");
    s.max_unpacked_bytes = 64 * 1024;
    let small = self::store(&s, env.dir.path());
    let e = small
        .ensure(&image, PullPolicy::IfNotPresent)
        .await
        .unwrap_err();
    let text = e.to_string();
    assert!(
        matches!(e, ImageError::TooLarge { .. }) && text.contains("maxUnpackedBytes"),
        "{text}"
    );
    assert!(names(&small.cache_dir().join("roots")).is_empty());

    // Settings parse from the daemon config's camelCase keys, unknown keys refused.
    let parsed: ImageSettings = serde_json::from_value(serde_json::json!({
        "mirrors": {"ghcr.io": "127.0.0.1:5055"},
        "insecureRegistries": ["127.0.0.1:5055"],
        "resolveInterval": "30s",
        "maxLayerBytes": 10,
    }))
    .unwrap();
    assert_eq!(parsed.resolve_interval, std::time::Duration::from_secs(30));
    assert_eq!(
        parsed.max_unpacked_bytes,
        ImageSettings::default().max_unpacked_bytes
    );
    assert!(serde_json::from_value::<ImageSettings>(serde_json::json!({"mirror": {}})).is_err());
    assert_eq!(
        "IfNotPresent".parse::<PullPolicy>(),
        Ok(PullPolicy::IfNotPresent)
    );
    assert!("ifnotpresent".parse::<PullPolicy>().is_err());
    assert_eq!(PullPolicy::default_for("busybox"), PullPolicy::Always);
    assert_eq!(
        PullPolicy::default_for("busybox:1.36"),
        PullPolicy::IfNotPresent
    );
    assert_eq!(
        PullPolicy::default_for(&format!("busybox@sha256:{}", "a".repeat(64))),
        PullPolicy::IfNotPresent
    );
}
