//! The daemon config, `promised.yaml`: runtime settings that are not part of the Git config
//! repo (where state lives, how pipelines run, image overrides, daemon endpoints).
//!
//! Layered, later wins: built-in defaults → the YAML file (`--daemon-config`) → `PROMISED_*`
//! environment variables → command-line flags. Environment names are the key in upper snake
//! case, nested keys joined with `__`: `stateDir` is `PROMISED_STATE_DIR`,
//! `git.maxPushAttempts` is `PROMISED_GIT__MAX_PUSH_ATTEMPTS`. Every key is listed in the
//! README. Unknown keys are errors, so a typo never silently falls back to a default.
//! `PROMISED_*` variables that feed the command line or the systemd unit rather than settings
//! ([`NOT_SETTINGS`], and the `PROMISED_SECRET_*` credentials) are not read as keys.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use figment::Figment;
use figment::providers::{Env, Format, Serialized};
use serde::{Deserialize, Serialize};

pub use crate::pipeline::{ImageOverride, Mount, SandboxMode};

mod git;
pub use git::GitSettings;

/// Default first retry delay after a failed workflow (`retryBackoff`); doubles per failure up
/// to `maxRetryBackoff`.
pub const BASE_BACKOFF: Duration = Duration::from_secs(10);
/// Default longest delay between retries of a failing workflow (`maxRetryBackoff`).
pub const MAX_BACKOFF: Duration = Duration::from_secs(600);

/// Deadlines of network operations: fetching the config remote, fetching and pushing Git state
/// stores, S3 requests. A server that accepts a connection and never answers fails the
/// operation with an error naming the server and the operation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct NetworkSettings {
    /// Establishing a connection (TCP; for ssh also the banner and key exchange). Default
    /// `30s`.
    #[serde(with = "humantime_serde")]
    pub connect_timeout: Duration,
    /// Longest silence of a connected server (no byte received). Default `60s`.
    #[serde(with = "humantime_serde")]
    pub read_timeout: Duration,
    /// Longest time one whole operation may take: a fetch, a push, an S3 state store's check
    /// or apply. Default `5m`.
    #[serde(with = "humantime_serde")]
    pub operation_timeout: Duration,
}

impl Default for NetworkSettings {
    fn default() -> Self {
        let d = statestores::NetworkTimeouts::default();
        NetworkSettings {
            connect_timeout: d.connect,
            read_timeout: d.read,
            operation_timeout: d.operation,
        }
    }
}

impl NetworkSettings {
    /// The timeouts as the state stores and the config source take them (a zero duration
    /// would mean "no timeout" to the socket APIs: at least 1 ms).
    pub fn timeouts(&self) -> statestores::NetworkTimeouts {
        let min = Duration::from_millis(1);
        statestores::NetworkTimeouts {
            connect: self.connect_timeout.max(min),
            read: self.read_timeout.max(min),
            operation: self.operation_timeout.max(min),
        }
    }
}

/// `pipelineSecrets`: Secrets pipelines read with `env[].valueFrom.secretKeyRef`, kept apart
/// from the state stores' credentials (`secretsDir`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct PipelineSecretsSettings {
    /// `<dir>/<secret name>/<key>`: one file per key, its content the value. Must not be, hold
    /// or lie inside `secretsDir`, `$CREDENTIALS_DIRECTORY`, the state directory or the webhook
    /// secret file. Default: none.
    pub dir: Option<PathBuf>,
    /// Promise name → the Secrets (names under `dir`) its pipelines may read. A Promise
    /// naming any other Secret is invalid. Default: none.
    pub allow: BTreeMap<String, Vec<String>>,
}

/// `pipelineConfigMaps`: ConfigMaps pipelines read with `env[].valueFrom.configMapKeyRef`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct PipelineConfigMapsSettings {
    /// `<dir>/<config map name>/<key>`, readable by every Promise (so it must not hold or lie
    /// in a secrets directory). Default: none.
    pub dir: Option<PathBuf>,
}

/// `resourceBindingVersionStrategy`: what a request without a ResourceBinding runs at
/// (Kratix's config key of the same name, kratix-lifecycle.md §2.2).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BindingStrategy {
    /// `latest`: the request follows the Promise (Kratix's default).
    #[default]
    Floating,
    /// The version the Promise had when the request was first seen.
    Pinned,
}

