//! Destination and state store validation (kratix-contract.md §1.3, §1.4; Kratix:
//! `destination_webhook.go`, `util/git`): a `GitStateStore` needs a URL (an SSH one, matching
//! [`SSH_URL_PATTERN`], with `authMethod: ssh`), a branch and a safe `path`; a
//! `BucketStateStore` a bucket name and an endpoint without a scheme; a Destination an
//! existing state store and a safe `path` that no other Destination on the same store uses.
//! (Kratix only warns about a missing store at admission; promised makes it an error because
//! nothing could ever be written.)

use std::collections::BTreeMap;

use super::{Findings, Rejected, sorted};
use crate::config::Located;
use crate::diag::{Code, Diagnostic, Origin};
use crate::model::{BucketStateStore, Destination, GitAuthMethod, GitStateStore, StateStoreKind};

/// What Kratix requires of `GitStateStore.spec.url` when `authMethod: ssh`
/// (Kratix: `util/git`, `sshURLRegex`).
pub const SSH_URL_PATTERN: &str = "^(ssh://)?([^/:]*?)@[^@]+$";

/// The state stores that are not duplicates (`not_dup`), sorted by name, each checked (its
/// problems go to `diagnostics`; a state store is never left out for them).
pub(super) fn check_state_stores(
    git_state_stores: Vec<Located<GitStateStore>>,
    bucket_state_stores: Vec<Located<BucketStateStore>>,
    not_dup: &impl Fn(&Origin) -> bool,
    diagnostics: &mut Vec<Diagnostic>,
) -> (Vec<Located<GitStateStore>>, Vec<Located<BucketStateStore>>) {
    let git_state_stores: Vec<_> = sorted(
        git_state_stores
            .into_iter()
            .filter(|s| not_dup(&s.origin))
            .collect(),
    );
    let bucket_state_stores: Vec<_> = sorted(
        bucket_state_stores
            .into_iter()
            .filter(|s| not_dup(&s.origin))
            .collect(),
    );
    for s in &git_state_stores {
        diagnostics.extend(check_git_store(s));
    }
    for s in &bucket_state_stores {
        if s.object.spec.bucket_name.is_empty() {
            diagnostics.push(s.origin.diag(
                Code::InvalidField,
                Some(&s.id),
                "spec.bucketName",
                "must not be empty",
            ));
        }
        if s.object.spec.endpoint.contains("://") {
            diagnostics.push(s.origin.diag(
                Code::InvalidField,
                Some(&s.id),
                "spec.endpoint",
                format!(
                    "{:?} must be host[:port] without a scheme (use insecure: true for plain HTTP)",
                    s.object.spec.endpoint
                ),
            ));
        }
    }
    (git_state_stores, bucket_state_stores)
}

/// The valid Destinations among those that are not duplicates (`not_dup`), sorted by name:
/// an existing state store and a safe `path` no other Destination on that store uses. A flat
/// Destination at the store root is a warning.
pub(super) fn check_destinations(
    destinations: Vec<Located<Destination>>,
    git_state_stores: &[Located<GitStateStore>],
    bucket_state_stores: &[Located<BucketStateStore>],
    not_dup: &impl Fn(&Origin) -> bool,
    found: &mut Findings,
) -> Vec<Located<Destination>> {
    let Findings {
        rejected,
        diagnostics,
    } = found;
    let mut valid_destinations = Vec::new();
    let mut paths: BTreeMap<(StateStoreKind, String, String), Origin> = BTreeMap::new();
    for d in sorted(
        destinations
            .into_iter()
            .filter(|d| not_dup(&d.origin))
            .collect(),
    ) {
        let r = &d.object.spec.state_store_ref;
        let exists = match r.kind {
            StateStoreKind::GitStateStore => git_state_stores.iter().any(|s| s.id.name == r.name),
            StateStoreKind::BucketStateStore => {
                bucket_state_stores.iter().any(|s| s.id.name == r.name)
            }
        };
        let mut errs = Vec::new();
        if let Err(m) = super::helpers::check_object_name(&d.id.name) {
            errs.push(
                d.origin
                    .diag(Code::InvalidField, Some(&d.id), "metadata.name", m),
            );
        }
        for (k, v) in &d.object.metadata.labels {
            if let Err(m) = super::check_label(k, v) {
                errs.push(d.origin.diag(
                    Code::InvalidField,
                    Some(&d.id),
                    format!("metadata.labels[{k:?}]"),
                    m,
                ));
            }
        }
        if !exists {
            errs.push(d.origin.diag(
                Code::MissingStateStore,
                Some(&d.id),
                "spec.stateStoreRef.name",
                format!("{} {:?} does not exist", r.kind.as_str(), r.name),
            ));
        }
        if d.object.spec.path.trim().is_empty() {
            errs.push(d.origin.diag(
                Code::InvalidField,
                Some(&d.id),
                "spec.path",
                "path field is required",
            ));
        } else if let Err(m) = check_relative_path(&d.object.spec.path) {
            errs.push(
                d.origin
                    .diag(Code::InvalidField, Some(&d.id), "spec.path", m),
            );
        } else {
            let key = (r.kind, r.name.clone(), normalise_path(&d.object.spec.path));
            if let Some(first) = paths.get(&key) {
                errs.push(d.origin.diag(
                    Code::DuplicateDestinationPath,
                    Some(&d.id),
                    "spec.path",
                    format!(
                        "path {:?} on {} {:?} is already used by the Destination at {first}",
                        d.object.spec.path,
                        r.kind.as_str(),
                        r.name
                    ),
                ));
            } else {
                paths.insert(key, d.origin.clone());
            }
        }
        // The ownership index lives at the repository root (`.promised/`) of a Git store and
        // at `<spec.path>/.promised/index.json` in a bucket; a flat Destination there would
        // hand it to Flux/Argo CD, which choke on non-Kubernetes YAML.
        let (at_index, index) = match r.kind {
            StateStoreKind::GitStateStore => {
                let store_path = git_state_stores
                    .iter()
                    .find(|s| s.id.name == r.name)
                    .map(|s| s.object.spec.path.clone())
                    .unwrap_or_default();
                (
                    normalise_path(&format!("{store_path}/{}", d.object.spec.path)).is_empty(),
                    ".promised/".to_string(),
                )
            }
            StateStoreKind::BucketStateStore => {
                let store_path = bucket_state_stores
                    .iter()
                    .find(|s| s.id.name == r.name)
                    .map(|s| normalise_path(&s.object.spec.path))
                    .unwrap_or_default();
                (
                    normalise_path(&d.object.spec.path).is_empty(),
                    normalise_path(&format!("{store_path}/.promised/index.json")),
                )
            }
        };
        if errs.is_empty()
            && d.object.spec.filepath.mode != crate::model::FilepathMode::NestedByMetadata
            && at_index
        {
            diagnostics.push(
                d.origin
                    .diag(
                        Code::InvalidField,
                        Some(&d.id),
                        "spec.path",
                        format!("a flat Destination at the state store root also exposes promised's ownership index ({index}) to Argo CD and Flux; use a sub-directory"),
                    )
                    .warning(),
            );
        }
        if errs.is_empty() {
            valid_destinations.push(d);
        } else {
            rejected.push(Rejected {
                origin: d.origin.clone(),
                id: d.id.clone(),
                reasons: errs.iter().map(|e| e.message.clone()).collect(),
                promise: None,
            });
            diagnostics.extend(errs);
        }
    }
    valid_destinations
}

