//! Tenancy by path (README "Trust and tenancy"): a `TenancyPolicy` in `promised-policy.yaml`
//! at the config repo's root says which folders may hold platform objects (Promises,
//! Destinations, state stores) and, per team folder, which namespaces and Promises its
//! requests may use. Kubernetes RBAC decides this in Kratix (kratix#192, #193, #198, #266,
//! #578 in users-and-peers.md §1.9); promised has only the repository, so the path of a file
//! is what it is allowed to hold.
//!
//! ```yaml
//! apiVersion: promised.dev/v1alpha1
//! kind: TenancyPolicy
//! metadata: {name: tenancy}
//! spec:
//!   platform:
//!     paths: ["platform/**", "promises/**"]
//!     signers: ["alice@example.com"]
//!   teams:
//!     - name: team-a
//!       paths: ["teams/a/**"]
//!       namespaces: ["team-a", "team-a-*"]
//!       promises: ["redis"]
//!       signers: ["bob@example.com"]
//! ```
//!
//! Rules: a Promise, Destination, GitStateStore or BucketStateStore outside
//! `spec.platform.paths` is refused (as if absent, with an error naming the file and the
//! rule). A request in a platform path may use anything; in a team's paths, only that team's
//! `namespaces` and `promises` (globs; an empty list allows none); in no one's paths,
//! nothing. A refused request fails alone with `PolicyDenied`; everything else reconciles.
//! Paths are globs over repository-relative paths (`*` stays in one folder, `**` crosses
//! folders). Without the file, nothing is checked (`promised validate` says so).

use globset::{Glob, GlobBuilder, GlobSet, GlobSetBuilder};
use serde::Deserialize;
use serde_json::Value;

use crate::diag::{Code, Diagnostic, Origin};
use crate::model::ObjectRef;

/// The file a [`TenancyPolicy`] must be in (repository root).
pub const POLICY_FILE: &str = "promised-policy.yaml";
/// `apiVersion` of the policy.
pub const POLICY_API_VERSION: &str = "promised.dev/v1alpha1";
/// `kind` of the policy.
pub const POLICY_KIND: &str = "TenancyPolicy";

/// `promised-policy.yaml`, as written.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TenancyPolicy {
    /// `promised.dev/v1alpha1`.
    pub api_version: String,
    /// `TenancyPolicy`.
    pub kind: String,
    /// Name etc. (unused).
    #[serde(default)]
    pub metadata: Value,
    /// The rules.
    pub spec: PolicySpec,
}

/// `spec` of a [`TenancyPolicy`].
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PolicySpec {
    /// What the platform team owns.
    pub platform: PlatformRule,
    /// Team folders and their rights.
    #[serde(default)]
    pub teams: Vec<TeamRule>,
}

/// `spec.platform`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PlatformRule {
    /// Globs of the folders that may hold Promises, Destinations and state stores (and
    /// requests of any namespace and Promise).
    pub paths: Vec<String>,
    /// Signers (SSH principals or OpenPGP user ids) who may change platform paths and the
    /// policy itself, when `verify:` is on; empty: any verified signer.
    #[serde(default)]
    pub signers: Vec<String>,
}

/// One entry of `spec.teams`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TeamRule {
    /// The team's name (in messages).
    pub name: String,
    /// Globs of its folders.
    pub paths: Vec<String>,
    /// Namespaces (globs) its requests may use.
    #[serde(default)]
    pub namespaces: Vec<String>,
    /// Promises (globs) its requests may use.
    #[serde(default)]
    pub promises: Vec<String>,
    /// Signers who may change its folders when `verify:` is on (platform signers always
    /// may); empty: any verified signer.
    #[serde(default)]
    pub signers: Vec<String>,
}

/// A loaded policy with its globs compiled.
#[derive(Debug, Clone)]
pub struct Policy {
    /// As written.
    pub spec: PolicySpec,
    platform: GlobSet,
    teams: Vec<(GlobSet, GlobSet, GlobSet)>,
}

/// Who owns a path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Owner {
    /// A platform path.
    Platform,
    /// The team at this index of `spec.teams`.
    Team(usize),
    /// Nobody.
    Nobody,
}

fn path_set(globs: &[String]) -> Result<GlobSet, String> {
    let mut b = GlobSetBuilder::new();
    for g in globs {
        let glob = GlobBuilder::new(g)
            .literal_separator(true)
            .build()
            .map_err(|e| format!("{g:?}: {e}"))?;
        b.add(glob);
    }
    b.build().map_err(|e| e.to_string())
}