/// Log output format.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

/// The daemon config. Field docs are the user docs (see README, "Daemon config").
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct Settings {
    /// State directory (state.json, blob cache, state store clones). Default: `$STATE_DIRECTORY`
    /// (systemd `StateDirectory=`), else `./.promised`.
    pub state_dir: PathBuf,
    /// Where each Pipeline's `/kratix/input`, `/kratix/output` and `/kratix/metadata` are
    /// created (one private directory per Pipeline, removed afterwards). Default:
    /// `$RUNTIME_DIRECTORY` (systemd `RuntimeDirectory=`), else `/dev/shm` when it is a
    /// writable directory (a tmpfs: creating and removing these directories on a journalled
    /// disk costs about as much as starting the sandbox), else `<stateDir>/runs`.
    pub run_dir: Option<PathBuf>,
    /// Secrets directory laid out as `<dir>/<secret name>/<key>`. Default:
    /// `$CREDENTIALS_DIRECTORY` (systemd `LoadCredential=`), else none (environment only).
    pub secrets_dir: Option<PathBuf>,
    /// Pipelines running at once (different requests). `0` = two per CPU core: a sandboxed
    /// run waits in the kernel for part of its time (namespace set-up and tear-down), so one
    /// per core leaves the cores idle then (docs/benchmarks.md, "Sandbox and cold pass").
    pub concurrency: usize,
    /// When a Promise changes, its requests re-run at most this many per second (their own
    /// specs unchanged); `0` = unlimited. Default 20.
    pub max_fanout_per_second: u32,
    /// Quiet time after a trigger (webhook, poll, file change) before a pass starts, so a burst
    /// of commits becomes one pass. Default `300ms`.
    #[serde(with = "humantime_serde")]
    pub debounce: Duration,
    /// Longest a pass waits for a burst to end. Default `5s`.
    #[serde(with = "humantime_serde")]
    pub max_debounce: Duration,
    /// How long SIGTERM waits for running pipelines before killing them. Default `60s`.
    #[serde(with = "humantime_serde")]
    pub shutdown_grace: Duration,
    /// Pipeline sandbox: `bwrap` (default) or `none`.
    pub sandbox: SandboxMode,
    /// Let every pipeline use the network. Default false (a Pipeline can opt in with the
    /// annotation `promised.dev/network: "true"`).
    pub allow_network: bool,
    /// Run sandboxed containers in the resident sandbox: one helper process that holds the
    /// namespaces and forks each run, instead of one bwrap per container (README "Resident sandbox").
    /// Default true; runs with network always use bwrap.
    pub resident_sandbox: bool,
    /// Kill a container's whole process group after this long. Default `10m`.
    #[serde(with = "humantime_serde")]
    pub pipeline_timeout: Duration,
    /// Largest total output of one Pipeline, in bytes. Default 50 MiB.
    pub max_output_bytes: u64,
    /// Captured stdout/stderr per container, in bytes (the tail is kept). Default 1 MiB.
    pub max_log_bytes: usize,
    /// Image reference → host command, mounts, working directory, environment and scratch
    /// directories ([`ImageOverride`]).
    pub image_overrides: BTreeMap<String, ImageOverride>,
    /// The image runtime (README "Images"): when set (`images: {}` is enough), a container
    /// whose image has no override is pulled from its registry and run inside the image's
    /// root file system. Default: unset (host process runtime only).
    pub images: Option<crate::image::ImageSettings>,
    /// Where Pipelines run: `process` (default; this host) or `kubernetes` (one Job per
    /// Pipeline; README "In a cluster"). A Promise may choose with the annotation
    /// `promised.dev/runtime`.
    pub runtime: crate::cluster::Runtime,
    /// The Kubernetes Job runtime's settings (used by `runtime: kubernetes` and by Promises
    /// annotated `promised.dev/runtime: kubernetes`).
    pub kubernetes: crate::cluster::KubernetesSettings,
    /// Leader election on a Lease (and sharding); unset: this replica always reconciles.
    pub leader_election: Option<crate::cluster::LeaderElectionSettings>,
    /// Secrets for `env[].valueFrom.secretKeyRef`, and which Promise may read which.
    pub pipeline_secrets: PipelineSecretsSettings,
    /// ConfigMaps for `env[].valueFrom.configMapKeyRef`.
    pub pipeline_config_maps: PipelineConfigMapsSettings,
    /// Config repo files read (globs). Default `**/*.yaml`, `**/*.yml`.
    pub include: Vec<String>,
    /// Config repo files skipped (globs), in addition to `.git/**`.
    pub exclude: Vec<String>,
    /// A document outside every Promise folder whose kind no Promise serves: `warn` (default;
    /// skipped with a warning) or `error` (README "Which YAML is config").
    pub unserved_kinds: crate::validate::UnservedKinds,
    /// Git state store options.
    pub git: GitSettings,
    /// Network deadlines (config remote, Git state stores, S3).
    pub network: NetworkSettings,
    /// HTTP listen address of `promised run`. Default `127.0.0.1:8473`.
    pub listen: String,
    /// How often `promised run` checks a Git config remote for new commits. Default `30s`.
    #[serde(with = "humantime_serde")]
    pub poll_interval: Duration,
    /// Full re-write of every placement, repairing drift (Kratix
    /// `stateStoreReconciliationInterval`). Default `10h`.
    #[serde(with = "humantime_serde")]
    pub resync_interval: Duration,
    /// How often the write-permission check of a ready state store is repeated, so a store
    /// that lost its permissions turns not ready without a write (README "Destination and
    /// state store status"; Kratix re-checks only on a change). `0s` = on every pass.
    /// Default `5m`.
    #[serde(with = "humantime_serde")]
    pub state_store_check_interval: Duration,
    /// `promised run`: first retry delay after a failed workflow, doubling per consecutive
    /// failure up to `maxRetryBackoff`. Default `10s` (times are kept to the second).
    #[serde(with = "humantime_serde")]
    pub retry_backoff: Duration,
    /// `promised run`: longest delay between retries of a failing workflow. Default `10m`.
    #[serde(with = "humantime_serde")]
    pub max_retry_backoff: Duration,
    /// File holding the webhook secret for `POST /hooks/git` (GitHub/Gitea HMAC, GitLab token).
    pub webhook_secret_file: Option<PathBuf>,
    /// `text` or `json`; `--log-format` wins. Read once at start (SIGHUP does not change it).
    pub log_format: LogFormat,
    /// Where health agents write HealthRecords (README "Health"): a state store of the config
    /// repo, or a directory in one, read every `pollInterval`. Default: none.
    pub health_state_store: Option<crate::health::HealthStoreSettings>,
    /// What a request without a ResourceBinding runs at: `floating` (default; the Promise's
    /// latest version) or `pinned` (the version it first ran at). README "Promise versions
    /// and ResourceBindings".
    pub resource_binding_version_strategy: BindingStrategy,
    /// Apply only config commits whose signature verifies (README "Trust and tenancy"):
    /// `{mode: head|all, sshAllowedSigners: FILE, gpgKeyring: FILE}`. Default: off.
    pub verify: Option<crate::config::verify::VerifySettings>,
    /// Consumer lint severities (README "Consumer lint"): `{rules: {<rule>: off|warning|error},
    /// skipDestinations: [NAME]}`.
    pub lint: crate::lint::LintSettings,
    /// The web console (README "Web console"; [`crate::web::WebSettings`]).
    pub web: crate::web::WebSettings,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            state_dir: std::env::var_os("STATE_DIRECTORY")
                .map(|s| {
                    PathBuf::from(
                        s.to_string_lossy()
                            .split(':')
                            .next()
                            .unwrap_or(".promised")
                            .to_string(),
                    )
                })
                .unwrap_or_else(|| PathBuf::from(".promised")),
            run_dir: None,
            secrets_dir: std::env::var_os("CREDENTIALS_DIRECTORY").map(PathBuf::from),
            concurrency: 0,
            max_fanout_per_second: 20,
            debounce: Duration::from_millis(300),
            max_debounce: Duration::from_secs(5),
            shutdown_grace: Duration::from_secs(60),
            sandbox: SandboxMode::Bwrap,
            allow_network: false,
            resident_sandbox: true,
            pipeline_timeout: Duration::from_secs(600),
            max_output_bytes: 50 * 1024 * 1024,
            max_log_bytes: 1024 * 1024,
            image_overrides: BTreeMap::new(),
            images: None,
            runtime: crate::cluster::Runtime::Process,
            kubernetes: crate::cluster::KubernetesSettings::default(),
            leader_election: None,
            pipeline_secrets: PipelineSecretsSettings::default(),
            pipeline_config_maps: PipelineConfigMapsSettings::default(),
            include: Vec::new(),
            exclude: Vec::new(),
            unserved_kinds: crate::validate::UnservedKinds::Warn,
            git: GitSettings::default(),
            network: NetworkSettings::default(),
            listen: "127.0.0.1:8473".into(),
            poll_interval: Duration::from_secs(30),
            resync_interval: Duration::from_secs(10 * 3600),
            state_store_check_interval: Duration::from_secs(300),
            retry_backoff: BASE_BACKOFF,
            max_retry_backoff: MAX_BACKOFF,
            webhook_secret_file: None,
            log_format: LogFormat::Text,
            health_state_store: None,
            verify: None,
            lint: Default::default(),
            web: Default::default(),
            resource_binding_version_strategy: BindingStrategy::Floating,
        }
    }
}