/// `a/b/` → `a/b`; `/`, `.` and `./` → `` (the store root).
pub fn normalise_path(p: &str) -> String {
    p.split('/')
        .filter(|s| !s.is_empty() && *s != ".")
        .collect::<Vec<_>>()
        .join("/")
}

/// Rejects `..` segments and backslashes in a store path.
fn check_relative_path(p: &str) -> Result<(), String> {
    if p.split('/').any(|s| s == "..") {
        return Err(format!("{p:?} must not contain \"..\""));
    }
    if p.contains('\\') {
        return Err(format!("{p:?} must use \"/\" as separator"));
    }
    // The state stores' own rule (`.git` segments, NUL, …): a path they refuse would fail every
    // write to the store.
    let norm: Vec<&str> = p
        .split('/')
        .filter(|s| !s.is_empty() && *s != ".")
        .collect();
    if !norm.is_empty()
        && let Err(statestores::Error::InvalidPath { reason, .. }) =
            statestores::validate_relative_path(&norm.join("/"))
    {
        return Err(format!("{p:?} is refused by state stores: {reason}"));
    }
    Ok(())
}

fn check_git_store(s: &Located<GitStateStore>) -> Vec<Diagnostic> {
    let mut out = Vec::new();
    let url = &s.object.spec.url;
    if url.trim().is_empty() {
        out.push(s.origin.diag(
            Code::InvalidField,
            Some(&s.id),
            "spec.url",
            "must not be empty",
        ));
    } else if let Err(e) = statestores::git::config::parse_url_quiet(url) {
        // What the store would refuse at its first write, said at validation.
        out.push(
            s.origin
                .diag(Code::InvalidField, Some(&s.id), "spec.url", e.to_string()),
        );
    } else if url.starts_with("http://") {
        out.push(
            s.origin
                .diag(
                    Code::InvalidField,
                    Some(&s.id),
                    "spec.url",
                    "plain http:// sends credentials unencrypted (Kratix only accepts https://)",
                )
                .warning(),
        );
    }
    if s.object.spec.auth_method == GitAuthMethod::Ssh && !url.trim().is_empty() && !is_ssh_url(url)
    {
        out.push(s.origin.diag(
            Code::InvalidField,
            Some(&s.id),
            "spec.url",
            format!(
                "{:?} does not match {SSH_URL_PATTERN}: authMethod ssh needs an SSH URL such as git@github.com:org/repo.git or ssh://git@host/org/repo.git",
                statestores::git::config::redact_url(url)
            ),
        ));
    }
    if s.object.spec.branch.is_empty() {
        out.push(s.origin.diag(
            Code::InvalidField,
            Some(&s.id),
            "spec.branch",
            "must not be empty",
        ));
    }
    if let Err(m) = check_relative_path(&s.object.spec.path) {
        out.push(
            s.origin
                .diag(Code::InvalidField, Some(&s.id), "spec.path", m),
        );
    }
    out
}

/// Kratix's `^(ssh://)?([^/:]*?)@[^@]+$` ([`SSH_URL_PATTERN`]): an optional `ssh://`, a user
/// part without `/` or `:`, one `@`, and a non-empty rest without `@`.
fn is_ssh_url(url: &str) -> bool {
    let rest = url.strip_prefix("ssh://").unwrap_or(url);
    // The lazy user group takes the first `@`; the rest may hold no other.
    match rest.split_once('@') {
        Some((user, host_path)) => {
            !user.contains(['/', ':']) && !host_path.is_empty() && !host_path.contains('@')
        }
        None => false,
    }
}
