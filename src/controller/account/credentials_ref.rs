//! `spec.credentialsRef`: a credential the platform team supplies in a Secret of the account's
//! namespace, copied into the operator's copy whenever that Secret changes.
//!
//! A missing or invalid Secret is reported like a failed renewal (backoff, `TokenRefresh`
//! condition); the last good copy stays published.

use jiff::Timestamp;
use kube::ResourceExt;
use kube::runtime::events::EventType;

use super::super::persist::persist;
use super::super::{Context, Error};
use crate::api::{ConnectedAccount, Connection, Reason};
use crate::store::operator_copy::Versioned;

/// Copies the referenced Secret into the record when its resourceVersion moved; returns the
/// record to go on with.
pub async fn sync(
    account: &ConnectedAccount,
    conn: &Connection,
    versioned: Versioned,
    ctx: &Context,
    now: Timestamp,
) -> Result<Versioned, Error> {
    let uid = account.uid().unwrap_or_default();
    let Some(r) = &account.spec.credentials_ref else {
        return Ok(versioned);
    };
    let ns = account.namespace().unwrap_or_default();
    let fail = |message: String, versioned: Versioned| {
        ctx.note_failure(&uid, message, now, |_| std::time::Duration::from_secs(30));
        Ok(versioned)
    };
    let secret = match crate::store::secret_ref::read(&ctx.client, &ns, &r.name).await {
        Ok(s) => s,
        Err(e) => return fail(format!("spec.credentialsRef: {e}"), versioned),
    };
    if secret.metadata.resource_version == versioned.record.source_version
        && versioned.record.tokens.is_some()
    {
        return Ok(versioned);
    }
    let form = match crate::auth::form::Form::of(conn) {
        Ok(f) => f,
        Err(e) => return fail(e.0, versioned),
    };
    let values = secret
        .data
        .unwrap_or_default()
        .into_iter()
        .filter_map(|(k, v)| Some((k, String::from_utf8(v.0).ok()?)))
        .collect();
    let clean = match form.validate(&values) {
        Ok(c) => c,
        Err(errors) => {
            let fields: Vec<_> = errors.keys().map(String::as_str).collect();
            let message = format!(
                "Secret {} named in spec.credentialsRef has missing or invalid keys: {}",
                r.name,
                fields.join(", ")
            );
            return fail(message, versioned);
        }
    };
    let fresh = ctx.credentials.get(&uid).await.map_err(Error::ReadRecord)?;
    let mut record = fresh.record.clone();
    record.tokens = Some(form.credential(clean, now));
    record.source_version = secret.metadata.resource_version.clone();
    record.rejected = false;
    let written = persist(account, &fresh, record, ctx).await?;
    ctx.clear_failure(&uid);
    ctx.event(
        account,
        EventType::Normal,
        Reason::CredentialsCopied,
        "Refresh",
        format!("credential taken from Secret {}", r.name),
    )
    .await;
    Ok(written)
}
