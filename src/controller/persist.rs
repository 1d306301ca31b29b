//! Writing an account's operator copy: conditional on the version read, so a concurrent writer
//! (the gateway completing a flow, a late refresh answer) is never overwritten unseen.

use kube::ResourceExt;
use kube::api::Api;

use super::{Context, Error};
use crate::api::ConnectedAccount;
use crate::store::Record;
use crate::store::finalizer;
use crate::store::operator_copy::Versioned;

/// Writes the record against the version read; a conflict means someone (the gateway) wrote in
/// between, so the reconcile starts over with fresh data. The first write puts the finalizer on
/// the account before the copy exists, so that deleting the account always cleans it up.
///
/// Returns the record as written, with the version a next write must name.
pub(super) async fn persist(
    account: &ConnectedAccount,
    read: &Versioned,
    record: Record,
    ctx: &Context,
) -> Result<Versioned, Error> {
    if read.resource_version.is_none() {
        let api: Api<ConnectedAccount> =
            Api::namespaced(ctx.client.clone(), &account.namespace().unwrap_or_default());
        finalizer::ensure(&api, account).await.map_err(Error::Finalizer)?;
    }
    let rv = ctx
        .credentials
        .put(account, &record, read.resource_version.as_deref())
        .await
        .map_err(Error::WriteRecord)?;
    Ok(Versioned {
        record,
        resource_version: Some(rv),
    })
}
