//! Kratix `GitStateStore.spec` (`api/v1alpha1/gitstatestore_types.go`, `kratix-contract.md`
//! §1.4), field for field.

use serde::{Deserialize, Serialize};

use super::SecretRef;

/// Kratix `GitStateStore.spec`: a Git repository branch that Destinations write to.
///
/// Only `url` is required; every other field has Kratix's default. Unknown fields are ignored
/// (see the module docs of [`crate::spec`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct GitStateStoreSpec {
    /// Repository URL (required). Kratix accepts `https://…` (for `basicAuth` and `githubApp`;
    /// plain `http://` is rejected) and, for `ssh`, `ssh://…` or scp-like `git@host:org/repo.git`.
    /// promised also accepts `http://` (with a warning), `git://`, `file://…` and plain local
    /// paths (the local backend); see [`crate::git::config::parse_url`].
    pub url: String,
    /// Branch to write; default `main`. Kratix requires it to exist (it clones with
    /// `--branch`); promised creates it on the first write.
    #[serde(default = "default_branch")]
    pub branch: String,
    /// Optional prefix inside the repository (a leading `/` is trimmed); default empty. The
    /// backends do not prepend it: the engine includes it in every
    /// [`FileWrite::path`](crate::FileWrite::path).
    #[serde(default)]
    pub path: String,
    /// `basicAuth` (default), `ssh` or `githubApp`.
    #[serde(default)]
    pub auth_method: GitAuthMethod,
    /// The Secret holding the credentials (Kratix: effectively required), read from the
    /// daemon's secrets directory. Which keys it needs depends on
    /// [`auth_method`](Self::auth_method). Without it, a remote is accessed anonymously (or with
    /// the user-info of an `https://user:password@…` URL).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_ref: Option<SecretRef>,
    /// Commit author and committer; CRD default `{name: kratix}` (empty email).
    #[serde(default)]
    pub git_author: GitAuthor,
}

fn default_branch() -> String {
    "main".into()
}

impl GitStateStoreSpec {
    /// A spec with Kratix defaults for `url`: branch `main`, no path, `basicAuth`, no secret,
    /// author `kratix`.
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            branch: default_branch(),
            path: String::new(),
            auth_method: GitAuthMethod::default(),
            secret_ref: None,
            git_author: GitAuthor::default(),
        }
    }
}

/// Kratix `GitStateStore.spec.authMethod` (camelCase in YAML/JSON). Also available as
/// `statestores::git::AuthMethod`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum GitAuthMethod {
    /// Secret keys `password` (required; a token works too) and `username` (optional; when
    /// empty and the URL contains `github`, `x-access-token`, as Kratix).
    #[default]
    BasicAuth,
    /// Secret keys `sshPrivateKey` and `knownHosts` (both required).
    Ssh,
    /// GitHub App installation tokens (Kratix secret keys `appID`, `installationID`,
    /// `privateKey`). Accepted in configuration, but not supported yet: opening a remote store
    /// with it fails with [`Error::Config`](crate::Error::Config) (use `basicAuth` with an
    /// installation token).
    GithubApp,
}

/// Kratix `GitStateStore.spec.gitAuthor`: the author and committer of every commit.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct GitAuthor {
    /// Author name; default `kratix` (also when only `email` is given).
    #[serde(default = "default_author")]
    pub name: String,
    /// Author email; default empty (as Kratix).
    #[serde(default)]
    pub email: String,
}

fn default_author() -> String {
    "kratix".into()
}

impl Default for GitAuthor {
    /// Kratix's CRD default: name `kratix`, empty email.
    fn default() -> Self {
        Self {
            name: default_author(),
            email: String::new(),
        }
    }
}
