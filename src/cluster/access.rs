//! The Kubernetes API access the daemon needs: one [`Access`] per resource, with the verbs of
//! the calls it makes. The Role in `deploy/` must grant exactly [`required_access`]; the
//! HTTP-level tests check every call they see against these lists.

/// Verbs on one resource (`group` `""` is the core group; subresources are written
/// `pods/log`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Access {
    /// API group, `""` for core.
    pub group: &'static str,
    /// Resource (plural), e.g. `jobs`, `pods/log`.
    pub resource: &'static str,
    /// Verbs, e.g. `create`, `get`, `watch`, sorted.
    pub verbs: &'static [&'static str],
}

/// The Kubernetes Job runtime (`runtime: kubernetes`): input Secrets, Jobs, their pods and
/// pod logs.
pub const JOB_RUNTIME: &[Access] = &[
    Access {
        group: "",
        resource: "secrets",
        verbs: &["create", "delete"],
    },
    Access {
        group: "batch",
        resource: "jobs",
        verbs: &["create", "delete", "get", "watch"],
    },
    Access {
        group: "",
        resource: "pods",
        verbs: &["list"],
    },
    Access {
        group: "",
        resource: "pods/log",
        verbs: &["get"],
    },
];

/// Leader election and sharding (`leaderElection:`): Leases. `create` (a missing Lease),
/// `get` (kube-lease-manager's reads and the write fence), `patch` (server-side apply to
/// acquire, strategic merge to renew and release) and `list` (membership Leases by label,
/// with shards). No `update`, `watch` or `delete`.
pub const LEADER_ELECTION: &[Access] = &[Access {
    group: "coordination.k8s.io",
    resource: "leases",
    verbs: &["create", "get", "list", "patch"],
}];

/// Everything the daemon may call, merged per `(group, resource)`, sorted: what the Role in
/// `deploy/` grants.
pub fn required_access() -> Vec<(String, String, Vec<String>)> {
    let mut out: std::collections::BTreeMap<(String, String), std::collections::BTreeSet<String>> =
        Default::default();
    for a in JOB_RUNTIME.iter().chain(LEADER_ELECTION) {
        out.entry((a.group.to_string(), a.resource.to_string()))
            .or_default()
            .extend(a.verbs.iter().map(|v| v.to_string()));
    }
    out.into_iter()
        .map(|((g, r), v)| (g, r, v.into_iter().collect()))
        .collect()
}

/// Whether a call with `verb` on `resource` of `group` is listed in `list`.
pub fn allows(list: &[Access], group: &str, resource: &str, verb: &str) -> bool {
    list.iter()
        .any(|a| a.group == group && a.resource == resource && a.verbs.contains(&verb))
}
