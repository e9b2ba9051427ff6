//! `promised images pull|prune|list`: the image cache of the image runtime (the daemon
//! config's `images:` section, [`crate::image`]) from the command line.
//!
//! - `pull` loads and validates a config repo, collects every image its Promises' pipelines
//!   name (promise and resource workflows, configure and delete) that has no image override,
//!   and pulls each with its container's `imagePullPolicy`, as the runtime would
//!   ([`PullPolicy::for_container`]), a few at a time.
//! - `prune` removes the cached images (unpacked roots and blobs) that no Promise of a config
//!   repo uses: the config's images are resolved from the cache only (no network) and kept.
//! - `list` prints what the cache holds.
//!
//! Exit codes: `0` done, `1` some image could not be pulled or the config repo has errors
//! (`pull`; the other images were still pulled), `2` the command could not run (bad flags,
//! no `images:` in the daemon config, unreadable config repo, a cache error).

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::sync::Arc;

use clap::{Args, Subcommand};
use futures_util::StreamExt;
use serde::Serialize;
use serde_json::Value;

use super::DaemonConfigArgs;
use super::output::{TableFormat, human_bytes, write_json, write_yaml};
use super::stderr::{eprint_diagnostic, eprint_error};
use crate::config::Loader;
use crate::image::{CachedImage, ImageError, ImageStore, PullPolicy};
use crate::settings::Settings;
use crate::validate::{self, ValidConfig};

/// How many images `promised images pull` pulls at once.
pub const PULL_CONCURRENCY: usize = 4;

/// Examples at the end of `promised images --help`.
pub(super) const IMAGES_EXAMPLES: &str = "\
Needs the image runtime: an images section in the daemon config (images: {} is enough).

Examples:
  promised images pull --config testdata/quickstart --daemon-config /etc/promised/promised.yaml
  promised images prune --config https://github.com/acme/platform-config.git --ref main --daemon-config /etc/promised/promised.yaml
  promised images list --daemon-config /etc/promised/promised.yaml";

/// Exit status and examples at the end of `promised images pull --help`.
const PULL_EXAMPLES: &str = "\
Pulls every image that the pipelines of the config repo's Promises name (promise and resource
workflows, configure and delete) and that has no imageOverrides entry, each with its
container's imagePullPolicy, as the daemon would before running it. Prints one line per image:
its digest, its unpacked size, and pulled, cached or why it could not be pulled.

Exit status: 0 every image is in the cache, 1 some image could not be pulled (the others still
were) or the config repo has errors, 2 the command could not run (no images section in the
daemon config, unreadable config repo).

Examples:
  promised images pull --config testdata/quickstart --daemon-config /etc/promised/promised.yaml
  promised images pull --config https://github.com/acme/platform-config.git --ref main --daemon-config /etc/promised/promised.yaml --output json
  promised images pull --config . --daemon-config promised.yaml --state-dir /var/lib/promised";

/// Exit status and examples at the end of `promised images prune --help`.
const PRUNE_EXAMPLES: &str = "\
Keeps the cached images that the config repo's Promises use (their references resolved from
the cache, without asking a registry) and removes every other unpacked image, the blobs only
they used, and the references resolved to them. Give the config repo the daemon runs: a
running daemon pulls again whatever it needs that was removed, the next time it runs that
pipeline. Refuses to prune while a Promise of the config repo is invalid or a config file does
not load, since the images such a Promise uses are not known.

Exit status: 0 pruned, 2 the command could not run (no images section in the daemon config,
unreadable or invalid config repo, a cache error).

Examples:
  promised images prune --config testdata/quickstart --daemon-config /etc/promised/promised.yaml
  promised images prune --config https://github.com/acme/platform-config.git --ref main --daemon-config /etc/promised/promised.yaml --output json";

/// Exit status and examples at the end of `promised images list --help`.
const LIST_EXAMPLES: &str = "\
Prints every unpacked image in the cache: its digest, its unpacked size and the references
last resolved to it.

Exit status: 0 listed, 2 the command could not run (no images section in the daemon config, a
cache error).

Examples:
  promised images list --daemon-config /etc/promised/promised.yaml
  promised images list --state-dir /var/lib/promised --daemon-config promised.yaml --output yaml";

/// `promised images …`.
#[derive(Debug, Clone, Args)]
pub struct ImagesArgs {
    /// The images subcommand.
    #[command(subcommand)]
    pub command: ImagesCommand,
}

