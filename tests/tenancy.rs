//! Tenancy by path (README "Trust and tenancy", issue 22 part 2): `promised-policy.yaml`
//! says which folders hold platform objects and what each team folder may request. A refused
//! request fails alone with the rule named; a Promise outside the platform paths is refused
//! and its pipelines never run; everything else reconciles.
//!
//! Pipelines run with `sandbox: none`, so no bubblewrap is needed.

mod common;

use std::path::Path;

use common::{condition, promised, status_row};

const POLICY: &str = r#"apiVersion: promised.dev/v1alpha1
kind: TenancyPolicy
metadata: {name: tenancy}
spec:
  platform:
    paths: ["platform/**", "promises/**"]
  teams:
    - name: team-a
      paths: ["teams/a/**"]
      namespaces: ["team-a", "team-a-*"]
      promises: [app]
"#;

/// A Promise `rogue` whose pipeline would leave a marker file if it ever ran.
fn rogue_promise(marker: &Path) -> String {
    common::app::PROMISE
        .replace("name: app", "name: rogue")
        .replace("apps.example.com", "rogues.example.com")
        .replace("{kind: App, plural: apps, singular: app}", "{kind: Rogue, plural: rogues, singular: rogue}")
        .replace(
            "  workflows:\n",
            &format!(
                "  workflows:\n    promise:\n      configure:\n        - apiVersion: platform.kratix.io/v1alpha1\n          kind: Pipeline\n          metadata: {{name: mark}}\n          spec:\n            containers:\n              - name: mark\n                image: example.com/mark\n                command: [\"/bin/sh\", \"-c\", \"touch {}\"]\n",
                marker.display()
            ),
        )
}

fn write(root: &Path, rel: &str, text: &str) {
    let p = root.join(rel);
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(p, text).unwrap();
}

#[test]
fn team_folders_request_only_what_they_may_and_promises_stay_in_platform_paths() {
    let tmp = tempfile::tempdir().unwrap();
    let config = tmp.path().join("config");
    common::app::write_config(&config);
    write(&config, "promised-policy.yaml", POLICY);
    write(
        &config,
        "teams/a/ok.yaml",
        &common::app::request("ok", "team-a-dev"),
    );
    write(
        &config,
        "teams/a/prod.yaml",
        &common::app::request("prod", "prod"),
    );
    write(
        &config,
        "requests/stray.yaml",
        &common::app::request("stray", "team-a"),
    );
    let marker = tmp.path().join("rogue-ran");
    write(
        &config,
        "teams/a/rogue/promise.yaml",
        &rogue_promise(&marker),
    );
    // A platform Promise team-a may not use.
    write(
        &config,
        "promises/other/promise.yaml",
        &common::app::PROMISE
            .replace("name: app", "name: other")
            .replace("apps.example.com", "others.example.com")
            .replace(
                "{kind: App, plural: apps, singular: app}",
                "{kind: Other, plural: others, singular: other}",
            ),
    );
    write(
        &config,
        "teams/a/other.yaml",
        &common::app::request("theirs", "team-a").replace("kind: App", "kind: Other"),
    );
    let daemon_config = tmp.path().join("promised.yaml");
    std::fs::write(&daemon_config, "sandbox: none\n").unwrap();
    let state = tmp.path().join("state");

    // validate: the policy is in force, each refusal names the file and the rule.
    let (code, out, _) = promised(&["validate", config.to_str().unwrap()]);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("tenancy: promised-policy.yaml is in force"),
        "{out}"
    );
    assert!(
        out.contains("teams/a/prod.yaml")
            && out.contains("team team-a may not request namespace \"prod\" (rule spec.teams[0].namespaces: [team-a, team-a-*])"),
        "{out}"
    );
    assert!(
        out.contains("teams/a/rogue/promise.yaml") && out.contains("outside the platform paths"),
        "{out}"
    );
    assert!(
        out.contains("requests/stray.yaml") && out.contains("in no team's paths"),
        "{out}"
    );
    assert!(
        out.contains("teams/a/other.yaml")
            && out.contains(
                "team team-a may not request Promise other (rule spec.teams[0].promises: [app])"
            ),
        "{out}"
    );

    let (code, out, err) = promised(&[
        "reconcile",
        "--config",
        config.to_str().unwrap(),
        "--state-dir",
        state.to_str().unwrap(),
        "--daemon-config",
        daemon_config.to_str().unwrap(),
    ]);
    assert_eq!(code, 1, "refusals fail the pass:\n{out}\n{err}");
    // The allowed request reconciled; the refused ones failed alone, with the rule.
    let ok = status_row(&state, "app/team-a-dev/ok");
    assert_eq!(condition(&ok, "Reconciled")["status"], "True", "{ok}");
    let prod = status_row(&state, "app/prod/prod");
    assert_eq!(
        condition(&prod, "Reconciled")["reason"],
        "InvalidRequest",
        "{prod}"
    );
    let msg = prod["status"]["message"].as_str().unwrap();
    assert!(msg.contains("spec.teams[0].namespaces"), "{msg}");
    let theirs = status_row(&state, "other/team-a/theirs");
    assert_eq!(
        condition(&theirs, "Reconciled")["reason"],
        "InvalidRequest",
        "{theirs}"
    );
    let stray = status_row(&state, "app/team-a/stray");
    assert!(
        stray["status"]["message"]
            .as_str()
            .unwrap()
            .contains("in no team's paths"),
        "{stray}"
    );
    // The rogue Promise never ran.
    assert!(
        !marker.exists(),
        "a Promise outside the platform paths ran its pipeline"
    );
    // The same Promise in a platform path runs (so the marker shows a run).
    std::fs::rename(config.join("teams/a/rogue"), config.join("promises/rogue")).unwrap();
    let (_, out, err) = promised(&[
        "reconcile",
        "--config",
        config.to_str().unwrap(),
        "--state-dir",
        state.to_str().unwrap(),
        "--daemon-config",
        daemon_config.to_str().unwrap(),
    ]);
    assert!(marker.exists(), "in a platform path it runs:\n{out}\n{err}");

    // Without the policy: validate says none is in force, and everything is allowed.
    std::fs::remove_file(config.join("promised-policy.yaml")).unwrap();
    let (_, out, _) = promised(&["validate", config.to_str().unwrap()]);
    assert!(
        out.contains("tenancy: no tenancy policy is in force"),
        "{out}"
    );
}

