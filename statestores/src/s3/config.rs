//! `BucketStateStore.spec` (Kratix `api/v1alpha1/bucketstatestore_types.go`, `kratix-contract.md`
//! §1.5; declared in [`crate::spec`] and re-exported here), the daemon-side [`S3Options`], and how
//! both become an `object_store` S3 client (endpoint, region, credentials, retries).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use crate::Error;
use crate::secrets::{Secrets, env_name, read_key};
use object_store::aws::{AmazonS3, AmazonS3Builder, S3ConditionalPut};
use object_store::{BackoffConfig, ClientOptions, RetryConfig};
// The Kratix spec types are declared in `crate::spec`.
pub use crate::spec::{BucketAuthMethod, BucketStateStoreSpec, SecretRef};

/// Called before the index commit of every attempt (argument: attempt number, from 1), on a
/// blocking thread. Fault injection for tests (a concurrent writer, a server stop).
pub type BeforeCommit = Arc<dyn Fn(u32) + Send + Sync>;

/// Daemon-side options that are not part of the Kratix spec.
#[derive(Clone)]
pub struct S3Options {
    /// Secrets directory laid out as `<dir>/<secret name>/<key>`; falls back to
    /// `PROMISED_SECRET_<NAME>_<KEY>` variables.
    pub secrets_dir: Option<PathBuf>,
    /// Where to keep a content-addressed copy of every object we wrote
    /// (`<state_dir>/s3/<store>-<hash>/blobs/<git blob id>`), used to restore drifted files of
    /// placements outside the current change set. `None` disables that (such drift is then
    /// repaired on the next write of its placement).
    pub state_dir: Option<PathBuf>,
    /// Attempts per apply before [`Error::Conflict`] when the index keeps changing; default 5.
    pub max_attempts: u32,
    /// Per-request timeout; default 30 s.
    pub request_timeout: Duration,
    /// Transport-level retries of one request (connection refused, 5xx); default 2, within
    /// [`S3Options::retry_timeout`].
    pub max_retries: usize,
    /// Upper bound on retrying one request; default 5 s. Keeps an apply against a dead server
    /// short, so the error reaches the status quickly and the engine requeues.
    pub retry_timeout: Duration,
    /// Parallel object uploads/deletes per apply; default 16.
    pub concurrency: usize,
    /// Region for request signing. Default: `AWS_REGION`/`AWS_DEFAULT_REGION`, else taken from an
    /// `s3.<region>.amazonaws.com` endpoint, else `us-east-1`.
    pub region: Option<String>,
    /// Make [`StateStore::check`](crate::StateStore::check) fail (instead of warn) when the
    /// server ignores conditional writes.
    pub require_conditional_writes: bool,
    /// Pause between the index commit and the first deletion; default 2 s. A listing is not an
    /// atomic snapshot (S3 pages it 1,000 keys at a time; servers walk directories), so a lister
    /// whose listing started during the write phase could otherwise miss both a new key written
    /// late and an old key deleted early. Every listing that takes less than this sees the
    /// complete old or the complete new set (see the module docs of [`crate::s3`]).
    pub delete_grace: Duration,
    /// Fault injection hook, see [`BeforeCommit`].
    pub before_commit: Option<BeforeCommit>,
    /// Connect and read timeouts of the HTTP client, and the longest a whole
    /// [`check`](crate::StateStore::check), [`owned`](crate::StateStore::owned) or
    /// [`apply`](crate::StateStore::apply) may take ([`crate::net`]).
    pub network: crate::NetworkTimeouts,
}

impl std::fmt::Debug for S3Options {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("S3Options")
            .field("secrets_dir", &self.secrets_dir)
            .field("state_dir", &self.state_dir)
            .field("max_attempts", &self.max_attempts)
            .field("request_timeout", &self.request_timeout)
            .field("max_retries", &self.max_retries)
            .field("retry_timeout", &self.retry_timeout)
            .field("concurrency", &self.concurrency)
            .field("region", &self.region)
            .field(
                "require_conditional_writes",
                &self.require_conditional_writes,
            )
            .field("delete_grace", &self.delete_grace)
            .field("before_commit", &self.before_commit.is_some())
            .field("network", &self.network)
            .finish()
    }
}

impl Default for S3Options {
    fn default() -> Self {
        Self {
            secrets_dir: None,
            state_dir: None,
            max_attempts: 5,
            request_timeout: Duration::from_secs(30),
            max_retries: 2,
            retry_timeout: Duration::from_secs(5),
            concurrency: 16,
            region: None,
            require_conditional_writes: false,
            delete_grace: Duration::from_secs(2),
            before_commit: None,
            network: crate::NetworkTimeouts::default(),
        }
    }
}

/// The base URL (`http[s]://host[:port]`) for `spec`, after the dual-stack rewrite.
///
/// # Errors
/// [`Error::Config`] when the endpoint is empty, has a scheme or a path.
pub fn endpoint_url(spec: &BucketStateStoreSpec) -> Result<String, Error> {
    let ep = spec.endpoint.trim();
    if ep.is_empty() {
        return Err(Error::Config(
            "BucketStateStore spec.endpoint is empty".into(),
        ));
    }
    if ep.contains("://") {
        return Err(Error::Config(format!(
            "BucketStateStore spec.endpoint {ep:?} must be host[:port] without a scheme; use `insecure: true` for plain HTTP"
        )));
    }
    if ep.contains('/') || ep.contains('@') {
        return Err(Error::Config(format!(
            "BucketStateStore spec.endpoint {ep:?} must be host[:port] (no path, no user-info)"
        )));
    }
    let mut host = ep.to_owned();
    if spec.use_dual_stack && host.ends_with(".amazonaws.com") && !host.contains(".dualstack.") {
        host = match aws_region(&host) {
            Some(r) => format!("s3.dualstack.{r}.amazonaws.com"),
            None => "s3.dualstack.us-east-1.amazonaws.com".into(),
        };
    }
    let scheme = if spec.insecure { "http" } else { "https" };
    Ok(format!("{scheme}://{host}"))
}