impl ImagesArgs {
    /// The daemon config flags of the subcommand.
    pub fn daemon(&self) -> &DaemonConfigArgs {
        match &self.command {
            ImagesCommand::Pull(a) => &a.daemon,
            ImagesCommand::Prune(a) => &a.daemon,
            ImagesCommand::List(a) => &a.daemon,
        }
    }
}

/// Images subcommands.
#[derive(Debug, Clone, Subcommand)]
pub enum ImagesCommand {
    /// Pull every image the config repo's pipelines use into the image cache.
    #[command(after_help = PULL_EXAMPLES)]
    Pull(PullArgs),
    /// Remove cached images that no Promise of the config repo uses.
    #[command(after_help = PRUNE_EXAMPLES)]
    Prune(PruneArgs),
    /// List the images in the image cache.
    #[command(after_help = LIST_EXAMPLES)]
    List(ListArgs),
}

/// The config repo of `images pull` and `images prune`.
#[derive(Debug, Clone, Args)]
pub struct ConfigRepoArgs {
    /// The config repo: a directory, or a Git repository (URL or path; with --ref).
    #[arg(long, value_name = "DIR|GIT-URL")]
    pub config: String,
    /// Git ref to read: branch, tag or commit (makes --config a Git repository; default HEAD
    /// for URLs).
    #[arg(long = "ref", value_name = "REF")]
    pub reference: Option<String>,
}

/// `promised images pull`.
#[derive(Debug, Clone, Args)]
pub struct PullArgs {
    /// The config repo.
    #[command(flatten)]
    pub repo: ConfigRepoArgs,
    /// Daemon config and state directory.
    #[command(flatten)]
    pub daemon: DaemonConfigArgs,
    /// Output format.
    #[arg(long, short, value_enum, value_name = "FORMAT", default_value_t)]
    pub output: TableFormat,
}

/// `promised images prune`.
#[derive(Debug, Clone, Args)]
pub struct PruneArgs {
    /// The config repo whose images are kept.
    #[command(flatten)]
    pub repo: ConfigRepoArgs,
    /// Daemon config and state directory.
    #[command(flatten)]
    pub daemon: DaemonConfigArgs,
    /// Output format.
    #[arg(long, short, value_enum, value_name = "FORMAT", default_value_t)]
    pub output: TableFormat,
}

/// `promised images list`.
#[derive(Debug, Clone, Args)]
pub struct ListArgs {
    /// Daemon config and state directory.
    #[command(flatten)]
    pub daemon: DaemonConfigArgs,
    /// Output format.
    #[arg(long, short, value_enum, value_name = "FORMAT", default_value_t)]
    pub output: TableFormat,
}

/// Runs `promised images …`; returns the exit code (see the module docs).
pub fn run(a: &ImagesArgs, out: &mut dyn Write) -> i32 {
    match &a.command {
        ImagesCommand::Pull(a) => pull_cmd(a, out),
        ImagesCommand::Prune(a) => prune_cmd(a, out),
        ImagesCommand::List(a) => list_cmd(a, out),
    }
}

/// An image a config repo's pipelines use, with the policy it is pulled with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UsedImage {
    /// The reference as written in the Pipeline.
    pub image: String,
    /// The pull policy: the strongest of its containers' (`Always` over `IfNotPresent` over
    /// `Never`), or the error of an invalid `imagePullPolicy`.
    pub policy: Result<PullPolicy, String>,
    /// The Promises whose pipelines name it, sorted.
    pub promises: Vec<String>,
}

fn policy_rank(p: &Result<PullPolicy, String>) -> u8 {
    match p {
        Ok(PullPolicy::Never) => 0,
        Ok(PullPolicy::IfNotPresent) => 1,
        Ok(PullPolicy::Always) => 2,
        Err(_) => 3,
    }
}

