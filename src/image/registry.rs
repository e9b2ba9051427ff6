//! Talking to registries with oci-client: one `Client` per (registry, credentials), since the
//! first credentials a client uses for a registry stick for its life; manifests and blobs
//! fetched with their digests checked; oci-client's errors turned into [`ImageError`]s that
//! name the registry's answer.

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};

use futures_util::StreamExt;
use oci_client::client::{ClientConfig, ClientProtocol};
use oci_client::errors::{OciDistributionError, OciErrorCode};
use oci_client::manifest::OciDescriptor;
use oci_client::{Client, Reference};
use sha2::Digest;
use statestores::NetworkTimeouts;
use tokio::io::AsyncWriteExt;

use super::auth::Credentials;
use super::error::{ImageError, shorten};

/// The manifest media types asked for: OCI and Docker v2 schema 2, images and indexes. (A
/// Docker registry rewrites a v2s2 manifest to schema 1 when v2s2 is not accepted.)
pub(crate) const MANIFEST_TYPES: &[&str] = &[
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.docker.distribution.manifest.v2+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
];

/// Where and as whom to pull one image: the reference with the registry actually contacted
/// (a mirror when one is configured) and the credentials for that registry.
pub(crate) struct Target {
    /// The reference as sent: its registry is `registry`.
    pub reference: Reference,
    /// `host[:port]` contacted.
    pub registry: String,
    /// The credentials looked up for `registry`.
    pub credentials: Credentials,
}

/// The oci-client clients, one per (registry, credentials).
pub(crate) struct Registries {
    insecure: Vec<String>,
    timeouts: NetworkTimeouts,
    clients: Mutex<HashMap<(String, String), Arc<Client>>>,
}

impl Registries {
    /// Clients speaking plain HTTP to the `insecure` registries (`host[:port]`), HTTPS to all
    /// others, within `timeouts` (connect and read; `operation` bounds each manifest request).
    pub fn new(insecure: Vec<String>, timeouts: NetworkTimeouts) -> Registries {
        Registries {
            insecure,
            timeouts,
            clients: Mutex::new(HashMap::new()),
        }
    }

    fn client(&self, image: &str, target: &Target) -> Result<Arc<Client>, ImageError> {
        let key = (target.registry.clone(), target.credentials.key.clone());
        let mut clients = self.clients.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(c) = clients.get(&key) {
            return Ok(c.clone());
        }
        let config = ClientConfig {
            protocol: ClientProtocol::HttpsExcept(self.insecure.clone()),
            platform_resolver: None,
            connect_timeout: Some(self.timeouts.connect),
            read_timeout: Some(self.timeouts.read),
            user_agent: concat!("promised/", env!("CARGO_PKG_VERSION")),
            ..ClientConfig::default()
        };
        let client = Client::try_from(config).map_err(|e| ImageError::Registry {
            image: image.to_string(),
            registry: target.registry.clone(),
            answer: "no answer".to_string(),
            message: format!("cannot set up an HTTP client: {}", chain(&e)),
        })?;
        let client = Arc::new(client);
        clients.insert(key, client.clone());
        Ok(client)
    }

    /// The manifest `reference` (a tag or digest in `target`'s repository) names: its bytes,
    /// its digest (checked against the reference's digest, when it has one, and the
    /// registry's `Docker-Content-Digest`) and its media type.
    pub async fn manifest(
        &self,
        image: &str,
        target: &Target,
        reference: &Reference,
    ) -> Result<(Vec<u8>, String), ImageError> {
        let client = self.client(image, target)?;
        let fetch = client.pull_manifest_raw(reference, &target.credentials.auth, MANIFEST_TYPES);
        let (body, digest) = tokio::time::timeout(self.timeouts.operation, fetch)
            .await
            .map_err(|_| self.timed_out(image, target, "fetching the manifest"))?
            .map_err(|e| map_error(image, target, e))?;
        let actual = sha256_digest(&body);
        let expected = reference.digest().unwrap_or(&digest);
        if actual != expected || actual != digest {
            return Err(ImageError::DigestMismatch {
                image: image.to_string(),
                what: "manifest".to_string(),
                expected: expected.to_string(),
                actual,
            });
        }
        Ok((body.to_vec(), digest))
    }

    /// The digest the registry gives for `reference` (a HEAD request; falls back to GET when
    /// the registry sends no `Docker-Content-Digest`).
    pub async fn manifest_digest(
        &self,
        image: &str,
        target: &Target,
        reference: &Reference,
    ) -> Result<String, ImageError> {
        let client = self.client(image, target)?;
        let fetch = client.fetch_manifest_digest(reference, &target.credentials.auth);
        tokio::time::timeout(self.timeouts.operation, fetch)
            .await
            .map_err(|_| self.timed_out(image, target, "fetching the manifest digest"))?
            .map_err(|e| map_error(image, target, e))
    }

