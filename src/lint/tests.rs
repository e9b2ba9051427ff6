//! Each rule on a small tree: a finding with the file, the object and the consumer's words,
//! and none for what Argo CD and Flux accept.

use std::collections::BTreeMap;

use super::*;

fn tree(files: &[(&str, &str)]) -> BTreeMap<String, Vec<u8>> {
    files
        .iter()
        .map(|(p, c)| (p.to_string(), c.as_bytes().to_vec()))
        .collect()
}

fn lint(files: &[(&str, &str)]) -> Vec<Finding> {
    lint_destination("dev", &tree(files), &LintSettings::default())
}

const CM: &str = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: a\n  namespace: default\n";

#[test]
fn what_consumers_accept_has_no_finding() {
    let f = lint(&[
        ("dev/resources/a.yaml", CM),
        (
            "dev/resources/multi.yaml",
            "# comment only\n---\napiVersion: v1\nkind: Namespace\nmetadata:\n  name: team-a\n---\n",
        ),
        (
            "dev/resources/b.json",
            r#"{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"b","namespace":"default"}}"#,
        ),
        (
            "dev/resources/list.yaml",
            "apiVersion: v1\nkind: List\nitems:\n- apiVersion: v1\n  kind: ConfigMap\n  metadata: {name: c, namespace: default}\n",
        ),
        // Same name, different kind or namespace: not a duplicate.
        (
            "dev/resources/c.yaml",
            "apiVersion: v1\nkind: Secret\nmetadata:\n  name: a\n  namespace: default\n---\napiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: a\n  namespace: other\n",
        ),
        (
            "dev/resources/app/kustomization.yaml",
            "resources:\n- deploy.yaml\n- https://example.com/remote.yaml\npatches:\n- path: patch.yaml\n",
        ),
        (
            "dev/resources/app/deploy.yaml",
            "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: web\n  namespace: default\n",
        ),
        (
            "dev/resources/app/patch.yaml",
            "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: web2\n  namespace: default\n",
        ),
    ]);
    assert!(f.is_empty(), "{f:#?}");
}

#[test]
fn parse_and_object_name_the_file_and_document() {
    let f = lint(&[
        ("dev/resources/bad.yaml", "a: [1, 2\n"),
        ("dev/resources/two.json", "[1, 2]"),
        (
            "dev/resources/values.yaml",
            "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: ok\n---\nreplicas: 3\n",
        ),
    ]);
    let text: Vec<String> = f.iter().map(ToString::to_string).collect();
    assert_eq!(f.len(), 3, "{text:#?}");
    assert!(
        text[0].starts_with("error[parse]: dev/resources/bad.yaml: invalid YAML"),
        "{}",
        text[0]
    );
    assert!(
        text[1].contains(
            "error[parse]: dev/resources/two.json: a .json file must hold exactly one object"
        ),
        "{}",
        text[1]
    );
    assert_eq!(
        text[2],
        "error[object]: dev/resources/values.yaml: document 2: missing apiVersion: not a Kubernetes object (Flux: \"missing Resource metadata\"; Argo CD fails the app) (Destination dev)"
    );
}

#[test]
fn names_namespaces_and_cluster_scoped_kinds() {
    let f = lint(&[
        (
            "dev/resources/a.yaml",
            "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: My_Config\n  namespace: Team\n",
        ),
        (
            "dev/resources/ns.yaml",
            "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: team-a\n  namespace: default\n---\napiVersion: rbac.authorization.k8s.io/v1\nkind: ClusterRole\nmetadata:\n  name: reader\n  namespace: default\n",
        ),
    ]);
    let rules: Vec<(Rule, &str, Option<&str>)> = f
        .iter()
        .map(|x| (x.rule, x.file.as_str(), x.object.as_deref()))
        .collect();
    assert_eq!(
        rules,
        vec![
            (
                Rule::Name,
                "dev/resources/a.yaml",
                Some("ConfigMap/Team/My_Config")
            ),
            (
                Rule::Name,
                "dev/resources/a.yaml",
                Some("ConfigMap/Team/My_Config")
            ),
            (
                Rule::ClusterScopedNamespace,
                "dev/resources/ns.yaml",
                Some("ClusterRole/default/reader")
            ),
            (
                Rule::ClusterScopedNamespace,
                "dev/resources/ns.yaml",
                Some("Namespace/default/team-a")
            ),
        ]
    );
    assert!(
        f[0].message
            .contains("\"My_Config\" is not a DNS-1123 subdomain")
    );
    assert!(f[1].message.contains("\"Team\" is not a DNS-1123 label"));
}