/// Every image the pipelines of `cfg`'s valid Promises name (promise and resource workflows,
/// configure and delete) that `overrides` does not run as a host command, sorted by image.
pub fn used_images<T>(cfg: &ValidConfig, overrides: &BTreeMap<String, T>) -> Vec<UsedImage> {
    let mut used: BTreeMap<String, UsedImage> = BTreeMap::new();
    for p in &cfg.promises {
        let w = &p.promise.object.spec.workflows;
        let pipelines = [
            &w.promise.configure,
            &w.promise.delete,
            &w.resource.configure,
            &w.resource.delete,
        ];
        for pipeline in pipelines.into_iter().flatten() {
            for c in &pipeline.spec.containers {
                if c.image.is_empty() || overrides.contains_key(&c.image) {
                    continue;
                }
                let policy = PullPolicy::for_container(
                    c.image_pull_policy.as_ref().and_then(Value::as_str),
                    &c.image,
                );
                let entry = used.entry(c.image.clone()).or_insert_with(|| UsedImage {
                    image: c.image.clone(),
                    policy: policy.clone(),
                    promises: Vec::new(),
                });
                if policy_rank(&policy) > policy_rank(&entry.policy) {
                    entry.policy = policy;
                }
                if !entry.promises.iter().any(|n| n == p.name()) {
                    entry.promises.push(p.name().to_string());
                }
            }
        }
    }
    let mut out: Vec<UsedImage> = used.into_values().collect();
    for u in &mut out {
        u.promises.sort();
    }
    out
}

/// The daemon settings and the image store they configure; prints the error and returns
/// `None` when there is none (no `images:` section, or it does not open).
fn open_store(daemon: &DaemonConfigArgs) -> Option<(Settings, ImageStore)> {
    let settings = match daemon.settings(Default::default()) {
        Ok(s) => s,
        Err(e) => {
            eprint_error(e);
            return None;
        }
    };
    let Some(images) = &settings.images else {
        let which = match &daemon.daemon_config {
            Some(p) => format!("the daemon config {} has no images section", p.display()),
            None => "no daemon config was given (--daemon-config FILE)".to_string(),
        };
        eprint_error(format_args!(
            "the image runtime is off: {which}; add `images: {{}}` to the daemon config (with insecureRegistries, mirrors or authFile as needed) to pull, prune or list pipeline images"
        ));
        return None;
    };
    match ImageStore::new(images, &settings.state_dir, &settings.network.timeouts()) {
        Ok(store) => Some((settings, store)),
        Err(e) => {
            eprint_error(format_args!("images: {e}"));
            None
        }
    }
}

/// Loads and validates the config repo (`--config`, `--ref`) with the daemon config's
/// `include`, `exclude` and `unservedKinds`; a Git repository is fetched into the state
/// directory's config cache, as `promised reconcile` does. Diagnostics go to stderr.
fn load_config(repo: &ConfigRepoArgs, settings: &Settings) -> Result<ValidConfig, String> {
    let source = super::source_of(&repo.config, repo.reference.as_deref());
    let loaded = Loader::new(
        source,
        &settings.file_filter(),
        Some(settings.state_dir.join("config-cache")),
        None,
    )
    .map_err(|e| e.to_string())?
    .with_network(settings.network.timeouts())
    .load()
    .map_err(|e| e.to_string())?;
    let cfg = validate::validate_with_options(
        loaded.objects,
        &mut Default::default(),
        &settings.validate_options(),
    );
    for d in &cfg.diagnostics {
        eprint_diagnostic(d);
    }
    Ok(cfg)
}

/// The unpacked images in the cache (blocking, run on the blocking pool).
async fn cached(store: &Arc<ImageStore>) -> Result<Vec<CachedImage>, String> {
    let s = Arc::clone(store);
    tokio::task::spawn_blocking(move || s.pulled())
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| e.to_string())
}

/// One line of `promised images pull`.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct PullRow {
    image: String,
    /// `Always`, `IfNotPresent` or `Never`; absent when `imagePullPolicy` is invalid.
    #[serde(skip_serializing_if = "Option::is_none")]
    policy: Option<String>,
    promises: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    digest: Option<String>,
    /// Bytes of the unpacked root.
    #[serde(skip_serializing_if = "Option::is_none")]
    size: Option<u64>,
    /// `pulled`, `cached` or `failed`.
    status: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
}

