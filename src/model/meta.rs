//! Object metadata and references shared by every kind.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

/// The subset of Kubernetes `metav1.ObjectMeta` that promised reads.
///
/// Other ObjectMeta fields (uid, resourceVersion, managedFields, …) are accepted and ignored,
/// as the API server would keep them but no Kratix behaviour depends on them.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ObjectMeta {
    /// `metadata.name`; required for every object promised loads.
    #[serde(default)]
    pub name: String,
    /// `metadata.namespace`; empty for cluster-scoped kinds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// `metadata.labels`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// `metadata.annotations`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}

/// A label selector as Kratix uses it: equality on every listed label (AND).
///
/// Used in `Promise.spec.destinationSelectors` (kratix-contract.md §1.1, §3).
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Selector {
    /// Labels a Destination must carry, with these exact values.
    #[serde(default)]
    pub match_labels: BTreeMap<String, String>,
}

/// Identity of one object, for messages: kind plus optional namespace and name.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct ObjectRef {
    /// The object's `kind`, e.g. `Promise` or `redis`.
    pub kind: String,
    /// The object's namespace; `None` for cluster-scoped objects.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// The object's name (may be empty when the document has none).
    pub name: String,
}

impl fmt::Display for ObjectRef {
    /// Formats as `kind name` or `kind namespace/name`, e.g. `redis default/a`. A namespace
    /// that is not a DNS label or a name that is not a DNS subdomain is shown as written,
    /// quoted and never joined into a path: `redis namespace "x/../.." name "a"`,
    /// `Namespace name "TBDNAMESPACE"`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let plain_name = is_dns_subdomain(&self.name);
        match &self.namespace {
            Some(ns) if is_dns_label(ns) && plain_name => {
                write!(f, "{} {}/{}", self.kind, ns, self.name)
            }
            Some(ns) => {
                write!(f, "{} namespace ", self.kind)?;
                quoted_unless(f, ns, is_dns_label(ns))?;
                f.write_str(" name ")?;
                quoted_unless(f, &self.name, plain_name)
            }
            None if plain_name => write!(f, "{} {}", self.kind, self.name),
            None => write!(f, "{} name {:?}", self.kind, self.name),
        }
    }
}

fn quoted_unless(f: &mut fmt::Formatter<'_>, s: &str, plain: bool) -> fmt::Result {
    if plain {
        f.write_str(s)
    } else {
        write!(f, "{s:?}")
    }
}

/// `namespace/name` as in [`ObjectRef`]'s `Display`: a namespace that is not a DNS label or a
/// name that is not a DNS subdomain is quoted as written (`"x/../.."/"../../../etc"`), so an
/// invalid one is never joined into a path; valid ones are joined unchanged.
pub fn namespaced_name(namespace: &str, name: &str) -> String {
    let (ns_ok, name_ok) = (is_dns_label(namespace), is_dns_subdomain(name));
    match (ns_ok, name_ok) {
        (true, true) => format!("{namespace}/{name}"),
        (true, false) => format!("{namespace}/{name:?}"),
        (false, true) => format!("{namespace:?}/{name}"),
        (false, false) => format!("{namespace:?}/{name:?}"),
    }
}

/// RFC 1123 subdomain (what Kubernetes requires of most object names).
pub fn is_dns_subdomain(s: &str) -> bool {
    s.len() <= 253 && s.split('.').all(is_dns_label)
}

/// RFC 1123 label (namespaces): at most 63 lower-case alphanumerics or `-`, alphanumeric at
/// both ends.
pub fn is_dns_label(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.len() <= 63
        && b.iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
        && b[0] != b'-'
        && b[b.len() - 1] != b'-'
}