/// `PROMISED_*` environment variables (named without the prefix) that are inputs of the
/// command line, of `systemd/promised.service` or of the test suite, not daemon settings, so
/// [`Settings::load`] does not read them as keys: `PROMISED_LOG` (`--log`), `PROMISED_CONFIG`
/// (`--daemon-config`), `PROMISED_CONFIG_REPO` / `PROMISED_CONFIG_REF` (the unit's `--config`
/// and `--ref`), `PROMISED_REQUIRE_SANDBOX`, `_IMAGES`, `_KUBECTL`, `_GPG`, `_PYTHON` and
/// `_BROWSER` (CI: tests that need those tools fail rather than skip), `PROMISED_CRASH_AT` (the
/// crash loop's test hook, [`statestores::crash`]). `PROMISED_SECRET_<NAME>_<KEY>` (state
/// store credentials) are skipped too. Every other `PROMISED_*` variable is a setting, and an
/// unknown one is an error.
pub const NOT_SETTINGS: &[&str] = &[
    "LOG",
    "CONFIG",
    "CONFIG_REPO",
    "CONFIG_REF",
    "REQUIRE_SANDBOX",
    "REQUIRE_IMAGES",
    "REQUIRE_KUBECTL",
    "REQUIRE_GPG",
    "REQUIRE_PYTHON",
    "REQUIRE_BROWSER",
    "CRASH_AT",
];