/// Runs `promised images pull`.
fn pull_cmd(a: &PullArgs, out: &mut dyn Write) -> i32 {
    let Some((settings, store)) = open_store(&a.daemon) else {
        return 2;
    };
    let cfg = match load_config(&a.repo, &settings) {
        Ok(c) => c,
        Err(e) => {
            eprint_error(e);
            return 2;
        }
    };
    let used = used_images(&cfg, &settings.image_overrides);
    let Some(rt) = super::runtime() else {
        return 2;
    };
    let store = Arc::new(store);
    let rows = rt.block_on(async {
        let before: BTreeSet<String> = cached(&store)
            .await
            .map(|c| c.into_iter().map(|i| i.digest).collect())
            .unwrap_or_default();
        let store = &store;
        let before = &before;
        let mut rows: Vec<PullRow> = futures_util::stream::iter(used)
            .map(|u| async move {
                let mut row = PullRow {
                    image: u.image.clone(),
                    policy: u.policy.as_ref().ok().map(|p| format!("{p:?}")),
                    promises: u.promises,
                    digest: None,
                    size: None,
                    status: "failed",
                    error: None,
                };
                let result = match u.policy {
                    Ok(policy) => store.ensure(&u.image, policy).await.map_err(|e| {
                        tracing::debug!(image = u.image, error = %e, "pull failed");
                        e.to_string()
                    }),
                    Err(e) => Err(format!("image {:?}: imagePullPolicy: {e}", u.image)),
                };
                match result {
                    Ok(p) => {
                        row.status = if before.contains(&p.digest) {
                            "cached"
                        } else {
                            "pulled"
                        };
                        row.digest = Some(p.digest);
                        row.size = Some(p.size);
                    }
                    Err(e) => row.error = Some(e),
                }
                row
            })
            .buffer_unordered(PULL_CONCURRENCY)
            .collect()
            .await;
        rows.sort_by(|a, b| a.image.cmp(&b.image));
        rows
    });
    let failed = rows.iter().filter(|r| r.error.is_some()).count();
    let res = match a.output {
        TableFormat::Json => write_json(out, &rows),
        TableFormat::Yaml => write_yaml(out, &rows),
        TableFormat::Table => write_pull_table(&rows, out),
    };
    if let Err(e) = res {
        eprint_error(format_args!("writing output: {e}"));
        return 2;
    }
    if failed > 0 || cfg.has_errors() { 1 } else { 0 }
}

fn write_pull_table(rows: &[PullRow], out: &mut dyn Write) -> std::io::Result<()> {
    let width = rows.iter().map(|r| r.image.len()).max().unwrap_or(5).max(5);
    let dw = "sha256:".len() + 64;
    writeln!(
        out,
        "{:<width$}  {:<dw$}  {:>9}  STATUS",
        "IMAGE", "DIGEST", "SIZE"
    )?;
    for r in rows {
        writeln!(
            out,
            "{:<width$}  {:<dw$}  {:>9}  {}",
            r.image,
            r.digest.as_deref().unwrap_or("-"),
            r.size.map(human_bytes).unwrap_or_else(|| "-".into()),
            r.error.as_deref().unwrap_or(r.status)
        )?;
    }
    let with = |s: &str| rows.iter().filter(|r| r.status == s).count();
    writeln!(
        out,
        "{}: {} pulled, {} cached, {} failed",
        count(rows.len(), "image"),
        with("pulled"),
        with("cached"),
        with("failed")
    )
}

/// One image in the output of `promised images prune` and `promised images list`.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct ImageLine {
    digest: String,
    /// Bytes of the unpacked root.
    size: u64,
    /// References last resolved to it.
    references: Vec<String>,
}

impl From<CachedImage> for ImageLine {
    fn from(c: CachedImage) -> Self {
        ImageLine {
            digest: c.digest,
            size: c.size,
            references: c.references,
        }
    }
}

/// The report of `promised images prune`.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct PruneOutput {
    /// Unpacked images removed.
    removed: Vec<ImageLine>,
    /// Unpacked images kept.
    kept: Vec<ImageLine>,
    /// References forgotten.
    removed_references: Vec<String>,
    /// Blob files removed.
    removed_blobs: usize,
    /// Bytes of the blob files removed.
    removed_blob_bytes: u64,
    /// Bytes of the unpacked roots removed.
    removed_root_bytes: u64,
    /// Both together.
    freed_bytes: u64,
}