    /// Downloads the blob `digest` (`size` bytes per its descriptor; `what` it is, for messages:
    /// `layer`, `config`) of `target`'s repository into `dest` (a temporary file the caller renames on success). Fails with
    /// [`ImageError::DigestMismatch`] when the content does not match, and when the registry
    /// sends more than `size` bytes (it stops reading then).
    #[allow(clippy::too_many_arguments)]
    pub async fn blob(
        &self,
        image: &str,
        target: &Target,
        what: &str,
        media_type: &str,
        digest: &str,
        size: u64,
        dest: &Path,
    ) -> Result<(), ImageError> {
        let client = self.client(image, target)?;
        let descriptor = OciDescriptor {
            media_type: media_type.to_string(),
            digest: digest.to_string(),
            size: i64::try_from(size).unwrap_or(i64::MAX),
            ..OciDescriptor::default()
        };
        // Authenticates first if this client has not yet (pull_blob_stream does not).
        client
            .store_auth_if_needed(&target.registry, &target.credentials.auth)
            .await;
        let mut stream = tokio::time::timeout(
            self.timeouts.operation,
            client.pull_blob_stream(&target.reference, &descriptor),
        )
        .await
        .map_err(|_| self.timed_out(image, target, "starting the blob download"))?
        .map_err(|e| map_error(image, target, e))?;
        let mut file = tokio::fs::File::create(dest)
            .await
            .map_err(|e| ImageError::io("create", dest, e))?;
        let mut hasher = sha2::Sha256::new();
        let mut received = 0u64;
        let mismatch = |actual: String| ImageError::DigestMismatch {
            image: image.to_string(),
            what: what.to_string(),
            expected: digest.to_string(),
            actual,
        };
        while let Some(chunk) = stream.next().await {
            let chunk = match chunk {
                Ok(c) => c,
                // oci-client's own check fails as the last item: ours says the same.
                Err(_) if received == size => break,
                Err(e) => {
                    return Err(ImageError::Unreachable {
                        image: image.to_string(),
                        registry: target.registry.clone(),
                        cause: format!(
                            "download of {digest} broke off after {received} of {size} bytes: {}",
                            chain(&e)
                        ),
                        tls_hint: String::new(),
                    });
                }
            };
            received += chunk.len() as u64;
            if received > size {
                return Err(mismatch(format!(
                    "unknown (the registry sent more than the {size} bytes of the descriptor)"
                )));
            }
            hasher.update(&chunk);
            file.write_all(&chunk)
                .await
                .map_err(|e| ImageError::io("write", dest, e))?;
        }
        file.flush()
            .await
            .map_err(|e| ImageError::io("write", dest, e))?;
        file.sync_all()
            .await
            .map_err(|e| ImageError::io("sync", dest, e))?;
        let actual = format!("sha256:{}", hex::encode(hasher.finalize()));
        if actual != digest {
            return Err(mismatch(format!("{actual} ({received} of {size} bytes)")));
        }
        Ok(())
    }

    fn timed_out(&self, image: &str, target: &Target, what: &str) -> ImageError {
        ImageError::Unreachable {
            image: image.to_string(),
            registry: target.registry.clone(),
            cause: format!(
                "{what} took longer than {:?} (network.operationTimeout)",
                self.timeouts.operation
            ),
            tls_hint: String::new(),
        }
    }
}

/// `sha256:<hex>` of `bytes`.
pub(crate) fn sha256_digest(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(sha2::Sha256::digest(bytes)))
}

/// An error and its sources, joined with `: ` (reqwest's top-level message alone hides the
/// cause, e.g. "connection refused").
pub(crate) fn chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let text = s.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        source = s.source();
    }
    out
}

fn unauthorized(image: &str, target: &Target, answer: String) -> ImageError {
    let hint = if target.credentials.is_anonymous() {
        format!(
            "the registry needs credentials: add an entry for {} to the auth file \
             (images.authFile, Docker config.json \"auths\")",
            target.registry
        )
    } else {
        format!(
            "the credentials were refused: check the user, password and permissions to pull \
             {} on {}",
            target.reference.repository(),
            target.registry
        )
    };
    ImageError::Unauthorized {
        image: image.to_string(),
        registry: target.registry.clone(),
        answer,
        credentials: target.credentials.described.clone(),
        hint,
    }
}