/// Why the daemon config cannot be used; the message names the key or file.
#[derive(Debug, thiserror::Error)]
#[error("daemon config: {0}")]
pub struct SettingsError(pub String);

impl Settings {
    /// The wait before retrying after `failures` (≥ 1) consecutive failures of a workflow or
    /// of a daemon pass: `retryBackoff` doubling per failure, at most `maxRetryBackoff`.
    pub fn failure_backoff(&self, failures: u32) -> Duration {
        self.retry_backoff
            .saturating_mul(1 << (failures.clamp(1, 16) - 1))
            .min(self.max_retry_backoff)
    }

    /// Loads defaults, then `file` (if given), then `PROMISED_*` from the environment, then
    /// `overrides` (flag values, as a partial `Settings` map). Relative paths in the file are
    /// resolved against the file's directory.
    pub fn load(
        file: Option<&Path>,
        overrides: serde_json::Map<String, serde_json::Value>,
    ) -> Result<Settings, SettingsError> {
        let mut fig = Figment::from(Serialized::defaults(Settings::default()));
        if let Some(f) = file {
            if !f.is_file() {
                return Err(SettingsError(format!("{}: no such file", f.display())));
            }
            fig = fig.merge(serde_saphyr::figment::Yaml::file_exact(f));
        }
        fig = fig.merge(
            Env::prefixed("PROMISED_")
                .ignore(NOT_SETTINGS)
                // `PROMISED_SECRET_<NAME>_<KEY>` carry state store credentials, not settings.
                .filter(|k| !k.as_str().to_ascii_uppercase().starts_with("SECRET_"))
                .map(|k| env_key(k.as_str()).into())
                // After map: figment's map resets `lowercase` to true.
                .lowercase(false),
        );
        fig = fig.merge(Serialized::defaults(serde_json::Value::Object(overrides)));
        let mut s: Settings = fig.extract().map_err(|e| SettingsError(e.to_string()))?;
        if let Some(base) = file.and_then(Path::parent) {
            for o in s.image_overrides.values_mut() {
                for m in &mut o.mounts {
                    if m.host.is_relative() {
                        m.host = base.join(&m.host);
                    }
                }
            }
            for d in [&mut s.pipeline_secrets.dir, &mut s.pipeline_config_maps.dir]
                .into_iter()
                .flatten()
            {
                if d.is_relative() {
                    *d = base.join(&*d);
                }
            }
        }
        s.check_pipeline_dirs()?;
        crate::pipeline::check_overrides(&s.image_overrides).map_err(SettingsError)?;
        Ok(s)
    }

