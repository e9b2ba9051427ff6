//! The image runtime's setting: a real registry (`docker-registry`) on 127.0.0.1 serving a
//! small busybox image built with `umoci` and pushed with `skopeo` (the test helpers of
//! `tests/common/registry.rs`), and a daemon config with the image runtime on and one image
//! cache shared by every run, so that runs after the first pull find the image cached.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::registry::{Registry, build_images};

/// A running registry with the bench image, and the shared image cache.
pub struct ImageEnv {
    _registry: Registry,
    /// `127.0.0.1:<port>/bench/busybox:v1`: busybox-static, Entrypoint `/bin/sh -c`, user
    /// `1000:1000` (image `v1` of `build_images`).
    pub image: String,
    host: String,
    /// `images.cacheDir`, shared by every run.
    pub cache_dir: PathBuf,
    _tmp: tempfile::TempDir,
}

/// Starts the registry and pushes the image; `Err(why)` when a tool is missing or bubblewrap
/// cannot create a sandbox here.
pub fn start() -> Result<ImageEnv, String> {
    let missing: Vec<&str> = ["docker-registry", "umoci", "skopeo", "busybox", "unshare"]
        .into_iter()
        .filter(|t| crate::daemon::which(t).is_none())
        .collect();
    if !missing.is_empty() {
        return Err(format!(
            "not installed: {} (Debian: docker-registry umoci skopeo busybox-static util-linux)",
            missing.join(", ")
        ));
    }
    if !crate::common::bwrap_works() {
        return Err("bubblewrap cannot create a sandbox here".into());
    }
    let tmp = tempfile::tempdir().map_err(|e| e.to_string())?;
    let registry = Registry::start(&tmp.path().join("reg"));
    let layout = build_images(tmp.path());
    registry.push(&layout, "v1", "bench/busybox:v1", &[]);
    let cache_dir = tmp.path().join("image-cache");
    std::fs::create_dir_all(&cache_dir).map_err(|e| e.to_string())?;
    Ok(ImageEnv {
        image: registry.image("bench/busybox:v1"),
        host: registry.host.clone(),
        _registry: registry,
        cache_dir,
        _tmp: tmp,
    })
}

impl ImageEnv {
    /// Writes `<dir>/promised-images.yaml`: the image runtime on, this registry over plain
    /// HTTP, the shared cache; `extra` (YAML) appended.
    pub fn daemon_config(&self, dir: &Path, extra: &str) -> PathBuf {
        let path = dir.join("promised-images.yaml");
        std::fs::write(
            &path,
            format!(
                "images:\n  insecureRegistries: [\"{}\"]\n  cacheDir: {}\n{extra}\n",
                self.host,
                self.cache_dir.display()
            ),
        )
        .expect("daemon config");
        path
    }

    /// `promised images pull` of the config at `url`/`branch`: the cache is warm afterwards.
    /// Panics with the output when a pull fails.
    pub fn pull(&self, url: &str, branch: &str, daemon_config: &Path, state: &Path) -> String {
        let out = Command::new(env!("CARGO_BIN_EXE_promised"))
            .args(["images", "pull", "--config", url, "--ref", branch])
            .arg("--daemon-config")
            .arg(daemon_config)
            .arg("--state-dir")
            .arg(state)
            .output()
            .expect("promised images pull");
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(
            out.status.success(),
            "promised images pull: {text}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        text
    }
}
