//! Stage 4: what the plan says goes out, in order: credentials removed (disconnect), a stale
//! agent Secret removed, the agent Secret written, and the link issued. Runs after the operator's
//! copy is written and before status, so status never describes a Secret that is not there yet.

use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::ResourceExt;
use kube::api::Api;

use super::super::decide::{LinkPlan, Plan};
use super::super::{Context, Error};
use super::observe::Observed;
use crate::api::ConnectedAccount;
use crate::signer::{self, LinkClaims};
use crate::store::agent_secret::{self, Ownership};
use crate::store::operator_copy::Versioned;

/// The authorization link status shows after this reconcile.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Link {
    pub url: Option<String>,
    pub expires_at: Option<Time>,
}

/// Carries out the plan's writes and returns the link for status.
pub async fn publish(
    account: &ConnectedAccount,
    observed: &Observed,
    record: &Versioned,
    plan: &Plan,
    ctx: &Context,
) -> Result<Link, Error> {
    let api: Api<Secret> = Api::namespaced(ctx.client.clone(), &observed.namespace);
    if plan.remove_credentials {
        let conn = observed.usable().map(|(c, _)| c.as_ref());
        super::cleanup::discard(account, conn, ctx, observed.ownership).await?;
    }
    if plan.unpublish {
        // The operator's copy is gone (deleted by hand): the agent Secret cannot be renewed or
        // revoked any more, so it goes too, and status and Secret agree. Or the account moved to
        // `delivery: Broker`, which keeps credentials out of agent namespaces.
        agent_secret::delete(&api, &observed.secret_name)
            .await
            .map_err(Error::DeleteSecret)?;
        if plan.delivery.writes_secret() {
            tracing::warn!("the operator's copy is missing; removed the agent Secret");
        } else {
            tracing::info!("delivery is Broker; removed the agent Secret");
        }
    }
    // `decide` plans no publication for a foreign Secret; the ownership that observe (and
    // `confirm_secret` after renewal) found is final.
    // A name looked up and found free is created, not applied: a Secret someone created since
    // then fails the write (and is found, and refused, by the next reconcile).
    if let (true, Some(tokens)) = (plan.publish, &record.record.tokens) {
        let data = agent_secret::render(tokens, observed.provider());
        let name = &observed.secret_name;
        let written = match observed.ownership {
            Ownership::Foreign => Ok(()),
            Ownership::Missing => agent_secret::create(&api, account, name, &data).await,
            Ownership::Ours => {
                agent_secret::apply(&api, account, name, &data, observed.secret.as_deref()).await
            }
        };
        written.map_err(Error::PublishSecret)?;
    }
    Ok(link(account, observed, plan, ctx))
}

/// The link the plan asks for: the one in status, a newly signed one, or none.
fn link(account: &ConnectedAccount, observed: &Observed, plan: &Plan, ctx: &Context) -> Link {
    match &plan.link {
        LinkPlan::Keep => {
            let old = account.status.as_ref();
            Link {
                url: old.and_then(|s| s.authorization_link.clone()),
                expires_at: old.and_then(|s| s.authorization_link_expires_at.clone()),
            }
        }
        LinkPlan::Issue { expires_at } => {
            let claims = LinkClaims {
                ns: observed.namespace.clone(),
                name: account.name_any(),
                uid: observed.uid.clone(),
                nonce: signer::random_id(),
                exp: expires_at.as_second(),
            };
            let url = ctx
                .config
                .endpoint(&format!("connect/{}", ctx.signer.issue_link(&claims)));
            Link {
                url: Some(url),
                expires_at: Some(Time(*expires_at)),
            }
        }
        LinkPlan::Clear => Link::default(),
    }
}