/// `eu-west-2` from `s3.eu-west-2.amazonaws.com` / `s3-eu-west-2.amazonaws.com`.
fn aws_region(host: &str) -> Option<String> {
    let rest = host.strip_suffix(".amazonaws.com")?;
    let rest = rest
        .strip_prefix("s3.dualstack.")
        .or_else(|| rest.strip_prefix("s3."))
        .or_else(|| rest.strip_prefix("s3-"))?;
    let region = rest.split('.').next()?;
    (!region.is_empty()).then(|| region.to_owned())
}

fn region(spec: &BucketStateStoreSpec, opts: &S3Options) -> String {
    opts.region
        .clone()
        .or_else(|| std::env::var("AWS_REGION").ok())
        .or_else(|| std::env::var("AWS_DEFAULT_REGION").ok())
        .filter(|r| !r.is_empty())
        .or_else(|| aws_region(spec.endpoint.split(':').next().unwrap_or_default()))
        .unwrap_or_else(|| "us-east-1".into())
}

/// Build the client. Reads the secret now, so a missing key fails at open time.
pub(crate) fn build(
    spec: &BucketStateStoreSpec,
    opts: &S3Options,
) -> Result<(AmazonS3, Secrets), Error> {
    if spec.bucket_name.trim().is_empty() {
        return Err(Error::Config(
            "BucketStateStore spec.bucketName is empty".into(),
        ));
    }
    let url = endpoint_url(spec)?;
    let mut secrets = Secrets::default();
    let builder = match spec.auth_method {
        BucketAuthMethod::AccessKey => {
            let Some(secret) = &spec.secret_ref else {
                return Err(Error::Config(
                    "BucketStateStore authMethod accessKey needs spec.secretRef".into(),
                ));
            };
            let dir = opts.secrets_dir.as_deref();
            let get = |key: &str| -> Result<String, Error> {
                read_key(dir, &secret.name, key)?
                    .map(|s| s.trim().to_owned())
                    .filter(|s| !s.is_empty())
                    .ok_or_else(|| {
                        Error::Config(format!(
                            "secret {:?} has no key {key:?} (looked in {} and ${})",
                            secret.name,
                            dir.map(|d| d.join(&secret.name).join(key).display().to_string())
                                .unwrap_or_else(|| "<no secrets_dir>".into()),
                            env_name(&secret.name, key)
                        ))
                    })
            };
            let access_key = get("accessKeyID")?;
            let secret_key = get("secretAccessKey")?;
            secrets.add(&access_key);
            secrets.add(&secret_key);
            AmazonS3Builder::new()
                .with_access_key_id(access_key)
                .with_secret_access_key(secret_key)
        }
        BucketAuthMethod::Iam => AmazonS3Builder::from_env(),
    };
    let retry = RetryConfig {
        backoff: BackoffConfig {
            init_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(2),
            ..Default::default()
        },
        max_retries: opts.max_retries,
        retry_timeout: opts.retry_timeout,
    };
    let client = ClientOptions::new()
        .with_allow_http(spec.insecure)
        .with_timeout(opts.request_timeout)
        .with_connect_timeout(opts.network.connect)
        .with_read_timeout(opts.network.read);
    let store = builder
        .with_bucket_name(spec.bucket_name.trim())
        .with_endpoint(url)
        .with_region(region(spec, opts))
        .with_virtual_hosted_style_request(false)
        .with_conditional_put(S3ConditionalPut::ETagMatch)
        .with_retry(retry)
        .with_client_options(client)
        .build()
        .map_err(|e| Error::Config(secrets.redact(&super::error_text(&e))))?;
    Ok((store, secrets))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints() {
        let mut s = BucketStateStoreSpec::new("b", "127.0.0.1:9000");
        s.insecure = true;
        assert_eq!(endpoint_url(&s).unwrap(), "http://127.0.0.1:9000");
        s.insecure = false;
        assert_eq!(endpoint_url(&s).unwrap(), "https://127.0.0.1:9000");
        s.use_dual_stack = true;
        assert_eq!(endpoint_url(&s).unwrap(), "https://127.0.0.1:9000");
        s.endpoint = "s3.eu-west-2.amazonaws.com".into();
        assert_eq!(
            endpoint_url(&s).unwrap(),
            "https://s3.dualstack.eu-west-2.amazonaws.com"
        );
        s.endpoint = "http://minio:9000".into();
        assert!(matches!(endpoint_url(&s), Err(Error::Config(_))));
        assert_eq!(
            aws_region("s3-us-west-1.amazonaws.com").as_deref(),
            Some("us-west-1")
        );
    }

    #[test]
    fn spec_is_kratix_shaped() {
        let s: BucketStateStoreSpec = serde_json::from_value(serde_json::json!({
            "bucketName": "kratix", "endpoint": "minio:9000", "insecure": true,
            "path": "destinations/", "authMethod": "", "useDualStack": false,
            "secretRef": {"name": "minio-creds", "namespace": "default"}
        }))
        .unwrap();
        assert_eq!(s.auth_method, BucketAuthMethod::AccessKey);
        assert_eq!(s.secret_ref.unwrap().name, "minio-creds");
        let iam: BucketStateStoreSpec = serde_json::from_value(serde_json::json!({
            "bucketName": "k", "endpoint": "s3.amazonaws.com", "authMethod": "IAM"
        }))
        .unwrap();
        assert_eq!(iam.auth_method, BucketAuthMethod::Iam);
    }
}