/// Kinds whose objects have no namespace (group as in `apiVersion`, `""` for the core group):
/// the Kubernetes built-ins and the cluster-scoped Kratix kinds. A `metadata.namespace`
/// written on one of these is ignored, as the API server ignores it.
pub const CLUSTER_SCOPED_KINDS: &[(&str, &str)] = &[
    ("", "Namespace"),
    ("", "Node"),
    ("", "PersistentVolume"),
    ("", "ComponentStatus"),
    ("rbac.authorization.k8s.io", "ClusterRole"),
    ("rbac.authorization.k8s.io", "ClusterRoleBinding"),
    ("apiextensions.k8s.io", "CustomResourceDefinition"),
    (
        "admissionregistration.k8s.io",
        "ValidatingWebhookConfiguration",
    ),
    (
        "admissionregistration.k8s.io",
        "MutatingWebhookConfiguration",
    ),
    ("admissionregistration.k8s.io", "ValidatingAdmissionPolicy"),
    (
        "admissionregistration.k8s.io",
        "ValidatingAdmissionPolicyBinding",
    ),
    ("apiregistration.k8s.io", "APIService"),
    ("certificates.k8s.io", "CertificateSigningRequest"),
    ("flowcontrol.apiserver.k8s.io", "FlowSchema"),
    ("flowcontrol.apiserver.k8s.io", "PriorityLevelConfiguration"),
    ("networking.k8s.io", "IngressClass"),
    ("node.k8s.io", "RuntimeClass"),
    ("scheduling.k8s.io", "PriorityClass"),
    ("storage.k8s.io", "StorageClass"),
    ("storage.k8s.io", "CSIDriver"),
    ("storage.k8s.io", "CSINode"),
    ("storage.k8s.io", "VolumeAttachment"),
    ("platform.kratix.io", "Promise"),
    ("platform.kratix.io", "PromiseRelease"),
    ("platform.kratix.io", "Destination"),
    ("platform.kratix.io", "GitStateStore"),
    ("platform.kratix.io", "BucketStateStore"),
];

/// True when `kind` of `apiVersion` (`group/version`, or `version` for the core group) is a
/// cluster-scoped kind ([`CLUSTER_SCOPED_KINDS`]).
pub fn is_cluster_scoped(api_version: &str, kind: &str) -> bool {
    let group = api_version.rsplit_once('/').map_or("", |(g, _)| g);
    CLUSTER_SCOPED_KINDS
        .iter()
        .any(|(g, k)| *g == group && *k == kind)
}

/// State key of a request: `<promise>/<namespace>/<name>`. An invalid namespace or name (not
/// a DNS label or subdomain; only invalid requests have one) is quoted as written
/// (`redis/"x/../.."/"../../../etc"`, [`namespaced_name`]), so the key
/// shown in the report and status table is never a path joined from it.
pub fn request_key(promise: &str, namespace: &str, name: &str) -> String {
    format!("{promise}/{}", namespaced_name(namespace, name))
}

/// State key of a Promise.
pub fn promise_key(name: &str) -> String {
    format!("promise/{name}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(kind: &str, ns: Option<&str>, name: &str) -> String {
        ObjectRef {
            kind: kind.into(),
            namespace: ns.map(str::to_string),
            name: name.into(),
        }
        .to_string()
    }

    #[test]
    fn labels_join_only_valid_parts_into_a_path() {
        assert_eq!(id("redis", Some("default"), "a"), "redis default/a");
        assert_eq!(id("Promise", None, "redis"), "Promise redis");
        assert_eq!(
            id("redis", Some("x/../.."), "../../../etc"),
            r#"redis namespace "x/../.." name "../../../etc""#
        );
        assert_eq!(
            id("redis", Some("Team_A"), "a"),
            r#"redis namespace "Team_A" name a"#
        );
        assert_eq!(
            id("Namespace", None, "TBDNAMESPACE"),
            r#"Namespace name "TBDNAMESPACE""#
        );
        assert_eq!(id("app", None, ""), r#"app name """#);
        // State keys: the same rule, joined with `/` only where valid.
        assert_eq!(namespaced_name("default", "a.b"), "default/a.b");
        assert_eq!(
            namespaced_name("x/../..", "../../../etc"),
            r#""x/../.."/"../../../etc""#
        );
        assert_eq!(namespaced_name("Team_A", "a"), r#""Team_A"/a"#);
        assert_eq!(namespaced_name("default", "Upper"), r#"default/"Upper""#);
        assert!(is_cluster_scoped(
            "rbac.authorization.k8s.io/v1",
            "ClusterRole"
        ));
        assert!(is_cluster_scoped("v1", "Namespace"));
        assert!(!is_cluster_scoped("v1", "Service"));
        assert!(!is_cluster_scoped("example.com/v1", "Namespace"));
    }
}
