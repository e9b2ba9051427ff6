//! Verifying Git forge webhooks before acting on them.
//!
//! - GitHub: `X-Hub-Signature-256: sha256=<hex HMAC-SHA256 of the raw body>`.
//! - Gitea / Forgejo: `X-Gitea-Signature: <hex HMAC-SHA256 of the raw body>` (they also send
//!   `X-Hub-Signature-256`, which is accepted the same way).
//! - GitLab: `X-Gitlab-Token: <the secret>`.
//!
//! Comparisons are constant-time (`Mac::verify_slice`, `subtle::ConstantTimeEq`). When a secret
//! is configured, a call with none of these headers is refused.
//!
//! A verified push event for another ref than the one the daemon follows is ignored
//! ([`pushed_ref`], [`moves`]).

use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;
use subtle::ConstantTimeEq;

/// Why a webhook call was refused (never echoes the secret or the signature).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WebhookError {
    /// No signature or token header although a secret is configured.
    #[error(
        "unsigned webhook call refused: send X-Hub-Signature-256, X-Gitea-Signature or X-Gitlab-Token"
    )]
    Unsigned,
    /// The signature or token does not match.
    #[error("webhook signature does not match")]
    BadSignature,
}

/// Checks a webhook call. `header` looks up a request header by (case-insensitive) name.
/// With no secret every call is accepted; with an empty one every call is refused.
pub fn verify<'a>(
    secret: Option<&[u8]>,
    body: &[u8],
    header: impl Fn(&str) -> Option<&'a str>,
) -> Result<(), WebhookError> {
    let Some(secret) = secret else { return Ok(()) };
    if secret.is_empty() {
        // Anyone can compute an HMAC with an empty key, and an empty GitLab token matches
        // it: an empty secret refuses every call (the daemon refuses to start with one).
        return Err(WebhookError::BadSignature);
    }
    if let Some(sig) = header("x-hub-signature-256") {
        let hex_sig = sig
            .strip_prefix("sha256=")
            .ok_or(WebhookError::BadSignature)?;
        return verify_hmac(secret, body, hex_sig);
    }
    if let Some(sig) = header("x-gitea-signature") {
        return verify_hmac(secret, body, sig);
    }
    if let Some(token) = header("x-gitlab-token") {
        return if bool::from(token.as_bytes().ct_eq(secret)) {
            Ok(())
        } else {
            Err(WebhookError::BadSignature)
        };
    }
    Err(WebhookError::Unsigned)
}

fn verify_hmac(secret: &[u8], body: &[u8], hex_sig: &str) -> Result<(), WebhookError> {
    let sig = hex::decode(hex_sig.trim()).map_err(|_| WebhookError::BadSignature)?;
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).map_err(|_| WebhookError::BadSignature)?;
    mac.update(body);
    mac.verify_slice(&sig)
        .map_err(|_| WebhookError::BadSignature)
}

/// The ref a push event names: the top-level `"ref"` string of a JSON payload, such as
/// `refs/heads/main` (GitHub, Gitea / Forgejo and GitLab push and tag push events). `None`
/// when the body is not JSON or has no `ref` (pings, other events).
pub fn pushed_ref(body: &[u8]) -> Option<String> {
    let v: serde_json::Value = serde_json::from_slice(body).ok()?;
    v.get("ref")?.as_str().map(str::to_string)
}

/// Whether a push to `pushed` (a full ref, `refs/heads/main`) can move `followed`, the
/// daemon's `--ref`: the same ref, or its short branch or tag name (`main`, `v1`). `HEAD`
/// (the remote's default branch, whose name the daemon does not know) matches every push.
pub fn moves(followed: &str, pushed: &str) -> bool {
    followed == "HEAD"
        || pushed == followed
        || pushed.strip_prefix("refs/heads/") == Some(followed)
        || pushed.strip_prefix("refs/tags/") == Some(followed)
}

/// Hex HMAC-SHA256 of `body` (what GitHub puts after `sha256=`); for tests and tools.
pub fn sign(secret: &[u8], body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).expect("HMAC takes keys of any length");
    mac.update(body);
    hex::encode(mac.finalize().into_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h<'a>(pairs: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<&'a str> {
        move |name| {
            pairs
                .iter()
                .find(|(k, _)| k.eq_ignore_ascii_case(name))
                .map(|(_, v)| *v)
        }
    }

    #[test]
    fn forge_signatures() {
        let body = br#"{"ref":"refs/heads/main"}"#;
        let good = format!("sha256={}", sign(b"s3cret", body));
        assert_eq!(
            verify(Some(b"s3cret"), body, h(&[("X-Hub-Signature-256", &good)])),
            Ok(())
        );
        assert_eq!(
            verify(Some(b"other"), body, h(&[("X-Hub-Signature-256", &good)])),
            Err(WebhookError::BadSignature)
        );
        assert_eq!(
            verify(
                Some(b"s3cret"),
                b"tampered",
                h(&[("X-Hub-Signature-256", &good)])
            ),
            Err(WebhookError::BadSignature)
        );
        let gitea = sign(b"s3cret", body);
        assert_eq!(
            verify(Some(b"s3cret"), body, h(&[("X-Gitea-Signature", &gitea)])),
            Ok(())
        );
        assert_eq!(
            verify(Some(b"s3cret"), body, h(&[("X-Gitea-Signature", "zz")])),
            Err(WebhookError::BadSignature)
        );
        assert_eq!(
            verify(Some(b"s3cret"), body, h(&[("X-Gitlab-Token", "s3cret")])),
            Ok(())
        );
        assert_eq!(
            verify(Some(b"s3cret"), body, h(&[("X-Gitlab-Token", "s3cre")])),
            Err(WebhookError::BadSignature)
        );
        assert_eq!(
            verify(Some(b"s3cret"), body, h(&[])),
            Err(WebhookError::Unsigned)
        );
        assert_eq!(verify(None, body, h(&[])), Ok(()));
        assert!(!WebhookError::BadSignature.to_string().contains("s3cret"));
    }

    #[test]
    fn push_refs() {
        assert_eq!(
            pushed_ref(br#"{"ref":"refs/heads/main","after":"abc"}"#).as_deref(),
            Some("refs/heads/main")
        );
        assert_eq!(pushed_ref(br#"{"zen":"ping"}"#), None);
        assert_eq!(pushed_ref(b"payload=%7B%7D"), None);
        assert_eq!(pushed_ref(br#"{"ref":7}"#), None);
        assert!(moves("main", "refs/heads/main"));
        assert!(moves("refs/heads/main", "refs/heads/main"));
        assert!(moves("v1", "refs/tags/v1"));
        assert!(moves("HEAD", "refs/heads/anything"));
        assert!(!moves("main", "refs/heads/feature"));
        assert!(!moves("main", "refs/tags/main-1"));
        assert!(!moves("main", "refs/heads/x/main"));
    }
}
