//! Image references parsed exactly as oci-spec parses them (`Reference::try_from`), without
//! compiling oci-spec's grammar for ASCII input. oci-spec writes the tag as `[\w][\w.-]{0,127}`
//! with Unicode `\w`: 128 copies of the Unicode word class, 7.2 MB of compiled automaton kept
//! for the life of the process (docs/benchmarks.md, "Memory", fifth round; the known cost of
//! bounded repeats of Unicode classes, rust-lang/regex#668). On ASCII input Unicode `\w`
//! matches what ASCII `\w` matches, so the same grammar compiled without Unicode gives the
//! same captures; what oci-spec does with them after (the default tag, Docker Hub's domain
//! and `library/`, the length and digest checks) is repeated here, and
//! `tests::every_reference_parses_as_oci_spec_parses_it` holds the two to the same answers.
//! Input that is not ASCII goes to oci-spec itself.

use std::sync::OnceLock;

use oci_spec::distribution::{ParseError, Reference};
use regex::Regex;

/// oci-spec 0.10's `REFERENCE_REGEXP` (`distribution/reference.rs`), compiled with Unicode off
/// (`(?-u)`), so `\w` is `[0-9A-Za-z_]` as in the Go grammar it was ported from
/// (distribution/reference `regexp.go`).
const GRAMMAR: &str = r"(?-u)^((?:(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])(?:(?:\.(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9]))+)?(?::[0-9]+)?/)?[a-z0-9]+(?:(?:(?:[._]|__|[-]*)[a-z0-9]+)+)?(?:(?:/[a-z0-9]+(?:(?:(?:[._]|__|[-]*)[a-z0-9]+)+)?)+)?)(?::([\w][\w.-]{0,127}))?(?:@([A-Za-z][A-Za-z0-9]*(?:[-_+.][A-Za-z][A-Za-z0-9]*)*[:][[:xdigit:]]{32,}))?$";

/// oci-spec's `NAME_TOTAL_LENGTH_MAX`.
const NAME_TOTAL_LENGTH_MAX: usize = 255;

fn grammar() -> &'static Regex {
    static RE: OnceLock<Regex> = OnceLock::new();
    RE.get_or_init(|| Regex::new(GRAMMAR).expect("the reference grammar compiles"))
}

/// `image` as `Reference::try_from(image)` reads it: the same reference or the same error.
pub(super) fn parse(image: &str) -> Result<Reference, ParseError> {
    if !image.is_ascii() {
        return Reference::try_from(image);
    }
    if image.is_empty() {
        return Err(ParseError::NameEmpty);
    }
    let caps = grammar()
        .captures(image)
        .ok_or(ParseError::ReferenceInvalidFormat)?;
    let (registry, repository) = split_domain(&caps[1]);
    if repository.len() > NAME_TOTAL_LENGTH_MAX {
        return Err(ParseError::NameTooLong);
    }
    let tag = caps.get(2).map(|m| m.as_str().to_string());
    let digest = caps.get(3).map(|m| m.as_str().to_string());
    if let Some(d) = &digest {
        let want = match d.split_once(':') {
            None => return Err(ParseError::DigestInvalidFormat),
            Some(("sha256", _)) => 64,
            Some(("sha384", _)) => 96,
            Some(("sha512", _)) => 128,
            Some(_) => return Err(ParseError::DigestUnsupported),
        };
        if d.split_once(':').map(|(_, hex)| hex.len()) != Some(want) {
            return Err(ParseError::DigestInvalidLength);
        }
    }
    Ok(match (tag, digest) {
        (Some(t), Some(d)) => Reference::with_tag_and_digest(registry, repository, t, d),
        (Some(t), None) => Reference::with_tag(registry, repository, t),
        (None, Some(d)) => Reference::with_digest(registry, repository, d),
        (None, None) => Reference::with_tag(registry, repository, "latest".into()),
    })
}

/// oci-spec's `split_domain` (from Docker's `normalize.go`): the registry and the repository
/// of a name, Docker Hub's by default, with `library/` for its official images.
fn split_domain(name: &str) -> (String, String) {
    let (mut domain, mut rest) = match name.split_once('/') {
        Some((left, right)) if left.contains('.') || left.contains(':') || left == "localhost" => {
            (left.to_string(), right.to_string())
        }
        _ => ("docker.io".to_string(), name.to_string()),
    };
    if domain == "index.docker.io" {
        domain = "docker.io".into();
    }
    if domain == "docker.io" && !rest.contains('/') {
        rest = format!("library/{rest}");
    }
    (domain, rest)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_reference_parses_as_oci_spec_parses_it() {
        let long_tag = format!("v{}", "1".repeat(127));
        let too_long_tag = format!("v{}", "1".repeat(128));
        let long_name = format!("example.com/{}", "a".repeat(255));
        let too_long_name = format!("example.com/{}", "a".repeat(256));
        let hub_long = "a".repeat(248);
        let sha256 = "a".repeat(64);
        let corpus: Vec<String> = [
            "busybox",
            "busybox:1.36",
            "library/busybox",
            "docker.io/busybox",
            "index.docker.io/busybox:latest",
            "index.docker.io/team/app",
            "test.com:tag",
            "test.com:5000",
            "test.com/repo:tag",
            "test:5000/repo",
            "test:5000/repo:tag",
            "localhost/app",
            "localhost:5000/app:v1",
            "127.0.0.1:5000/ns/app:v1.2.3",
            "ghcr.io/syntasso/kratix-marketplace/redis-configure-pipeline:v0.1.0",
            "registry.example.com/a/b/c/d:tag_with.dots-and_",
            "a__b/c---d.e_f",
            "UPPER/case",
            "Upper.example.com/app",
            "app:",
            ":tag",
            "app@",
            "app:tag@",
            "-app",
            "app-",
            "app//x",
            "app/",
            "",
            " ",
            "app:-tag",
            "app:.tag",
            "app:_tag",
            "exa mple.com/app",
            "example.com:port/app",
            "app@sha256:abc",
            "app@md5:0123456789abcdef0123456789abcdef",
            "app@sha384:0123456789abcdef0123456789abcdef",
            "app@sha512:0123456789abcdef0123456789abcdef",
            "app@sha256:0123456789ABCDEF0123456789abcdef0123456789abcdef0123456789abcdef",
            "app@sha256",
            "tag-ü",
            "app:tägü",
            "ëxample.com/app",
        ]
        .iter()
        .map(|s| s.to_string())
        .chain([
            format!("app:{long_tag}"),
            format!("app:{too_long_tag}"),
            long_name,
            too_long_name,
            hub_long.clone(),
            format!("{hub_long}a"),
            format!("app@sha256:{sha256}"),
            format!("app:1.0@sha256:{sha256}"),
            format!("example.com/app@sha256:{sha256}x"),
            format!("app@sha384:{}", "b".repeat(96)),
            format!("app@sha512:{}", "c".repeat(128)),
            format!("app@sha512:{}", "c".repeat(127)),
        ])
        .collect();
        let mut valid = 0;
        for image in &corpus {
            let ours = parse(image);
            let theirs = Reference::try_from(image.as_str());
            assert_eq!(ours, theirs, "{image:?}");
            valid += usize::from(theirs.is_ok());
        }
        assert!(
            valid > 15 && valid < corpus.len() - 15,
            "the corpus has both: {valid} valid of {}",
            corpus.len()
        );
    }
}