/// A policy that does not load refuses every request and platform object (a typo must not
/// open the repository), with the parse error named.
#[test]
fn a_policy_that_does_not_load_refuses_everything() {
    let tmp = tempfile::tempdir().unwrap();
    let config = tmp.path().join("config");
    common::app::write_config(&config);
    write(
        &config,
        "promised-policy.yaml",
        &POLICY.replace("namespaces:", "namespacez:"),
    );
    write(
        &config,
        "teams/a/ok.yaml",
        &common::app::request("ok", "team-a"),
    );
    let (code, out, _) = promised(&["validate", config.to_str().unwrap()]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("namespacez"), "{out}");
    assert!(
        out.contains("tenancy: promised-policy.yaml does not load"),
        "{out}"
    );
    assert!(
        out.contains("valid") && out.contains("0 Promises, 0 requests"),
        "{out}"
    );
}

/// A sandboxed pipeline cannot read a state store credential by any route: a random token is
/// in promised's own environment (as a systemd `Environment=` would put it), in the secrets
/// directory (`secretsDir`), in `$CREDENTIALS_DIRECTORY`, in the webhook secret file and in the
/// state directory; the pipeline looks in its environment and greps its whole file system
/// (but its private /proc, /sys, /dev) and writes what it finds into its output, which stays
/// empty. The token reaches the script in two halves, so its own definition holds no copy.
#[test]
fn a_pipeline_cannot_read_a_state_store_token_by_any_route() {
    if !common::bwrap_works() {
        assert!(
            std::env::var_os("PROMISED_REQUIRE_SANDBOX").is_none(),
            "bubblewrap is required"
        );
        eprintln!("skipped: no bubblewrap");
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let config = root.join("config");
    common::app::write_config(&config);
    use sha2::Digest;
    let token = hex::encode(sha2::Sha256::digest(
        format!("{:?}{}", std::time::SystemTime::now(), std::process::id()).as_bytes(),
    ))[..32]
        .to_string();
    let (a, b) = token.split_at(16);
    let promise = common::app::PROMISE.replace(
        "                command: [\"/promise/render\"]\n",
        &format!(
            "                command: [\"/promise/render\"]\n                env:\n                  - {{name: A, value: \"{a}\"}}\n                  - {{name: B, value: \"{b}\"}}\n"
        ),
    );
    write(&config, "promises/app/promise.yaml", &promise);
    write(
        &config,
        "promises/app/render",
        r#"#!/bin/sh
set -u
printf %s%s "$A" "$B" > /tmp/pattern
{
  env | grep -F -f /tmp/pattern | sed 's/^/env: /'
  for d in /*; do
    case "$d" in /proc|/sys|/dev) continue ;; esac
    [ -L "$d" ] && continue
    grep -rlF -f /tmp/pattern "$d" 2>/dev/null
  done | grep -v '^/tmp/pattern$'
} > /tmp/found
printf 'kind: ConfigMap\nsearched: true\nfound: "%s"\n' "$(tr '\n' ' ' < /tmp/found)" > /kratix/output/app.yaml
"#,
    );
    write(
        &config,
        "requests/a.yaml",
        &common::app::request("a", "default"),
    );
    let secrets = root.join("secrets");
    write(&secrets, "git-credentials/password", &token);
    let creds = root.join("credentials");
    write(&creds, "webhook-secret", &token);
    let state = root.join("state");
    write(&state, "leftover-token", &token);
    let daemon_config = root.join("promised.yaml");
    std::fs::write(
        &daemon_config,
        format!(
            "secretsDir: {}\nwebhookSecretFile: {}\n",
            secrets.display(),
            creds.join("webhook-secret").display()
        ),
    )
    .unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_promised"))
        .args(["reconcile", "--config"])
        .arg(&config)
        .arg("--state-dir")
        .arg(&state)
        .arg("--daemon-config")
        .arg(&daemon_config)
        .env("GIT_PASSWORD", &token)
        .env("AWS_SECRET_ACCESS_KEY", &token)
        .env("CREDENTIALS_DIRECTORY", &creds)
        .output()
        .unwrap();
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert_eq!(out.status.code(), Some(0), "{stdout}\n{stderr}");
    let file = common::git(
        &state.join("state.git"),
        &[
            "show",
            "main:dev/resources/default/app/a/configure/5058f/app.yaml",
        ],
    );
    assert!(file.contains("searched: true"), "{file}");
    assert!(file.contains("found: \"\""), "the token is visible: {file}");
}