    /// Refuses a `pipelineSecrets.dir` or `pipelineConfigMaps.dir` that is, holds or lies in
    /// what pipelines must never read (the state stores' secrets, the state directory, the
    /// webhook secret), and a `pipelineConfigMaps.dir` that overlaps `pipelineSecrets.dir`
    /// (every Promise may read ConfigMaps): a Promise author must not reach the state store
    /// token by naming its Secret.
    pub fn check_pipeline_dirs(&self) -> Result<(), SettingsError> {
        let norm = |p: &Path| {
            std::fs::canonicalize(p)
                .or_else(|_| std::path::absolute(p))
                .unwrap_or_else(|_| p.to_path_buf())
        };
        let overlaps = |a: &Path, b: &Path| {
            let (a, b) = (norm(a), norm(b));
            a.starts_with(&b) || b.starts_with(&a)
        };
        let secrets = self.pipeline_secrets.dir.as_deref();
        let maps = self.pipeline_config_maps.dir.as_deref();
        if secrets.is_none() && !self.pipeline_secrets.allow.is_empty() {
            return Err(SettingsError(
                "pipelineSecrets.allow is set but pipelineSecrets.dir is not".into(),
            ));
        }
        for (key, dir) in [
            ("pipelineSecrets.dir", secrets),
            ("pipelineConfigMaps.dir", maps),
        ] {
            let Some(dir) = dir else { continue };
            for private in self.hidden_paths_without_pipeline_secrets() {
                if overlaps(dir, &private) {
                    return Err(SettingsError(format!(
                        "{key} {} overlaps {} (the state directory, the state stores' secrets or the webhook secret), which pipelines must never read; use a separate directory",
                        dir.display(),
                        private.display()
                    )));
                }
            }
        }
        if let (Some(s), Some(m)) = (secrets, maps)
            && overlaps(s, m)
        {
            return Err(SettingsError(format!(
                "pipelineConfigMaps.dir {} overlaps pipelineSecrets.dir {}: every Promise may read ConfigMaps; use separate directories",
                m.display(),
                s.display()
            )));
        }
        Ok(())
    }

    /// Where `env[].valueFrom` reads ([`crate::pipeline::env::EnvSources`]).
    pub fn env_sources(&self) -> crate::pipeline::env::EnvSources {
        crate::pipeline::env::EnvSources {
            secrets_dir: self.pipeline_secrets.dir.clone(),
            secrets_allow: self
                .pipeline_secrets
                .allow
                .iter()
                .map(|(p, names)| (p.clone(), names.iter().cloned().collect()))
                .collect(),
            config_maps_dir: self.pipeline_config_maps.dir.clone(),
        }
    }

    /// The config repo files read as config: `include` (default `**/*.yaml`, `**/*.yml`), and
    /// `exclude` on top of `.git/**`.
    pub fn file_filter(&self) -> crate::config::FileFilter {
        let mut filter = crate::config::FileFilter::default();
        if !self.include.is_empty() {
            filter.include = self.include.clone();
        }
        filter.exclude.extend(self.exclude.iter().cloned());
        filter
    }

    /// The validation settings (`unservedKinds`).
    pub fn validate_options(&self) -> crate::validate::Options {
        crate::validate::Options {
            unserved_kinds: self.unserved_kinds,
        }
    }