fn name_set(globs: &[String]) -> Result<GlobSet, String> {
    let mut b = GlobSetBuilder::new();
    for g in globs {
        b.add(Glob::new(g).map_err(|e| format!("{g:?}: {e}"))?);
    }
    b.build().map_err(|e| e.to_string())
}

impl Policy {
    /// Compiles `spec`. Errors name the field and the glob.
    pub fn new(spec: PolicySpec) -> Result<Policy, (String, String)> {
        let platform =
            path_set(&spec.platform.paths).map_err(|e| ("spec.platform.paths".into(), e))?;
        let mut teams = Vec::new();
        for (i, t) in spec.teams.iter().enumerate() {
            let f = |what: &str, e: String| (format!("spec.teams[{i}].{what}"), e);
            teams.push((
                path_set(&t.paths).map_err(|e| f("paths", e))?,
                name_set(&t.namespaces).map_err(|e| f("namespaces", e))?,
                name_set(&t.promises).map_err(|e| f("promises", e))?,
            ));
        }
        Ok(Policy {
            spec,
            platform,
            teams,
        })
    }

    /// Who owns the repository-relative `path` (platform paths first, then teams in order).
    pub fn owner(&self, path: &str) -> Owner {
        if self.platform.is_match(path) {
            return Owner::Platform;
        }
        match self.teams.iter().position(|(p, _, _)| p.is_match(path)) {
            Some(i) => Owner::Team(i),
            None => Owner::Nobody,
        }
    }

    /// Why a request in `file` for Promise `promise` in `namespace` is refused, or `None`.
    pub fn request_denied(&self, file: &str, promise: &str, namespace: &str) -> Option<String> {
        match self.owner(file) {
            Owner::Platform => None,
            Owner::Nobody => Some(format!(
                "{file} is in no team's paths and not in the platform paths (rule spec.teams[].paths, spec.platform.paths): it may not hold requests"
            )),
            Owner::Team(i) => {
                let t = &self.spec.teams[i];
                let (_, ns, promises) = &self.teams[i];
                if !ns.is_match(namespace) {
                    return Some(format!(
                        "team {} may not request namespace {namespace:?} (rule spec.teams[{i}].namespaces: [{}])",
                        t.name,
                        t.namespaces.join(", ")
                    ));
                }
                if !promises.is_match(promise) {
                    return Some(format!(
                        "team {} may not request Promise {promise} (rule spec.teams[{i}].promises: [{}])",
                        t.name,
                        t.promises.join(", ")
                    ));
                }
                None
            }
        }
    }

    /// Why `signer` may not change the repository-relative `path`, or `None`: the policy
    /// file and platform paths need a platform signer; a team path a platform signer or
    /// one of the team's. An empty signer list allows any verified signer.
    pub fn change_denied(&self, path: &str, signer: &str) -> Option<String> {
        let platform = &self.spec.platform.signers;
        let platform_ok = platform.is_empty() || platform.iter().any(|s| s == signer);
        match self.owner(path) {
            _ if path == POLICY_FILE && !platform_ok => Some(format!(
                "{signer} may not change {POLICY_FILE} (rule spec.platform.signers: [{}])",
                platform.join(", ")
            )),
            Owner::Platform if !platform_ok => Some(format!(
                "{signer} may not change the platform path {path} (rule spec.platform.signers: [{}])",
                platform.join(", ")
            )),
            Owner::Team(i) => {
                let t = &self.spec.teams[i];
                let ok = (!platform.is_empty() && platform.iter().any(|s| s == signer))
                    || t.signers.is_empty()
                    || t.signers.iter().any(|s| s == signer);
                (!ok).then(|| {
                    format!(
                        "{signer} may not change {path} of team {} (rule spec.teams[{i}].signers: [{}])",
                        t.name,
                        t.signers.join(", ")
                    )
                })
            }
            _ => None,
        }
    }
}

