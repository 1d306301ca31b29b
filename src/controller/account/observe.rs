//! Stage 1: what the account's world looks like, read once into an owned [`Observed`].
//!
//! Everything comes from the watch caches except one case: a Secret name the cache does not know
//! is looked up live when the next steps may write there (a credential to publish, a link to
//! issue), because only operator-labelled Secrets are cached and a foreign one must be found
//! before a user is told "connected". When renewal brings a credential the cached record did not
//! have (or marks the link used), [`Observed::confirm_secret`] looks the name up before anything
//! is published or a link issued.

use std::sync::Arc;

use jiff::Timestamp;
use k8s_openapi::api::core::v1::Secret;
use kube::ResourceExt;
use kube::api::Api;
use kube::runtime::reflector::ObjectRef;

use super::super::decide::{self, ConnectionIssue, ConnectionView, Facts, RefreshFailure};
use super::super::{Context, Error, attempt};
use crate::api::{ConnectedAccount, Connection};
use crate::signer::{self, LinkClaims};
use crate::store::Record;
use crate::store::agent_secret::{self, Ownership};
use crate::store::operator_copy::{CredentialStore, Versioned};

/// The account's inputs as of the start of the reconcile.
pub struct Observed {
    pub uid: String,
    pub namespace: String,
    /// Name of the agent Secret.
    pub secret_name: String,
    pub connection: Result<(Arc<Connection>, ConnectionView), ConnectionIssue>,
    /// The operator's copy as cached (it may lag behind a write; stages that spend a refresh
    /// token re-read it).
    pub record: Versioned,
    /// The account's current link, if its status has one this operator signed for this account.
    pub link: Option<LinkClaims>,
    /// The agent Secret as it is now, if it exists and is readable to us.
    pub secret: Option<Arc<Secret>>,
    pub ownership: Ownership,
    /// The Secret name was found in the cache or looked up live, so `ownership` is known.
    secret_known: bool,
    /// `secret` came from the (label-selected) cache: one found only live lacks the operator's
    /// labels and is never current, so the next apply puts them back.
    secret_cached: bool,
    pub now: Timestamp,
}

impl Observed {
    /// The Connection and its view, when the account can use it.
    pub fn usable(&self) -> Option<(&Arc<Connection>, &ConnectionView)> {
        self.connection.as_ref().ok().map(|(c, v)| (c, v))
    }

    /// The Connection's catalog name, published with the credential.
    pub fn provider(&self) -> Option<&str> {
        self.usable().and_then(|(c, _)| c.spec.provider.as_deref())
    }

    /// What `decide` (and the refresh-due check) looks at: this snapshot with `record` (renewed
    /// or re-read), the account's current backoff `failure`, at `now`.
    pub fn facts<'a>(
        &'a self,
        account: &'a ConnectedAccount,
        record: &'a Record,
        failure: Option<&'a RefreshFailure>,
        ctx: &Context,
        now: Timestamp,
    ) -> Facts<'a> {
        let secret_current = self.secret_cached
            && record.tokens.as_ref().is_some_and(|t| {
                agent_secret::holds(self.secret.as_deref(), &agent_secret::render(t, self.provider()))
            });
        Facts {
            account,
            connection: self.connection.as_ref().map(|(_, v)| v),
            record,
            link: self.link.as_ref(),
            secret: self.ownership,
            secret_current,
            refresh_failure: failure,
            attempt: attempt::attempt_state(record, ctx.in_flight(&self.uid).as_ref(), now),
            now,
        }
    }

    /// Looks the Secret name up live when `record` (the renewed one) may lead to a write there
    /// and the name was not looked up yet: a foreign Secret is never written.
    pub async fn confirm_secret(
        mut self,
        account: &ConnectedAccount,
        record: &Record,
        ctx: &Context,
    ) -> Result<Observed, Error> {
        if may_write(
            account,
            self.usable().is_some(),
            record,
            self.link.as_ref(),
            self.now,
        ) {
            self.look_up_secret(account, ctx).await?;
        }
        Ok(self)
    }

    /// The live GET of a Secret name the cache does not know (once per reconcile).
    async fn look_up_secret(&mut self, account: &ConnectedAccount, ctx: &Context) -> Result<(), Error> {
        if self.secret_known {
            return Ok(());
        }
        let api: Api<Secret> = Api::namespaced(ctx.client.clone(), &self.namespace);
        if let Some(live) = api.get_opt(&self.secret_name).await.map_err(Error::ReadSecret)? {
            self.ownership = agent_secret::ownership(Some(&live), account);
            self.secret = Some(Arc::new(live));
        }
        self.secret_known = true;
        Ok(())
    }
}

/// Reads the account's inputs; one live GET of the Secret name at most (see the module docs).
pub async fn observe(account: &ConnectedAccount, ctx: &Context) -> Result<Observed, Error> {
    let uid = account.uid().unwrap_or_default();
    let namespace = account.namespace().unwrap_or_default();
    let secret_name = super::secret_name(account);
    let record = cached_record(&uid, ctx)?;
    let link = current_link(account, ctx);
    let now = Timestamp::now();
    let secret = ctx
        .agent_secrets
        .get(&ObjectRef::new(&secret_name).within(&namespace));
    let ownership = agent_secret::ownership(secret.as_deref(), account);
    let connection = super::super::resolve::connection(account, ctx);
    let may_write = may_write(account, connection.is_ok(), &record.record, link.as_ref(), now);
    let mut observed = Observed {
        connection,
        uid,
        namespace,
        secret_name,
        record,
        link,
        secret,
        ownership,
        secret_known: ownership != Ownership::Missing,
        secret_cached: ownership != Ownership::Missing,
        now,
    };
    if may_write {
        observed.look_up_secret(account, ctx).await?;
    }
    Ok(observed)
}

/// Whether the next steps may write the Secret name or hand out a link for it: a credential may
/// be published whenever there is one; a new link is issued when there is none, it expired, it
/// was used, or someone asked for re-authorization (see `decide`), and only for a connected
/// account of a usable Connection (so an `ERROR` or `DISCONNECTED` account costs no GET).
fn may_write(
    account: &ConnectedAccount,
    usable: bool,
    record: &Record,
    link: Option<&LinkClaims>,
    now: Timestamp,
) -> bool {
    let may_link = usable
        && account.spec.disconnected != Some(true)
        && (decide::reauthorize_requested(account)
            || link.is_none_or(|l| {
                l.exp <= now.as_second() || record.completed_link.as_deref() == Some(l.nonce.as_str())
            }));
    record.tokens.is_some() || may_link
}

/// The account's record from the cache of operator copies.
fn cached_record(uid: &str, ctx: &Context) -> Result<Versioned, Error> {
    let key = ObjectRef::new(&CredentialStore::name_for(uid)).within(&ctx.config.namespace);
    match ctx.records.get(&key) {
        Some(s) => CredentialStore::parse(&s).map_err(Error::ReadRecord),
        None => Ok(Versioned::default()),
    }
}

/// The status link, if it is one this operator signed for this very account.
fn current_link(account: &ConnectedAccount, ctx: &Context) -> Option<LinkClaims> {
    let url = account.status.as_ref()?.authorization_link.as_deref()?;
    let claims = ctx.signer.read_link(signer::token_of(url)?)?;
    let same = Some(&claims.uid) == account.metadata.uid.as_ref()
        && claims.name == account.name_any()
        && Some(&claims.ns) == account.metadata.namespace.as_ref();
    same.then_some(claims)
}
