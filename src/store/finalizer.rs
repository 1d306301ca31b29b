//! The account finalizer, added only once something needs cleaning up.
//!
//! Guarantees: whoever first writes a credential copy for an account (the gateway completing a
//! flow, or the controller obtaining a machine credential) adds the finalizer before that write, so
//! a stored credential always has an account that cannot vanish before it is revoked and removed.
//! An account that never held a credential carries no finalizer and costs no write for one; the
//! API server refuses new finalizers on an account being deleted, so nothing is stored for it then.

use kube::api::{Api, ObjectMeta, Patch, PatchParams};
use kube::{Resource, ResourceExt};
use serde_json::json;

use crate::api::ConnectedAccount;

/// Finalizer that guarantees revocation and removal of every stored copy before an account goes.
pub const FINALIZER: &str = "agentauth.dev/cleanup";

/// Field manager of the finalizer entry (a set-list item, so other finalizers are left alone).
const MANAGER: &str = "agent-auth-operator-finalizer";

pub fn present(account: &ConnectedAccount) -> bool {
    present_in(account.meta())
}

pub fn present_in(meta: &ObjectMeta) -> bool {
    meta.finalizers.iter().flatten().any(|f| f == FINALIZER)
}

/// Adds the finalizer (idempotent: server-side apply of one set item).
pub async fn ensure(api: &Api<ConnectedAccount>, account: &ConnectedAccount) -> kube::Result<()> {
    if present(account) {
        return Ok(());
    }
    let patch = json!({
        "apiVersion": "agentauth.dev/v1alpha1", "kind": "ConnectedAccount",
        "metadata": {"name": account.name_any(), "uid": account.meta().uid, "finalizers": [FINALIZER]}
    });
    api.patch(
        &account.name_any(),
        &PatchParams::apply(MANAGER).force(),
        &Patch::Apply(&patch),
    )
    .await
    .map(|_| ())
}

/// Removes the finalizer, whoever added it (a JSON patch that tests the entry it removes). Works on
/// any view of the account, including one that no longer matches the schema.
pub async fn remove<K>(api: &Api<K>, meta: &ObjectMeta) -> kube::Result<()>
where
    K: Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    let finalizers = meta.finalizers.as_deref().unwrap_or_default();
    let Some(i) = finalizers.iter().position(|f| f == FINALIZER) else {
        return Ok(());
    };
    let patch: json_patch::Patch = serde_json::from_value(json!([
        {"op": "test", "path": format!("/metadata/finalizers/{i}"), "value": FINALIZER},
        {"op": "remove", "path": format!("/metadata/finalizers/{i}")},
    ]))
    .map_err(kube::Error::SerdeError)?;
    let name = meta.name.as_deref().unwrap_or_default();
    match api
        .patch(name, &PatchParams::default(), &Patch::Json::<()>(patch))
        .await
    {
        Ok(_) => Ok(()),
        // Already gone: nothing left to hold.
        Err(kube::Error::Api(e)) if e.code == 404 => Ok(()),
        Err(e) => Err(e),
    }
}