/// Runs `promised images prune`.
fn prune_cmd(a: &PruneArgs, out: &mut dyn Write) -> i32 {
    let Some((settings, store)) = open_store(&a.daemon) else {
        return 2;
    };
    let cfg = match load_config(&a.repo, &settings) {
        Ok(c) => c,
        Err(e) => {
            eprint_error(e);
            return 2;
        }
    };
    // Images of an invalid Promise, or of one in a file that does not load, are unknown: the
    // daemon keeps running such a Promise's last good version, so nothing may be pruned.
    let mut invalid: BTreeSet<String> = cfg
        .rejected
        .iter()
        .filter(|r| r.id.kind == "Promise")
        .map(|r| format!("{} ({})", r.id, r.origin.file))
        .collect();
    invalid.extend(cfg.unloadable.keys().map(|f| format!("file {f}")));
    for d in cfg.diagnostics.iter().filter(|d| d.is_error()) {
        match &d.object {
            Some(o) if o.kind == "Promise" => {
                invalid.insert(format!("{o} ({})", d.file));
            }
            Some(_) => {}
            None => {
                invalid.insert(format!("file {}", d.file));
            }
        }
    }
    if !invalid.is_empty() {
        eprint_error(format!(
            "not pruning: the images of {} are not known (fix the config repo first; the daemon keeps using what they used)",
            invalid.into_iter().collect::<Vec<_>>().join(", ")
        ));
        return 2;
    }
    let used = used_images(&cfg, &settings.image_overrides);
    let Some(rt) = super::runtime() else {
        return 2;
    };
    let store = Arc::new(store);
    let result: Result<PruneOutput, String> = rt.block_on(async {
        // Resolved from the cache only: an image not in the cache has nothing to keep.
        let mut keep = BTreeSet::new();
        for u in &used {
            match store.resolve(&u.image, PullPolicy::Never).await {
                Ok(r) => {
                    keep.insert(r.digest);
                }
                Err(ImageError::NotPresent { .. } | ImageError::InvalidReference { .. }) => {}
                Err(e) => return Err(e.to_string()),
            }
        }
        let before = cached(&store).await?;
        let s = Arc::clone(&store);
        let k = keep.clone();
        let report = tokio::task::spawn_blocking(move || s.prune(&k))
            .await
            .map_err(|e| e.to_string())?
            .map_err(|e| e.to_string())?;
        let removed_set: BTreeSet<&String> = report.removed_images.iter().collect();
        let (removed, kept): (Vec<CachedImage>, Vec<CachedImage>) = before
            .into_iter()
            .partition(|c| removed_set.contains(&c.digest));
        let removed_root_bytes = removed.iter().map(|c| c.size).sum();
        Ok(PruneOutput {
            removed: removed.into_iter().map(ImageLine::from).collect(),
            kept: kept.into_iter().map(ImageLine::from).collect(),
            removed_references: report.removed_references,
            removed_blobs: report.removed_blobs,
            removed_blob_bytes: report.removed_blob_bytes,
            removed_root_bytes,
            freed_bytes: removed_root_bytes + report.removed_blob_bytes,
        })
    });
    let report = match result {
        Ok(r) => r,
        Err(e) => {
            eprint_error(format_args!("pruning the image cache: {e}"));
            return 2;
        }
    };
    let res = match a.output {
        TableFormat::Json => write_json(out, &report),
        TableFormat::Yaml => write_yaml(out, &report),
        TableFormat::Table => write_prune_table(&report, out),
    };
    if let Err(e) = res {
        eprint_error(format_args!("writing output: {e}"));
        return 2;
    }
    0
}

fn write_prune_table(r: &PruneOutput, out: &mut dyn Write) -> std::io::Result<()> {
    for (what, lines) in [("removed", &r.removed), ("kept", &r.kept)] {
        for l in lines {
            writeln!(
                out,
                "{what:<7}  {}  {:>9}  {}",
                l.digest,
                human_bytes(l.size),
                references_text(&l.references)
            )?;
        }
    }
    writeln!(
        out,
        "freed {}: {} ({}), {} ({}); kept {}",
        human_bytes(r.freed_bytes),
        count(r.removed.len(), "unpacked image"),
        human_bytes(r.removed_root_bytes),
        count(r.removed_blobs, "blob"),
        human_bytes(r.removed_blob_bytes),
        count(r.kept.len(), "image")
    )
}

/// An image's references for a table cell: comma-separated, `-` when none.
fn references_text(references: &[String]) -> String {
    if references.is_empty() {
        "-".to_string()
    } else {
        references.join(",")
    }
}

/// `1 image`, `2 images`.
fn count(n: usize, what: &str) -> String {
    if n == 1 {
        format!("1 {what}")
    } else {
        format!("{n} {what}s")
    }
}