/// oci-client's error as an [`ImageError`] naming the registry's answer.
pub(crate) fn map_error(image: &str, target: &Target, e: OciDistributionError) -> ImageError {
    let registry = target.registry.clone();
    match e {
        OciDistributionError::UnauthorizedError { .. } => {
            unauthorized(image, target, "HTTP 401".to_string())
        }
        OciDistributionError::AuthenticationFailure(body) => unauthorized(
            image,
            target,
            format!(
                "the token endpoint refused: {}",
                shorten(&redact(&body, target), 200)
            ),
        ),
        OciDistributionError::RegistryError { envelope, .. } => {
            let first = envelope.errors.first();
            let code = first
                .map(|e| code_name(&e.code))
                .unwrap_or_else(|| "UNKNOWN".to_string());
            let message = first.map(|e| e.message.clone()).unwrap_or_default();
            match first.map(|e| &e.code) {
                Some(OciErrorCode::ManifestUnknown | OciErrorCode::NameUnknown)
                | Some(OciErrorCode::NotFound) => ImageError::NotFound {
                    image: image.to_string(),
                    registry,
                    code,
                    message,
                },
                Some(OciErrorCode::Unauthorized | OciErrorCode::Denied) => {
                    unauthorized(image, target, format!("{code}: {message}"))
                }
                _ => ImageError::Registry {
                    image: image.to_string(),
                    registry,
                    answer: code,
                    message: shorten(&message, 300),
                },
            }
        }
        OciDistributionError::ServerError { code, message, .. } => match code {
            401 => unauthorized(image, target, "HTTP 401".to_string()),
            403 => unauthorized(image, target, "HTTP 403".to_string()),
            404 => ImageError::NotFound {
                image: image.to_string(),
                registry,
                code: "HTTP 404".to_string(),
                message: shorten(&message, 200),
            },
            _ => ImageError::Registry {
                image: image.to_string(),
                registry,
                answer: format!("HTTP {code}"),
                message: shorten(&message, 300),
            },
        },
        OciDistributionError::RequestError(e) => {
            let cause = chain(&e);
            let tls_hint = if cause.contains("http: server gave HTTP response")
                || cause.contains("InvalidContentType")
                || cause.contains("invalid peer certificate")
                || cause.to_ascii_lowercase().contains("tls")
                || cause.to_ascii_lowercase().contains("certificate")
            {
                format!("; if {registry} speaks plain HTTP, list it in images.insecureRegistries")
            } else {
                String::new()
            };
            if e.is_connect() || e.is_timeout() || e.is_request() {
                ImageError::Unreachable {
                    image: image.to_string(),
                    registry,
                    cause,
                    tls_hint,
                }
            } else {
                ImageError::Registry {
                    image: image.to_string(),
                    registry,
                    answer: e
                        .status()
                        .map(|s| format!("HTTP {}", s.as_u16()))
                        .unwrap_or_else(|| "no valid answer".to_string()),
                    message: format!("{cause}{tls_hint}"),
                }
            }
        }
        OciDistributionError::DigestError(e) => ImageError::DigestMismatch {
            image: image.to_string(),
            what: "manifest".to_string(),
            expected: "the digest the registry named".to_string(),
            actual: e.to_string(),
        },
        OciDistributionError::UnsupportedMediaTypeError(t) => ImageError::UnsupportedMediaType {
            image: image.to_string(),
            what: "manifest".to_string(),
            digest: target
                .reference
                .digest()
                .or(target.reference.tag())
                .unwrap_or("")
                .to_string(),
            media_type: t,
        },
        other => ImageError::Registry {
            image: image.to_string(),
            registry,
            answer: "an unexpected answer".to_string(),
            message: shorten(&redact(&other.to_string(), target), 300),
        },
    }
}

/// `text` with the credentials' secret replaced, should a server echo it.
fn redact(text: &str, target: &Target) -> String {
    match &target.credentials.auth {
        oci_client::secrets::RegistryAuth::Basic(_, p) if !p.is_empty() => {
            text.replace(p.as_str(), "<redacted>")
        }
        oci_client::secrets::RegistryAuth::Bearer(t) if !t.is_empty() => {
            text.replace(t.as_str(), "<redacted>")
        }
        _ => text.to_string(),
    }
}

fn code_name(code: &OciErrorCode) -> String {
    match code {
        OciErrorCode::Other(s) => s.clone(),
        other => serde_json::to_value(other)
            .ok()
            .and_then(|v| v.as_str().map(str::to_string))
            .unwrap_or_else(|| format!("{other:?}")),
    }
}
