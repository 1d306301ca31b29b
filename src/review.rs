//! Asking the API server who a bearer token belongs to (TokenReview) and whether that identity may
//! do something (SubjectAccessReview). Used by the gateway's `POST /verify` and by the token
//! broker, so both trust exactly what the cluster's authenticators and RBAC say.

use k8s_openapi::api::authentication::v1::{TokenReview, TokenReviewSpec, UserInfo};
use k8s_openapi::api::authorization::v1::{ResourceAttributes, SubjectAccessReview, SubjectAccessReviewSpec};
use kube::api::{Api, PostParams};

/// The identity behind `token`, or `None` when the API server does not accept it. With an
/// `audience`, the token must have been issued for it (a projected ServiceAccount token's
/// `audience`): a token meant for the API server, or for another service, is refused.
pub async fn authenticate(
    client: &kube::Client,
    token: &str,
    audience: Option<&str>,
) -> Result<Option<UserInfo>, kube::Error> {
    let review = TokenReview {
        spec: TokenReviewSpec {
            token: token.to_owned(),
            audiences: audience.map(|a| vec![a.to_owned()]),
        },
        ..Default::default()
    };
    let api: Api<TokenReview> = Api::all(client.clone());
    let status = api.create(&PostParams::default(), &review).await?.status;
    Ok(status
        .filter(|s| s.authenticated == Some(true))
        .filter(|s| {
            audience.is_none_or(|a| {
                s.audiences
                    .as_ref()
                    .is_some_and(|list| list.iter().any(|x| x == a))
            })
        })
        .and_then(|s| s.user))
}

/// Whether `user` may `verb` the ConnectedAccount `name` in `ns`, by the cluster's RBAC.
pub async fn may(
    client: &kube::Client,
    user: &UserInfo,
    verb: &str,
    ns: &str,
    name: &str,
) -> Result<bool, kube::Error> {
    let review = SubjectAccessReview {
        spec: SubjectAccessReviewSpec {
            user: user.username.clone(),
            uid: user.uid.clone(),
            groups: user.groups.clone(),
            extra: user.extra.clone(),
            resource_attributes: Some(ResourceAttributes {
                group: Some(crate::api::GROUP.to_owned()),
                resource: Some("connectedaccounts".into()),
                verb: Some(verb.to_owned()),
                namespace: Some(ns.to_owned()),
                name: Some(name.to_owned()),
                ..Default::default()
            }),
            ..Default::default()
        },
        ..Default::default()
    };
    let api: Api<SubjectAccessReview> = Api::all(client.clone());
    let status = api.create(&PostParams::default(), &review).await?.status;
    Ok(status.is_some_and(|s| s.allowed))
}