/// Takes the policy out of `candidates` (documents of unknown kinds). A policy anywhere but
/// in [`POLICY_FILE`] at the root, a second one, or one that does not parse is an error
/// diagnostic; a policy that does not parse denies every request and platform object (a
/// typo must not open the repository). Returns the policy (`None`: no policy in force).
pub(crate) fn extract(
    candidates: &mut Vec<super::Candidate>,
    diagnostics: &mut Vec<Diagnostic>,
) -> Option<Result<Policy, String>> {
    let is_policy = |c: &super::Candidate| {
        c.doc.api_version() == Some(POLICY_API_VERSION) && c.doc.kind() == Some(POLICY_KIND)
    };
    let (docs, rest): (Vec<_>, Vec<_>) =
        std::mem::take(candidates).into_iter().partition(is_policy);
    *candidates = rest;
    let mut policy = None;
    for d in docs {
        let id = Some(&d.id);
        if d.origin.file != POLICY_FILE {
            diagnostics.push(d.origin.diag(
                Code::PolicyDenied,
                id,
                "kind",
                format!("a {POLICY_KIND} must be in {POLICY_FILE} at the repository root; ignored"),
            ));
            continue;
        }
        if policy.is_some() {
            diagnostics.push(d.origin.diag(
                Code::PolicyDenied,
                id,
                "kind",
                format!("a second {POLICY_KIND}; only the first is used"),
            ));
            continue;
        }
        let parsed =
            serde_json::from_value::<TenancyPolicy>(std::sync::Arc::unwrap_or_clone(d.value()))
                .map_err(|e| ("spec".to_string(), e.to_string()))
                .and_then(|p| Policy::new(p.spec));
        policy = Some(match parsed {
            Ok(p) => Ok(p),
            Err((field, e)) => {
                let msg = format!(
                    "the tenancy policy does not load ({e}): every request and platform object is refused until it does"
                );
                diagnostics.push(d.origin.diag(Code::PolicyDenied, id, field, msg.clone()));
                Err(msg)
            }
        });
    }
    policy
}

/// Why the platform object `id` in `origin` is refused by `policy` (`Err`: the policy does
/// not load), or `None`.
pub(crate) fn platform_denied(
    policy: &Result<Policy, String>,
    origin: &Origin,
    id: &ObjectRef,
) -> Option<Diagnostic> {
    let why = match policy {
        Err(e) => e.clone(),
        Ok(p) if p.owner(&origin.file) == Owner::Platform => return None,
        Ok(p) => format!(
            "{} {} is outside the platform paths [{}] (rule spec.platform.paths of {POLICY_FILE}): refused",
            id.kind,
            id.name,
            p.spec.platform.paths.join(", ")
        ),
    };
    Some(origin.diag(Code::PolicyDenied, Some(id), "", why))
}

/// Why the request `id` of `promise` in `origin` is refused by `policy`, or `None`.
pub(crate) fn request_denied(
    policy: &Result<Policy, String>,
    origin: &Origin,
    id: &ObjectRef,
    promise: &str,
) -> Option<Diagnostic> {
    let why = match policy {
        Err(e) => e.clone(),
        Ok(p) => p.request_denied(
            &origin.file,
            promise,
            id.namespace.as_deref().unwrap_or("default"),
        )?,
    };
    Some(origin.diag(Code::PolicyDenied, Some(id), "metadata", why))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> Policy {
        let yaml = r#"
platform: {paths: ["platform/**", "promises/**"], signers: [alice]}
teams:
  - {name: team-a, paths: ["teams/a/**"], namespaces: ["team-a", "team-a-*"], promises: [redis], signers: [bob]}
"#;
        Policy::new(serde_saphyr::from_str(yaml).unwrap()).unwrap()
    }

    #[test]
    fn requests_follow_their_folder() {
        let p = policy();
        assert_eq!(
            p.request_denied("teams/a/r.yaml", "redis", "team-a-dev"),
            None
        );
        let e = p.request_denied("teams/a/r.yaml", "redis", "prod").unwrap();
        assert!(
            e.contains("spec.teams[0].namespaces") && e.contains("\"prod\""),
            "{e}"
        );
        let e = p
            .request_denied("teams/a/r.yaml", "postgres", "team-a")
            .unwrap();
        assert!(
            e.contains("Promise postgres") && e.contains("spec.teams[0].promises"),
            "{e}"
        );
        assert!(
            p.request_denied("elsewhere/r.yaml", "redis", "team-a")
                .is_some()
        );
        assert_eq!(p.request_denied("platform/r.yaml", "postgres", "x"), None);
        // `*` stays in one folder.
        assert_eq!(p.owner("teams/a/deep/r.yaml"), Owner::Team(0));
        assert_eq!(p.owner("teams/ab/r.yaml"), Owner::Nobody);
    }

    #[test]
    fn signers_guard_the_policy_and_platform_paths() {
        let p = policy();
        assert_eq!(p.change_denied(POLICY_FILE, "alice"), None);
        assert!(
            p.change_denied(POLICY_FILE, "bob")
                .unwrap()
                .contains("spec.platform.signers")
        );
        assert!(p.change_denied("promises/x/promise.yaml", "bob").is_some());
        assert_eq!(p.change_denied("teams/a/r.yaml", "bob"), None);
        assert_eq!(p.change_denied("teams/a/r.yaml", "alice"), None);
        assert!(
            p.change_denied("teams/a/r.yaml", "mallory")
                .unwrap()
                .contains("team-a")
        );
    }
}
