//! The gateway's rights in the chart's split mode, on the real API server: `kubectl auth can-i`
//! for what it must and must not do, and `kubectl auth can-i --list` compared rule by rule, so
//! that a rule added later cannot go unnoticed. Called from the RBAC tests of `tests/chart.rs` on
//! their installs (cluster-wide and watched namespaces).

use super::*;

/// The Secret the gateway may read: the signing key ring, in the release namespace.
const SIGNING_KEY: &str = "agent-auth-operator-signing-key";

/// One row of `kubectl auth can-i --list`: resource (empty for non-resource URLs), URLs, names,
/// verbs.
#[derive(Debug)]
struct Rule {
    resource: String,
    urls: Vec<String>,
    names: Vec<String>,
    verbs: Vec<String>,
}

/// Every rule `sa` has in namespace `ns` (cluster-wide rules included), by
/// `kubectl auth can-i --list` (a SelfSubjectRulesReview as that ServiceAccount).
fn rules_of(t: &Tools, sa_ns: &str, sa: &str, ns: &str) -> (Vec<Rule>, String) {
    let user = format!("--as=system:serviceaccount:{sa_ns}:{sa}");
    let group = format!("--as-group=system:serviceaccounts:{sa_ns}");
    let out = t
        .kubectl(
            &[
                "auth",
                "can-i",
                "--list",
                "-n",
                ns,
                &user,
                "--as-group=system:serviceaccounts",
                &group,
                "--as-group=system:authenticated",
            ],
            None,
        )
        .expect_ok();
    let rules = out
        .lines()
        .skip(1) // header
        .filter(|l| !l.trim().is_empty())
        .map(|line| {
            let line = line.trim();
            let (resource, rest) = if line.starts_with('[') {
                ("", line)
            } else {
                line.split_once(char::is_whitespace).unwrap()
            };
            let groups: Vec<Vec<String>> = rest
                .split('[')
                .skip(1)
                .map(|g| {
                    g.split(']')
                        .next()
                        .unwrap()
                        .split_whitespace()
                        .map(str::to_owned)
                        .collect()
                })
                .collect();
            assert_eq!(groups.len(), 3, "unexpected can-i --list row: {line}");
            Rule {
                resource: resource.to_owned(),
                urls: groups[0].clone(),
                names: groups[1].clone(),
                verbs: groups[2].clone(),
            }
        })
        .collect();
    (rules, out)
}

/// What every authenticated user may do (system:basic-user, system:discovery and friends).
fn everyone_may(r: &Rule) -> bool {
    r.resource.starts_with("selfsubject") || (r.resource.is_empty() && r.verbs == ["get"])
}