    /// The directory per-Pipeline run directories are created in (see [`Settings::run_dir`]).
    pub fn effective_run_dir(&self) -> PathBuf {
        if let Some(d) = &self.run_dir {
            return d.clone();
        }
        if let Some(d) = std::env::var_os("RUNTIME_DIRECTORY") {
            let first = d
                .to_string_lossy()
                .split(':')
                .next()
                .unwrap_or("")
                .to_string();
            if !first.is_empty() {
                return PathBuf::from(first);
            }
        }
        let shm = std::path::Path::new("/dev/shm");
        let writable = shm.is_dir()
            && tempfile::Builder::new()
                .prefix(".promised-probe-")
                .tempdir_in(shm)
                .is_ok();
        if writable {
            shm.to_path_buf()
        } else {
            self.state_dir.join("runs")
        }
    }

    /// The pipeline runner settings these give (per-run directories in
    /// [`Settings::effective_run_dir`]).
    pub fn runner(&self) -> crate::pipeline::RunnerConfig {
        crate::pipeline::RunnerConfig {
            sandbox: self.sandbox,
            timeout: self.pipeline_timeout,
            output_cap_bytes: self.max_output_bytes,
            log_cap_bytes: self.max_log_bytes,
            allow_network: self.allow_network,
            // The helper is this binary's `sandbox-helper`; a library caller has none.
            resident: self
                .resident_sandbox
                .then(|| std::env::current_exe().ok())
                .flatten()
                .filter(|_| self.sandbox == crate::pipeline::SandboxMode::Bwrap),
            image_overrides: self.image_overrides.clone(),
            work_dir: self.effective_run_dir(),
            hidden: self
                .hidden_paths()
                .iter()
                .map(|p| crate::pipeline::sandbox::Hidden::of(p))
                .collect(),
            env_sources: self.env_sources(),
            images: self.images.as_ref().map(|i| {
                crate::pipeline::Images(
                    crate::image::ImageStore::new(i, &self.state_dir, &self.network.timeouts())
                        .map(std::sync::Arc::new)
                        .map_err(|e| format!("images: {e}")),
                )
            }),
            runtime: self.runtime,
            kubernetes: Some(crate::pipeline::kubernetes::KubeRuntime::new(
                self.kubernetes.clone(),
            )),
            kube_api: Some(crate::pipeline::KubeApiHandle(std::sync::Arc::new(
                crate::pipeline::kubeapi::KubeApi::new(&self.state_dir),
            ))),
            ..crate::pipeline::RunnerConfig::default()
        }
    }

    /// What pipelines must never see, wherever it is: the state directory (state, cached
    /// outputs of every request, state store clones), the secrets directory (`secretsDir` and
    /// `$CREDENTIALS_DIRECTORY`), the webhook secret file and `pipelineSecrets.dir` (pipelines
    /// get the values they may read as environment variables, never the files).
    pub fn hidden_paths(&self) -> Vec<PathBuf> {
        let mut out = self.hidden_paths_without_pipeline_secrets();
        out.extend(self.pipeline_secrets.dir.clone());
        out.sort();
        out.dedup();
        out
    }

    fn hidden_paths_without_pipeline_secrets(&self) -> Vec<PathBuf> {
        let mut out = vec![self.state_dir.clone()];
        out.extend(self.secrets_dir.clone());
        out.extend(std::env::var_os("CREDENTIALS_DIRECTORY").map(PathBuf::from));
        out.extend(self.webhook_secret_file.clone());
        out.sort();
        out.dedup();
        out
    }

    /// The secret files these settings read: the webhook secret file (`webhookSecretFile`,
    /// else the systemd credential `webhook-secret`) and every file of the secrets directory
    /// (`<dir>/<secret>/<key>` and `<dir>/<secret>_<key>`), sorted.
    pub fn secret_files(&self) -> Vec<PathBuf> {
        let mut out = Vec::new();
        let credentials = std::env::var_os("CREDENTIALS_DIRECTORY").map(PathBuf::from);
        match &self.webhook_secret_file {
            Some(f) => out.push(f.clone()),
            None => out.extend(
                credentials
                    .as_ref()
                    .map(|d| d.join("webhook-secret"))
                    .filter(|p| p.is_file()),
            ),
        }
        if let Some(dir) = self.secrets_dir.as_ref().or(credentials.as_ref()) {
            for e in walkdir::WalkDir::new(dir)
                .min_depth(1)
                .max_depth(2)
                .follow_links(true)
                .into_iter()
                .flatten()
            {
                // Kubernetes Secret volumes keep the data under `..data/` and link to it.
                let hidden = e
                    .path()
                    .strip_prefix(dir)
                    .ok()
                    .and_then(|r| r.to_str())
                    .is_some_and(|r| r.starts_with(".."));
                if e.file_type().is_file() && !hidden {
                    out.push(e.into_path());
                }
            }
        }
        out.sort();
        out.dedup();
        out
    }