#[test]
fn the_same_object_in_two_files_is_a_duplicate() {
    let f = lint(&[
        ("dev/resources/x/a.yaml", CM),
        ("dev/resources/y/a.yaml", CM),
        ("dev/dependencies/a.yaml", CM),
    ]);
    assert_eq!(f.len(), 2, "{f:#?}");
    assert_eq!(f[0].rule, Rule::DuplicateObject);
    assert_eq!(f[0].object.as_deref(), Some("ConfigMap/default/a"));
    assert!(
        f.iter().all(|x| x
            .message
            .starts_with("also declared in dev/dependencies/a.yaml")),
        "{f:#?}"
    );
}

#[test]
fn kustomizations_must_list_what_exists_and_what_is_needed() {
    let f = lint(&[
        (
            "dev/resources/kustomization.yaml",
            "resources:\n- a.yaml\n- missing.yaml\n- sub\n- plain\n- ../../../outside.yaml\n",
        ),
        ("dev/resources/a.yaml", CM),
        (
            "dev/resources/unlisted.yaml",
            "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: u, namespace: default}\n",
        ),
        (
            "dev/resources/sub/kustomization.yaml",
            "resources: [s.yaml]\n",
        ),
        (
            "dev/resources/sub/s.yaml",
            "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: s, namespace: default}\n",
        ),
        (
            "dev/resources/plain/p.yaml",
            "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: p, namespace: default}\n",
        ),
    ]);
    let text: Vec<String> = f.iter().map(ToString::to_string).collect();
    assert_eq!(f.len(), 5, "{text:#?}");
    let k = "dev/resources/kustomization.yaml";
    let has = |file: &str, needle: &str| {
        f.iter()
            .any(|x| x.rule == Rule::Kustomization && x.file == file && x.message.contains(needle))
    };
    assert!(
        has(k, "resources entry \"missing.yaml\" does not exist"),
        "{text:#?}"
    );
    assert!(
        has(
            k,
            "resources entry \"plain\" is a directory without a kustomization file"
        ),
        "{text:#?}"
    );
    assert!(
        has(
            k,
            "resources entry \"../../../outside.yaml\" leaves the state store"
        ),
        "{text:#?}"
    );
    assert!(
        has(
            "dev/resources/unlisted.yaml",
            "not listed in dev/resources/kustomization.yaml"
        ),
        "{text:#?}"
    );
    assert!(
        has(
            "dev/resources/plain/p.yaml",
            "not listed in dev/resources/kustomization.yaml"
        ),
        "{text:#?}"
    );
}

#[test]
fn other_file_types_are_warnings_and_severity_is_configurable() {
    let files = [
        ("dev/resources/main.tf", "resource {}\n"),
        ("dev/resources/a.yaml", "x: 1\n"),
    ];
    let f = lint(&files);
    assert_eq!(f.len(), 2);
    let tf = f.iter().find(|x| x.rule == Rule::FileType).unwrap();
    assert_eq!(tf.severity, Severity::Warning);
    assert_eq!(tf.file, "dev/resources/main.tf");

    let settings: LintSettings =
        serde_saphyr::from_str("rules: {file-type: off, object: warning}\n").unwrap();
    let f = lint_destination("dev", &tree(&files), &settings);
    assert_eq!(f.len(), 1);
    assert_eq!(
        (f[0].rule, f[0].severity),
        (Rule::Object, Severity::Warning)
    );

    let skip: LintSettings = serde_saphyr::from_str("skipDestinations: [dev]\n").unwrap();
    assert!(lint_destination("dev", &tree(&files), &skip).is_empty());
    assert!(serde_saphyr::from_str::<LintSettings>("rules: {no-such-rule: off}\n").is_err());
    let e = serde_saphyr::from_str::<LintSettings>("rules: {parse: fatal}\n").unwrap_err();
    assert!(
        e.to_string().contains("expected off, warning or error"),
        "{e}"
    );
    let quoted: LintSettings = serde_saphyr::from_str("rules: {parse: 'off'}\n").unwrap();
    assert_eq!(quoted.severity(Rule::Parse), Severity::Off);
}

