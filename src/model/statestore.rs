//! `GitStateStore` and `BucketStateStore` (Kratix: `api/v1alpha1/gitstatestore_types.go`,
//! `bucketstatestore_types.go`; kratix-contract.md §1.4, §1.5).

use serde::{Deserialize, Serialize};

use super::ObjectMeta;

/// A Git repository branch that Destinations write to. Cluster-scoped.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct GitStateStore {
    /// `platform.kratix.io/v1alpha1`.
    pub api_version: String,
    /// `GitStateStore`.
    pub kind: String,
    /// Name (referenced by `Destination.spec.stateStoreRef`).
    pub metadata: ObjectMeta,
    /// Repository, branch and credentials.
    pub spec: GitStateStoreSpec,
}

/// `GitStateStore.spec`.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct GitStateStoreSpec {
    /// Repository URL. Kratix accepts `https://…` and SSH forms (`ssh://…`, `git@host:org/repo`);
    /// promised also accepts `http://` (warned), `git://`, `file://` and plain local paths.
    pub url: String,
    /// Branch; default `main`.
    #[serde(default = "default_branch")]
    pub branch: String,
    /// Prefix inside the repository (a leading `/` is trimmed).
    #[serde(default)]
    pub path: String,
    /// `basicAuth` (default), `ssh` or `githubApp`.
    #[serde(default)]
    pub auth_method: GitAuthMethod,
    /// Secret holding the credentials (read from the daemon's secrets directory).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_ref: Option<SecretRef>,
    /// Commit author; default name `kratix`, empty email.
    #[serde(default)]
    pub git_author: GitAuthor,
}

fn default_branch() -> String {
    "main".to_string()
}

/// `GitStateStore.spec.authMethod`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum GitAuthMethod {
    /// Secret keys `username` (optional) and `password`.
    #[default]
    BasicAuth,
    /// Secret keys `sshPrivateKey` and `knownHosts`.
    Ssh,
    /// Secret keys `appID`, `installationID`, `privateKey`.
    GithubApp,
}

/// A reference to a Kubernetes Secret; promised reads `<secrets dir>/<name>/<key>`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SecretRef {
    /// Secret name.
    pub name: String,
    /// Namespace; defaults to `default` (Kratix); promised ignores it for lookups.
    #[serde(default = "default_namespace")]
    pub namespace: String,
}

fn default_namespace() -> String {
    "default".to_string()
}

/// `GitStateStore.spec.gitAuthor`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct GitAuthor {
    /// Author name; default `kratix`.
    #[serde(default = "default_author")]
    pub name: String,
    /// Author email; default empty.
    #[serde(default)]
    pub email: String,
}

impl Default for GitAuthor {
    fn default() -> Self {
        GitAuthor {
            name: default_author(),
            email: String::new(),
        }
    }
}

fn default_author() -> String {
    "kratix".to_string()
}

/// An S3-compatible bucket that Destinations write to. Cluster-scoped.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct BucketStateStore {
    /// `platform.kratix.io/v1alpha1`.
    pub api_version: String,
    /// `BucketStateStore`.
    pub kind: String,
    /// Name (referenced by `Destination.spec.stateStoreRef`).
    pub metadata: ObjectMeta,
    /// Bucket, endpoint and credentials.
    pub spec: BucketStateStoreSpec,
}

/// `BucketStateStore.spec`.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct BucketStateStoreSpec {
    /// Bucket name (required).
    pub bucket_name: String,
    /// `host[:port]` with no scheme (required).
    pub endpoint: String,
    /// `true` means plain HTTP (kratix-contract.md §9 item 13). Default false.
    #[serde(default)]
    pub insecure: bool,
    /// Use AWS dual-stack endpoints. Default false.
    #[serde(default)]
    pub use_dual_stack: bool,
    /// Key prefix inside the bucket.
    #[serde(default)]
    pub path: String,
    /// `accessKey` (default) or `IAM`.
    #[serde(default)]
    pub auth_method: BucketAuthMethod,
    /// Secret with `accessKeyID` and `secretAccessKey` (required for `accessKey`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_ref: Option<SecretRef>,
}

/// `BucketStateStore.spec.authMethod` (`""` is treated as `accessKey`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
pub enum BucketAuthMethod {
    /// Static keys from the secret.
    #[default]
    #[serde(rename = "accessKey", alias = "")]
    AccessKey,
    /// The default AWS credential chain.
    #[serde(rename = "IAM")]
    Iam,
}