    /// Secret files ([`Settings::secret_files`]) that group or others may read, with their
    /// permission bits: `promised run` warns about each at start.
    pub fn loose_secret_files(&self) -> Vec<(PathBuf, u32)> {
        use std::os::unix::fs::PermissionsExt;
        self.secret_files()
            .into_iter()
            .filter_map(|p| {
                let mode = std::fs::metadata(&p).ok()?.permissions().mode() & 0o7777;
                (mode & 0o077 != 0).then_some((p, mode))
            })
            .collect()
    }

    /// Effective pipeline concurrency (≥ 1).
    pub fn effective_concurrency(&self) -> usize {
        if self.concurrency > 0 {
            self.concurrency
        } else {
            std::thread::available_parallelism()
                .map(|n| n.get() * 2)
                .unwrap_or(2)
        }
    }
}

/// `STATE_DIR` → `stateDir`; `GIT__MAX_PUSH_ATTEMPTS` → `git.maxPushAttempts`.
fn env_key(k: &str) -> String {
    k.split("__")
        .map(|part| {
            let mut out = String::new();
            for (i, w) in part.split('_').filter(|w| !w.is_empty()).enumerate() {
                let w = w.to_ascii_lowercase();
                if i == 0 {
                    out.push_str(&w);
                } else {
                    let mut c = w.chars();
                    if let Some(f) = c.next() {
                        out.push(f.to_ascii_uppercase());
                        out.push_str(c.as_str());
                    }
                }
            }
            out
        })
        .collect::<Vec<_>>()
        .join(".")
}

#[cfg(test)]
#[allow(clippy::result_large_err)] // figment::Jail's closure signature
mod tests {
    use super::*;

    #[test]
    fn env_keys() {
        assert_eq!(env_key("STATE_DIR"), "stateDir");
        assert_eq!(env_key("state_dir"), "stateDir");
        assert_eq!(env_key("GIT__MAX_PUSH_ATTEMPTS"), "git.maxPushAttempts");
        assert_eq!(env_key("CONCURRENCY"), "concurrency");
    }

    #[test]
    fn layering_file_env_flags() {
        figment::Jail::expect_with(|jail| {
            jail.create_file(
                "promised.yaml",
                "stateDir: /var/lib/x\nconcurrency: 3\npipelineTimeout: 2m\nimageOverrides:\n  example.com/img:v1:\n    command: [sh, run.sh]\n    mounts:\n      - {host: assets, target: /tmp/transfer}\ngit:\n  maxPushAttempts: 9\n",
            )?;
            jail.set_env("PROMISED_CONCURRENCY", "4");
            jail.set_env("PROMISED_GIT__MAX_PUSH_ATTEMPTS", "7");
            jail.set_env("PROMISED_NETWORK__OPERATION_TIMEOUT", "90s");
            // State store credentials share the prefix but are not settings.
            jail.set_env("PROMISED_SECRET_MINIO_CREDS_ACCESSKEYID", "AKIA");
            let mut flags = serde_json::Map::new();
            flags.insert("stateDir".into(), "/tmp/flag".into());
            let s = Settings::load(Some(Path::new("promised.yaml")), flags)
                .map_err(|e| e.to_string())?;
            assert_eq!(s.state_dir, PathBuf::from("/tmp/flag"));
            assert_eq!(s.concurrency, 4);
            assert_eq!(s.git.max_push_attempts, 7);
            assert_eq!(s.network.operation_timeout, Duration::from_secs(90));
            assert_eq!(s.network.connect_timeout, Duration::from_secs(30));
            assert_eq!(s.pipeline_timeout, Duration::from_secs(120));
            let o = &s.image_overrides["example.com/img:v1"];
            assert_eq!(o.command, ["sh", "run.sh"]);
            assert!(o.mounts[0].host.ends_with("assets"));
            Ok(())
        });
    }

