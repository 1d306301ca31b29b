//! `delivery`: how an account's credential reaches agent pods.

use serde::{Deserialize, Serialize};

/// How agent pods get the credential: `Secret` (default) writes a Secret in the account's namespace
/// for pods to mount; `Broker` writes none, and pods exchange their projected ServiceAccount token
/// for the current access token at the operator's token broker (RBAC verb `use` on
/// `connectedaccounts`); `SecretAndBroker` does both. Refresh tokens never leave the operator.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default, Hash, schemars::JsonSchema)]
pub enum Delivery {
    #[default]
    Secret,
    Broker,
    SecretAndBroker,
}

impl Delivery {
    /// The account's own choice, else its Connection's, else `Secret`. Except that a platform's
    /// ClusterConnection (`platform`) with `Broker` keeps all of its accounts at `Broker`: a tenant
    /// cannot pull credentials the platform keeps out of namespaces into its own.
    pub fn effective(account: Option<Delivery>, connection: Option<Delivery>, platform: bool) -> Delivery {
        match connection {
            Some(Delivery::Broker) if platform => Delivery::Broker,
            _ => account.or(connection).unwrap_or_default(),
        }
    }

    /// An agent Secret is written.
    pub fn writes_secret(self) -> bool {
        matches!(self, Delivery::Secret | Delivery::SecretAndBroker)
    }

    /// The token broker hands the access token out.
    pub fn brokered(self) -> bool {
        matches!(self, Delivery::Broker | Delivery::SecretAndBroker)
    }
}

#[cfg(test)]
mod tests {
    use super::Delivery::*;
    use super::*;

    #[test]
    fn account_overrides_connection() {
        assert_eq!(Delivery::effective(None, None, false), Secret);
        assert_eq!(Delivery::effective(None, Some(Broker), false), Broker);
        assert_eq!(Delivery::effective(Some(Secret), Some(Broker), false), Secret);
        assert_eq!(Delivery::effective(Some(Broker), Some(Secret), true), Broker);
        for own in [Secret, SecretAndBroker] {
            assert_eq!(
                Delivery::effective(Some(own), Some(Broker), true),
                Broker,
                "a platform's Broker is a floor"
            );
        }
        assert!(SecretAndBroker.writes_secret() && SecretAndBroker.brokered());
        assert!(!Broker.writes_secret() && !Secret.brokered());
    }
}
