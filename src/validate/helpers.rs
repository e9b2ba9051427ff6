//! Small shared rules and formats: deterministic YAML ([`to_yaml`]), Kubernetes label and
//! DNS name syntax ([`check_label`]), Go durations ([`parse_go_duration`]) and the sort
//! order of validated objects.

use serde_json::Value;

use crate::config::Located;

/// Serialises a JSON value as YAML with sorted keys (serde-saphyr, which quotes strings that
/// YAML 1.1 readers would misread, such as `yes` or `on`).
pub fn to_yaml(v: &Value) -> String {
    serde_saphyr::to_string(v).unwrap_or_else(|e| format!("# unserialisable: {e}\n"))
}

/// Sorts objects by kind, namespace and name.
pub(super) fn sorted<T>(mut v: Vec<Located<T>>) -> Vec<Located<T>> {
    v.sort_by(|a, b| a.id.cmp(&b.id));
    v
}

/// A Kubernetes label: the key a qualified name (`[prefix/]name`, the prefix a DNS subdomain,
/// the name at most 63 alphanumerics, `-`, `_`, `.`, alphanumeric at both ends), the value
/// empty or a name part (Kratix's Promise webhook: `validation.IsQualifiedName`,
/// `validation.IsValidLabelValue`). The error is one sentence in the apimachinery wording.
pub fn check_label(key: &str, value: &str) -> Result<(), String> {
    const NAME_RULE: &str = "consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character";
    let name_ok = |n: &str| {
        let b = n.as_bytes();
        b.first().is_some_and(u8::is_ascii_alphanumeric)
            && b.last().is_some_and(u8::is_ascii_alphanumeric)
            && b.iter()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.'))
    };
    let (prefix, name) = match key.split_once('/') {
        Some((p, n)) => (Some(p), n),
        None => (None, key),
    };
    let key_err = |m: String| Err(format!("invalid label key {key:?}: {m}"));
    if name.contains('/') {
        return key_err(format!(
            "a qualified name must {NAME_RULE}, with an optional DNS subdomain prefix and '/' (e.g. 'example.com/MyName')"
        ));
    }
    match prefix {
        Some("") => return key_err("prefix part must be non-empty".into()),
        Some(p) if !is_dns_subdomain(p) => {
            return key_err(format!(
                "prefix part {p:?} must be a lowercase RFC 1123 subdomain (e.g. 'example.com')"
            ));
        }
        _ => {}
    }
    if name.is_empty() {
        return key_err("name part must be non-empty".into());
    }
    if name.len() > 63 {
        return key_err("name part must be no more than 63 characters".into());
    }
    if !name_ok(name) {
        return key_err(format!("name part must {NAME_RULE}"));
    }
    if value.len() > 63 {
        return Err(format!(
            "invalid label value {value:?}: must be no more than 63 characters"
        ));
    }
    if !value.is_empty() && !name_ok(value) {
        return Err(format!(
            "invalid label value {value:?}: a valid label must be an empty string or {NAME_RULE}"
        ));
    }
    Ok(())
}

/// The apimachinery wording for a name that is not a lowercase RFC 1123 subdomain.
pub(super) const DNS_SUBDOMAIN_RULE: &str = "must consist of lower case alphanumeric characters, '-' or '.', and start and end with an alphanumeric character";

/// `metadata.name` of an object Kubernetes would store: a lowercase RFC 1123 subdomain of at
/// most 253 characters (apimachinery `NameIsDNSSubdomain`, which the API server applies to
/// Promises, Destinations and custom resources alike). The error is one sentence.
pub(super) fn check_object_name(name: &str) -> Result<(), String> {
    if name.is_empty() {
        Err("required field is missing".into())
    } else if name.len() > 253 {
        Err(format!(
            "{name:?} is {} characters; must be no more than 253",
            name.len()
        ))
    } else if !is_dns_subdomain(name) {
        Err(format!("{name:?} {DNS_SUBDOMAIN_RULE}"))
    } else {
        Ok(())
    }
}

/// RFC 1123 subdomain: what Kubernetes requires of most object names.
pub(super) fn is_dns_subdomain(s: &str) -> bool {
    s.len() <= 253 && s.split('.').all(|l| !l.is_empty() && is_label_chars(l))
}

/// RFC 1123 label: namespaces.
pub(super) fn is_dns_label(s: &str) -> bool {
    s.len() <= 63 && is_label_chars(s)
}

fn is_label_chars(l: &str) -> bool {
    let b = l.as_bytes();
    !b.is_empty()
        && b.iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
        && b[0] != b'-'
        && b[b.len() - 1] != b'-'
}

pub use crate::model::parse_go_duration;
