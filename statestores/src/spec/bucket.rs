//! Kratix `BucketStateStore.spec` (`api/v1alpha1/bucketstatestore_types.go`,
//! `kratix-contract.md` §1.5), field for field.

use serde::{Deserialize, Serialize};

use super::SecretRef;

/// Kratix `BucketStateStore.spec`: an S3-compatible bucket that Destinations write to.
///
/// `bucketName` and `endpoint` are required; every other field has Kratix's default. Unknown
/// fields are ignored (see the module docs of [`crate::spec`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BucketStateStoreSpec {
    /// Bucket name (required). The bucket must exist; it is never created.
    pub bucket_name: String,
    /// `host[:port]` with **no scheme** (required; minio-go convention), for example
    /// `s3.eu-west-2.amazonaws.com` or `127.0.0.1:9000`.
    pub endpoint: String,
    /// `true` means plain HTTP, `false` (default) HTTPS with verified certificates. Kratix uses
    /// minio's `Secure: !insecure`, so this is *not* "skip TLS verification"
    /// (`kratix-contract.md` §9 item 13).
    #[serde(default)]
    pub insecure: bool,
    /// Use the AWS dual-stack endpoint (`s3.dualstack.<region>.amazonaws.com`); default false.
    /// Only affects `*.amazonaws.com` endpoints, like in Kratix.
    #[serde(default)]
    pub use_dual_stack: bool,
    /// Key prefix inside the bucket; default empty. The engine already includes it in every
    /// [`FileWrite::path`](crate::FileWrite::path); the S3 store uses it to scope listings and
    /// to place its ownership index at `<path>/.promised/index.json`.
    #[serde(default)]
    pub path: String,
    /// `accessKey` (default; `""` is accepted as `accessKey`, as Kratix) or `IAM`.
    #[serde(default)]
    pub auth_method: BucketAuthMethod,
    /// Secret holding `accessKeyID` and `secretAccessKey` (required for `accessKey`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_ref: Option<SecretRef>,
}

impl BucketStateStoreSpec {
    /// A spec with the given bucket and endpoint, HTTPS, no prefix, `accessKey` auth and no
    /// secret reference yet.
    pub fn new(bucket_name: impl Into<String>, endpoint: impl Into<String>) -> Self {
        Self {
            bucket_name: bucket_name.into(),
            endpoint: endpoint.into(),
            insecure: false,
            use_dual_stack: false,
            path: String::new(),
            auth_method: BucketAuthMethod::AccessKey,
            secret_ref: None,
        }
    }
}

/// Kratix `BucketStateStore.spec.authMethod` (`""` is treated as `accessKey`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum BucketAuthMethod {
    /// `accessKey`: static keys `accessKeyID` / `secretAccessKey` from the secret.
    #[default]
    #[serde(rename = "accessKey", alias = "")]
    AccessKey,
    /// `IAM`: the default AWS credential chain of `object_store` (`AWS_ACCESS_KEY_ID` /
    /// `AWS_SECRET_ACCESS_KEY` variables, web identity / IRSA, ECS container credentials, EC2
    /// instance metadata). `~/.aws/config` profiles are not read. Kratix: minio
    /// `credentials.NewIAM("")`.
    #[serde(rename = "IAM")]
    Iam,
}