/// Lints `files` (path → content) through `cache`, with each file's content id being its
/// content; returns the findings and the paths whose content was read.
fn lint_cached(files: &[(&str, &str)], cache: &mut LintCache) -> (Vec<Finding>, Vec<String>) {
    let ids: BTreeMap<&str, &str> = files.iter().map(|(p, c)| (*p, *c)).collect();
    let by_content: BTreeMap<&str, &str> = files.iter().map(|(p, c)| (*c, *p)).collect();
    let read = std::cell::RefCell::new(Vec::new());
    let findings = lint_destination_with(
        "dev",
        &ids,
        |id| {
            read.borrow_mut().push(by_content[id].to_string());
            Some(id.as_bytes().to_vec())
        },
        cache,
        &LintSettings::default(),
    );
    (findings, read.into_inner())
}

#[test]
fn a_cached_lint_reads_only_changed_files_and_finds_what_a_fresh_one_finds() {
    let dup = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: a\n  namespace: default\n#2\n";
    let kust = "resources: [a.yaml]\n";
    let first = [
        ("dev/resources/a.yaml", CM),
        ("dev/resources/bad.yaml", "a: [\n"),
        ("dev/other/kustomization.yaml", kust),
    ];
    let mut cache = LintCache::default();
    let (findings, read) = lint_cached(&first, &mut cache);
    assert_eq!(findings, lint(&first));
    assert!(findings.iter().any(|f| f.rule == Rule::Parse));
    assert!(findings.iter().any(|f| f.rule == Rule::Kustomization));
    assert_eq!(read.len(), 3, "{read:?}");

    // One file changed (fixed), one added (a duplicate of a.yaml): only those two are read,
    // and the kustomization file (its rule reads it with the directory every time).
    let second = [
        ("dev/resources/a.yaml", CM),
        (
            "dev/resources/bad.yaml",
            "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: ok\n",
        ),
        ("dev/resources/dup.yaml", dup),
        ("dev/other/kustomization.yaml", kust),
    ];
    let (findings, mut read) = lint_cached(&second, &mut cache);
    assert_eq!(findings, lint(&second));
    read.sort();
    assert_eq!(
        read,
        [
            "dev/other/kustomization.yaml",
            "dev/resources/bad.yaml",
            "dev/resources/dup.yaml"
        ]
    );
    assert!(!findings.iter().any(|f| f.rule == Rule::Parse));
    assert!(findings.iter().any(|f| f.rule == Rule::DuplicateObject));

    // The duplicate and the kustomization removed: the finding goes, and nothing is read.
    let (findings, read) = lint_cached(&first[..1], &mut cache);
    assert_eq!(findings, lint(&first[..1]));
    assert!(findings.is_empty(), "{findings:?}");
    assert!(read.is_empty(), "{read:?}");
    // Files no longer listed left the cache: listing them again reads them again.
    let (_, read) = lint_cached(&second[1..3], &mut cache);
    assert_eq!(read.len(), 2, "{read:?}");
}

#[test]
fn an_unreadable_file_is_left_out_as_if_absent() {
    let files = [
        ("dev/resources/a.yaml", CM),
        ("dev/kustomization.yaml", "resources: [resources/a.yaml]\n"),
    ];
    let ids: BTreeMap<&str, &str> = files.iter().map(|(p, c)| (*p, *c)).collect();
    // a.yaml cannot be read: the kustomization lists a path that is not there.
    let findings = lint_destination_with(
        "dev",
        &ids,
        |id| (id != CM).then(|| id.as_bytes().to_vec()),
        &mut LintCache::default(),
        &LintSettings::default(),
    );
    assert_eq!(findings, lint(&files[1..]));
    assert!(
        findings
            .iter()
            .any(|f| f.message.contains("does not exist")),
        "{findings:?}"
    );
}
