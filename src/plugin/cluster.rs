//! The plugin's requests to the API server. Kept thin: decisions and text are in [`super::format`].

use std::time::Duration;

use k8s_openapi::api::{core::v1 as core, events::v1 as events};
use kube::api::{Api, ListParams, Patch, PatchParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Client, Config, ResourceExt};

use super::cli::GlobalArgs;
use super::error::Error;
use super::format::{self, ConnectionInfo, EventLine};
use crate::api::{ConnectedAccount, Connection, ConnectionKind};

/// Field manager of the plugin's writes (the reauthorize annotation, `connect`'s accounts).
const FIELD_MANAGER: &str = "kubectl-agentauth";
const API_VERSION: &str = "agentauth.dev/v1alpha1";

/// A client, the namespace the command works in, and the server URL for messages.
pub struct Target {
    client: Client,
    pub namespace: String,
    server: String,
}

/// Loads the configuration the way kubectl does: `--kubeconfig`, else `KUBECONFIG`, else
/// `~/.kube/config`, else in-cluster; `--context` picks a context; `-n` wins over the context's
/// namespace, which wins over `default`.
pub async fn connect(global: &GlobalArgs) -> Result<Target, Error> {
    let options = KubeConfigOptions {
        context: global.context.clone(),
        ..KubeConfigOptions::default()
    };
    let describe = |e: &(dyn std::error::Error + 'static)| Error::Config(crate::http::describe_chain(e));
    let mut config = match (&global.kubeconfig, &global.context) {
        (Some(path), _) => {
            let kubeconfig = Kubeconfig::read_from(path).map_err(|e| describe(&e))?;
            Config::from_custom_kubeconfig(kubeconfig, &options)
                .await
                .map_err(|e| describe(&e))?
        }
        (None, Some(_)) => Config::from_kubeconfig(&options)
            .await
            .map_err(|e| describe(&e))?,
        (None, None) => Config::infer().await.map_err(|e| describe(&e))?,
    };
    config.connect_timeout = Some(Duration::from_secs(10));
    config.read_timeout = Some(Duration::from_secs(30));
    let namespace = global
        .namespace
        .clone()
        .unwrap_or_else(|| config.default_namespace.clone());
    let server = config.cluster_url.to_string();
    let client = Client::try_from(config).map_err(|e| describe(&e))?;
    Ok(Target {
        client,
        namespace,
        server,
    })
}

impl Target {
    fn accounts(&self) -> Api<ConnectedAccount> {
        Api::namespaced(self.client.clone(), &self.namespace)
    }

    fn error(&self, e: kube::Error) -> Error {
        Error::from_kube(e, &self.server)
    }

    /// The account, or [`Error::AccountNotFound`] / [`Error::CrdNotInstalled`].
    pub async fn account(&self, name: &str) -> Result<ConnectedAccount, Error> {
        match self.accounts().get(name).await {
            Ok(a) => Ok(a),
            Err(kube::Error::Api(s)) if s.code == 404 => Err(self.not_found(name).await),
            Err(e) => Err(self.error(e)),
        }
    }

    /// A 404 means either "no such account" or "no such API": discovery tells which.
    async fn not_found(&self, name: &str) -> Error {
        match self.client.list_api_group_resources(API_VERSION).await {
            Ok(list) if list.resources.iter().any(|r| r.name == "connectedaccounts") => {
                Error::AccountNotFound {
                    name: name.to_owned(),
                    namespace: self.namespace.clone(),
                }
            }
            Ok(_) => Error::CrdNotInstalled,
            Err(kube::Error::Api(s)) if s.code == 404 => Error::CrdNotInstalled,
            Err(e) => self.error(e),
        }
    }

    /// The account's Connection and whether it is Ready.
    pub async fn connection(&self, account: &ConnectedAccount) -> ConnectionInfo {
        let name = &account.spec.connection_ref.name;
        let found = match account.spec.connection_ref.kind {
            crate::api::ConnectionKind::Connection => {
                Api::<Connection>::namespaced(self.client.clone(), &self.namespace)
                    .get_opt(name)
                    .await
            }
            crate::api::ConnectionKind::ClusterConnection => {
                Api::<crate::api::ClusterConnection>::all(self.client.clone())
                    .get_opt(name)
                    .await
                    .map(|c| c.map(|c| c.as_connection(&self.namespace)))
            }
        };
        match found {
            Ok(Some(c)) => ConnectionInfo::of(&c),
            Ok(None) => ConnectionInfo::Missing,
            Err(e) => ConnectionInfo::Unknown(self.error(e).to_string()),
        }
    }

    /// Whether the agent Secret exists. Only its metadata is fetched: its data never reaches the plugin.
    pub async fn secret_exists(&self, account: &ConnectedAccount) -> Result<bool, String> {
        let api: Api<core::Secret> = Api::namespaced(self.client.clone(), &self.namespace);
        api.get_metadata_opt(&format::secret_name(account))
            .await
            .map(|m| m.is_some())
            .map_err(|e| self.error(e).to_string())
    }

    /// The account's Events, from events.k8s.io/v1 (what the operator writes), or core/v1 where that
    /// API is not served.
    pub async fn events(&self, account: &ConnectedAccount) -> Result<Vec<EventLine>, String> {
        let name = account.name_any();
        let v1: Api<events::Event> = Api::namespaced(self.client.clone(), &self.namespace);
        let lp = ListParams::default().fields(&format!("regarding.name={name}"));
        match v1.list(&lp).await {
            Ok(list) => return Ok(format::events_from_v1(account, &list.items)),
            Err(kube::Error::Api(s)) if s.code == 404 => {}
            Err(e) => return Err(self.error(e).to_string()),
        }
        let core: Api<core::Event> = Api::namespaced(self.client.clone(), &self.namespace);
        let lp = ListParams::default().fields(&format!("involvedObject.name={name}"));
        core.list(&lp)
            .await
            .map(|list| format::events_from_core(account, &list.items))
            .map_err(|e| self.error(e).to_string())
    }

    /// Sets the reauthorize annotation to `value` (merge patch).
    pub async fn request_reauthorization(&self, name: &str, value: &str) -> Result<(), Error> {
        let params = PatchParams {
            field_manager: Some(FIELD_MANAGER.to_owned()),
            ..PatchParams::default()
        };
        match self
            .accounts()
            .patch(name, &params, &Patch::Merge(format::reauthorize_patch(value)))
            .await
        {
            Ok(_) => Ok(()),
            Err(kube::Error::Api(s)) if s.code == 404 => Err(self.not_found(name).await),
            Err(e) => Err(self.error(e)),
        }
    }

    /// Polls until the operator has issued the link for reauthorize request `value`.
    pub async fn wait_for_link(&self, name: &str, value: &str, timeout: Duration) -> Result<String, Error> {
        let deadline = tokio::time::Instant::now() + timeout;
        let mut interval = Duration::from_millis(100);
        loop {
            let account = self.account(name).await?;
            if let Some(link) = format::link_for_request(&account, value) {
                return Ok(link);
            }
            let now = tokio::time::Instant::now();
            if now >= deadline {
                return Err(Error::Timeout {
                    name: name.to_owned(),
                    waited: super::cli::show(timeout),
                    detail: format::wait_detail(&account),
                });
            }
            tokio::time::sleep(interval.min(deadline - now)).await; // poll interval
            interval = (interval * 2).min(Duration::from_secs(1));
        }
    }
}

impl Target {
    /// The account of `identifier` on `connection`, whatever its name, if there is one (the oldest
    /// when several are).
    pub async fn find_account(
        &self,
        connection: &str,
        kind: ConnectionKind,
        identifier: &str,
    ) -> Result<Option<ConnectedAccount>, Error> {
        let list = match self.accounts().list(&ListParams::default()).await {
            Ok(l) => l,
            Err(kube::Error::Api(s)) if s.code == 404 => return Err(Error::CrdNotInstalled),
            Err(e) => return Err(self.error(e)),
        };
        let mut found: Vec<ConnectedAccount> = list
            .items
            .into_iter()
            .filter(|a| format::is_for(a, connection, kind, identifier))
            .collect();
        found.sort_by_key(|a| a.creation_timestamp().map(|t| t.0));
        Ok(found.into_iter().next())
    }

    /// A name for a new account of `identifier` on `connection` that no other account has.
    pub async fn free_name(&self, connection: &str, identifier: &str) -> Result<String, Error> {
        let first = format::account_name(connection, identifier);
        let second = format::fallback_name(connection, identifier);
        for name in [&first, &second] {
            match self.accounts().get_metadata_opt(name).await {
                Ok(None) => return Ok(name.clone()),
                Ok(Some(_)) => {}
                Err(e) => return Err(self.error(e)),
            }
        }
        Err(Error::NameTaken(if first == second {
            first
        } else {
            format!("{first}\" and \"{second}")
        }))
    }

    /// Creates the account `manifest` describes, by server-side apply with the plugin's field
    /// manager (applying the same object twice, from two terminals, is harmless).
    pub async fn apply_account(
        &self,
        name: &str,
        manifest: &serde_json::Value,
    ) -> Result<ConnectedAccount, Error> {
        let params = PatchParams::apply(FIELD_MANAGER);
        self.accounts()
            .patch(name, &params, &Patch::Apply(manifest))
            .await
            .map_err(|e| match e {
                kube::Error::Api(s) if s.code == 404 => Error::CrdNotInstalled,
                e => self.error(e),
            })
    }

    /// Polls account `name` until `done` says so, at most `timeout`.
    pub async fn wait_account(
        &self,
        name: &str,
        what: &'static str,
        timeout: Duration,
        done: impl Fn(&ConnectedAccount) -> bool,
    ) -> Result<ConnectedAccount, Error> {
        let deadline = tokio::time::Instant::now() + timeout;
        let mut interval = Duration::from_millis(100);
        loop {
            let account = self.account(name).await?;
            if done(&account) {
                return Ok(account);
            }
            let now = tokio::time::Instant::now();
            if now >= deadline {
                return Err(Error::WaitTimeout {
                    name: name.to_owned(),
                    what,
                    waited: super::cli::show(timeout),
                    state: format::state_name(account.status.and_then(|s| s.state))
                        .unwrap_or_else(|| "<none>".into()),
                });
            }
            tokio::time::sleep(interval.min(deadline - now)).await; // poll interval
            interval = (interval * 2).min(Duration::from_secs(1));
        }
    }
}