/// The gateway's whole rule set in `ns`: read the three custom resources (`namespaced` says
/// whether connections and connectedaccounts are readable there), create reviews, read the
/// signing key when `ns` is the release namespace; nothing else.
fn assert_gateway_rule_set(t: &Tools, own: &str, ns: &str, namespaced: bool) {
    let (rules, out) = rules_of(t, own, GATEWAY, ns);
    let mut got: Vec<String> = rules
        .iter()
        .filter(|r| !everyone_may(r))
        .map(|r| format!("{} {:?} {:?} {:?}", r.resource, r.urls, r.names, r.verbs))
        .collect();
    got.sort();
    let read = r#"["get", "list", "watch"]"#;
    let mut want = vec![
        format!("clusterconnections.agentauth.dev [] [] {read}"),
        r#"namespaces [] [] ["get"]"#.to_owned(),
        r#"subjectaccessreviews.authorization.k8s.io [] [] ["create"]"#.to_owned(),
        r#"tokenreviews.authentication.k8s.io [] [] ["create"]"#.to_owned(),
    ];
    if namespaced {
        want.push(format!("connectedaccounts.agentauth.dev [] [] {read}"));
        want.push(format!("connections.agentauth.dev [] [] {read}"));
    }
    if ns == own {
        want.push(format!(r#"secrets [] ["{SIGNING_KEY}"] {read}"#));
    }
    want.sort();
    assert_eq!(got, want, "the gateway's rules in {ns}:\n{out}");
    println!("kubectl auth can-i --list -n {ns} --as=system:serviceaccount:{own}:{GATEWAY}\n{out}");
    // And what everyone may do writes nothing but reviews of oneself.
    for r in rules.iter().filter(|r| everyone_may(r)) {
        assert!(
            r.verbs
                .iter()
                .all(|v| v == "get" || (v == "create" && r.resource.starts_with("selfsubject"))),
            "{r:?}"
        );
    }
}

/// The gateway's ServiceAccount of a cluster-wide release in `own`: reads the custom resources
/// everywhere, reads no Secret but the signing key, writes nothing but reviews.
pub(super) fn assert_gateway_rights_cluster_wide(t: &Tools, own: &str, other: &str) {
    let ca = "connectedaccounts.agentauth.dev";
    let co = "connections.agentauth.dev";
    let cc = "clusterconnections.agentauth.dev";
    let (o, s) = (other, own);
    let key = format!("secrets/{SIGNING_KEY}");
    let checks = [
        check(true, &format!("get {ca} -n {o}")),
        check(true, &format!("list {ca} -A")),
        check(true, &format!("watch {ca} -A")),
        check(true, &format!("list {co} -A")),
        check(true, &format!("watch {co} -n {o}")),
        check(true, &format!("list {cc}")),
        check(true, "create tokenreviews.authentication.k8s.io"),
        check(true, "create subjectaccessreviews.authorization.k8s.io"),
        check(true, &format!("get {key} -n {s}")),
        check(true, &format!("list {key} -n {s}")),
        check(true, &format!("watch {key} -n {s}")),
        // No other Secret: not in tenant namespaces, not the operator's copies, not by listing.
        check(false, &format!("get secrets -n {o}")),
        check(false, &format!("list secrets -n {o}")),
        check(false, &format!("get secrets/google-oauth -n {o}")),
        check(false, &format!("get {key} -n {o}")),
        check(false, "list secrets -A"),
        check(false, &format!("list secrets -n {s}")),
        check(
            false,
            &format!("get secrets/agent-auth-operator-credentials -n {s}"),
        ),
        // No write of any kind.
        check(false, &format!("create secrets -n {s}")),
        check(false, &format!("update {key} -n {s}")),
        check(false, &format!("patch {key} -n {s}")),
        check(false, &format!("delete {key} -n {s}")),
        check(false, &format!("patch {ca} -n {o}")),
        check(false, &format!("update {ca} --subresource=status -n {o}")),
        check(false, &format!("patch {ca} --subresource=status -n {o}")),
        check(false, &format!("update {ca} --subresource=finalizers -n {o}")),
        check(false, &format!("create {ca} -n {o}")),
        check(false, &format!("delete {ca} -n {o}")),
        check(false, &format!("patch {co} --subresource=status -n {o}")),
        check(false, &format!("patch {cc} --subresource=status")),
        check(false, &format!("create events -n {o}")),
        check(false, &format!("create events.events.k8s.io -n {o}")),
        check(false, &format!("create leases.coordination.k8s.io -n {s}")),
        check(
            false,
            &format!("get leases.coordination.k8s.io/agent-auth-operator -n {s}"),
        ),
        check(
            false,
            &format!("create serviceaccounts --subresource=token -n {s}"),
        ),
        check(false, &format!("create pods -n {s}")),
        check(false, &format!("get pods -n {s}")),
        check(false, &format!("get configmaps -n {s}")),
        check(true, &format!("get namespaces/{o}")),
        check(false, "list namespaces"),
        check(false, "watch namespaces"),
        check(false, &format!("update namespaces/{o}")),
        check(false, "get /metrics"),
    ];
    assert_permissions(t, s, GATEWAY, &checks);
    assert_gateway_rule_set(t, s, s, true);
    assert_gateway_rule_set(t, s, o, true);
}

/// The gateway's ServiceAccount of a release in `own` that watches `watched`: reads accounts and
/// Connections only there; `unwatched` gets nothing.
pub(super) fn assert_gateway_rights_in_watched_namespaces(
    t: &Tools,
    own: &str,
    watched: &[&str],
    unwatched: &str,
) {
    let ca = "connectedaccounts.agentauth.dev";
    let co = "connections.agentauth.dev";
    let mut checks = vec![];
    for w in watched {
        checks.extend([
            check(true, &format!("list {ca} -n {w}")),
            check(true, &format!("watch {co} -n {w}")),
            check(false, &format!("get secrets -n {w}")),
            check(false, &format!("patch {ca} --subresource=status -n {w}")),
        ]);
    }
    checks.extend([
        check(false, &format!("list {ca} -n {unwatched}")),
        check(false, &format!("list {ca} -A")),
        check(false, &format!("list {co} -n {own}")),
        check(true, "list clusterconnections.agentauth.dev"),
        check(true, &format!("get secrets/{SIGNING_KEY} -n {own}")),
        check(false, &format!("list secrets -n {own}")),
    ]);
    assert_permissions(t, own, GATEWAY, &checks);
    assert_gateway_rule_set(t, own, watched[0], true);
    assert_gateway_rule_set(t, own, unwatched, false);
}