/// Runs `promised images list`.
fn list_cmd(a: &ListArgs, out: &mut dyn Write) -> i32 {
    let Some((_, store)) = open_store(&a.daemon) else {
        return 2;
    };
    let images: Vec<ImageLine> = match store.pulled() {
        Ok(c) => c.into_iter().map(ImageLine::from).collect(),
        Err(e) => {
            eprint_error(format_args!("listing the image cache: {e}"));
            return 2;
        }
    };
    let res = match a.output {
        TableFormat::Json => write_json(out, &images),
        TableFormat::Yaml => write_yaml(out, &images),
        TableFormat::Table => (|| {
            let dw = "sha256:".len() + 64;
            writeln!(out, "{:<dw$}  {:>9}  REFERENCES", "DIGEST", "SIZE")?;
            for l in &images {
                writeln!(
                    out,
                    "{:<dw$}  {:>9}  {}",
                    l.digest,
                    human_bytes(l.size),
                    references_text(&l.references)
                )?;
            }
            writeln!(
                out,
                "{}, {}",
                count(images.len(), "image"),
                human_bytes(images.iter().map(|l| l.size).sum())
            )
        })(),
    };
    if let Err(e) = res {
        eprint_error(format_args!("writing output: {e}"));
        return 2;
    }
    0
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Images are collected from every workflow and action, once each, without overridden
    /// ones, with the strongest policy of their containers.
    #[test]
    fn used_images_of_every_workflow() {
        let promise = |name: &str, workflows: &str| {
            format!(
                "apiVersion: platform.kratix.io/v1alpha1\nkind: Promise\nmetadata: {{name: {name}}}\nspec:\n  workflows:\n{workflows}"
            )
        };
        let pipeline = |name: &str, images: &[(&str, Option<&str>)]| {
            let mut s = format!(
                "        - apiVersion: platform.kratix.io/v1alpha1\n          kind: Pipeline\n          metadata: {{name: {name}}}\n          spec:\n            containers:\n"
            );
            for (i, (image, policy)) in images.iter().enumerate() {
                s.push_str(&format!(
                    "              - name: c{i}\n                image: {image}\n"
                ));
                if let Some(p) = policy {
                    s.push_str(&format!("                imagePullPolicy: {p}\n"));
                }
            }
            s
        };
        let a = promise(
            "a",
            &format!(
                "    promise:\n      configure:\n{}      delete:\n{}    resource:\n      configure:\n{}      delete:\n{}",
                pipeline("p", &[("reg/one:v1", None)]),
                pipeline("d", &[("reg/two:v1", None)]),
                pipeline(
                    "r",
                    &[("reg/one:v1", Some("Always")), ("reg/override:v1", None)]
                ),
                pipeline("rd", &[("reg/three", None)]),
            ),
        );
        let b = promise(
            "b",
            &format!(
                "    resource:\n      configure:\n{}",
                pipeline("r", &[("reg/one:v1", Some("Never"))])
            ),
        );
        let tmp = tempfile::tempdir().unwrap();
        std::fs::write(tmp.path().join("a.yaml"), a).unwrap();
        std::fs::write(tmp.path().join("b.yaml"), b).unwrap();
        let objects = crate::config::load(
            &crate::config::Source::Dir(tmp.path().to_path_buf()),
            &Default::default(),
            None,
        )
        .unwrap();
        let cfg = validate::validate(objects);
        assert!(!cfg.has_errors(), "{:?}", cfg.diagnostics);
        let overrides: BTreeMap<String, ()> = [("reg/override:v1".to_string(), ())].into();
        let used = used_images(&cfg, &overrides);
        let summary: Vec<(&str, Result<PullPolicy, String>, Vec<String>)> = used
            .iter()
            .map(|u| (u.image.as_str(), u.policy.clone(), u.promises.clone()))
            .collect();
        assert_eq!(
            summary,
            vec![
                (
                    "reg/one:v1",
                    Ok(PullPolicy::Always),
                    vec!["a".to_string(), "b".to_string()]
                ),
                ("reg/three", Ok(PullPolicy::Always), vec!["a".to_string()]),
                (
                    "reg/two:v1",
                    Ok(PullPolicy::IfNotPresent),
                    vec!["a".to_string()]
                ),
            ]
        );
    }
}