    #[test]
    fn command_line_and_unit_variables_are_not_settings() {
        figment::Jail::expect_with(|jail| {
            // What systemd/promised.service and promised.env.example set, and clap's inputs.
            jail.set_env("PROMISED_CONFIG_REPO", "https://example.com/config.git");
            jail.set_env("PROMISED_CONFIG_REF", "main");
            jail.set_env("PROMISED_CONFIG", "/etc/promised/promised.yaml");
            jail.set_env("PROMISED_LOG", "debug");
            jail.set_env("PROMISED_LISTEN", "127.0.0.1:9000");
            let s = Settings::load(None, Default::default()).map_err(|e| e.to_string())?;
            assert_eq!(s.listen, "127.0.0.1:9000");
            // A typo is still an error, naming the key.
            jail.set_env("PROMISED_CONFIG_REPOS", "x");
            let err = Settings::load(None, Default::default()).unwrap_err();
            assert!(err.to_string().contains("configRepos"), "{err}");
            Ok(())
        });
    }

    #[test]
    fn pipeline_secrets_are_kept_apart_from_the_state_store_secrets() {
        let tmp = tempfile::tempdir().unwrap();
        let store = tmp.path().join("secrets");
        let base = Settings {
            state_dir: tmp.path().join("state"),
            secrets_dir: Some(store.clone()),
            ..Settings::default()
        };
        let with = |secrets: Option<PathBuf>, maps: Option<PathBuf>| {
            let mut s = base.clone();
            s.pipeline_secrets.dir = secrets;
            s.pipeline_config_maps.dir = maps;
            s.pipeline_secrets
                .allow
                .insert("app".into(), vec!["db".into()]);
            s.check_pipeline_dirs()
        };
        let ok = tmp.path().join("pipeline-secrets");
        with(Some(ok.clone()), Some(tmp.path().join("maps"))).unwrap();
        // The same directory, one inside the other, or the state directory: refused.
        for bad in [
            store.clone(),
            store.join("git-credentials"),
            tmp.path().to_path_buf(),
            tmp.path().join("state/x"),
        ] {
            let e = with(Some(bad.clone()), None).unwrap_err().to_string();
            assert!(e.contains("pipelineSecrets.dir"), "{}: {e}", bad.display());
            let e = with(Some(ok.clone()), Some(bad.clone()))
                .unwrap_err()
                .to_string();
            assert!(
                e.contains("pipelineConfigMaps.dir"),
                "{}: {e}",
                bad.display()
            );
        }
        // Every Promise may read ConfigMaps: they may not overlap the pipeline secrets.
        let e = with(Some(ok.clone()), Some(ok.join("x")))
            .unwrap_err()
            .to_string();
        assert!(e.contains("overlaps pipelineSecrets.dir"), "{e}");
        assert!(with(None, None).unwrap_err().to_string().contains("allow"));
        // Pipelines never see the files, and get only what the allow list names.
        let mut s = base.clone();
        s.pipeline_secrets.dir = Some(ok.clone());
        assert!(s.hidden_paths().contains(&ok));
        s.pipeline_secrets
            .allow
            .insert("app".into(), vec!["db".into()]);
        let sources = s.runner().env_sources;
        assert_eq!(sources.secrets_dir, Some(ok));
        assert!(sources.secrets_allow["app"].contains("db"));
    }

    #[test]
    fn unknown_keys_are_errors() {
        figment::Jail::expect_with(|jail| {
            jail.create_file("promised.yaml", "stateDri: /x\n")?;
            let err =
                Settings::load(Some(Path::new("promised.yaml")), Default::default()).unwrap_err();
            assert!(err.to_string().contains("stateDri"), "{err}");
            Ok(())
        });
    }

    #[test]
    fn run_dir_setting_wins_and_the_default_is_a_usable_directory() {
        let tmp = tempfile::tempdir().unwrap();
        let mut s = Settings {
            state_dir: tmp.path().join("state"),
            ..Settings::default()
        };
        let default = s.effective_run_dir();
        assert!(
            default == std::path::Path::new("/dev/shm")
                || default == tmp.path().join("state/runs")
                || std::env::var_os("RUNTIME_DIRECTORY").is_some(),
            "{}",
            default.display()
        );
        s.run_dir = Some(tmp.path().join("elsewhere"));
        assert_eq!(s.effective_run_dir(), tmp.path().join("elsewhere"));
        assert_eq!(s.runner().work_dir, tmp.path().join("elsewhere"));
    }
}
