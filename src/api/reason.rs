//! Every reason the operator writes into a condition or an Event, as one vocabulary.
//!
//! A reason is what automation and `kubectl get -o jsonpath` match on, so it is a closed set:
//! adding one is a deliberate change that `docs/troubleshooting.md` must explain (a unit test
//! checks that it does).

/// A condition or Event reason. Serialized as its CamelCase name.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, strum::IntoStaticStr, strum::EnumIter, strum::EnumString,
)]
pub enum Reason {
    // Account Ready: the account works.
    /// Credentials are valid and published.
    Active,
    // Account Ready: waiting for a person.
    /// A link is in status; nobody used it yet.
    AwaitingAuthorization,
    /// A hosted-form credential waits for the platform to confirm the user.
    AwaitingVerification,
    /// `spec.disconnected`: credentials revoked and removed.
    Disconnected,
    // Account Ready: an authorization through the link failed.
    /// The user declined at the provider.
    AccessDenied,
    /// The provider answered the authorization request with an error.
    AuthorizationFailed,
    /// The provider refused the authorization code.
    ExchangeFailed,
    /// The platform did not confirm the user (or not in time).
    VerificationFailed,
    // Account Ready: the account cannot use its Connection.
    ConnectionNotFound,
    ConnectionNotReady,
    /// `spec.credentialsRef` on a Connection whose method cannot take it.
    CredentialsRefUnsupported,
    /// A ClusterConnection whose `namespaceSelector` excludes the account's namespace.
    NamespaceNotAllowed,
    /// The Connection's endpoints or client changed since the grant: a new link, no replay.
    ConnectionChanged,
    /// The Connection asks for scopes the grant lacks.
    ScopesChanged,
    /// `spec.secretName` names a Secret the operator does not own.
    SecretConflict,
    // Account Ready and TokenRefresh: renewal.
    /// A renewal succeeded (TokenRefresh), or an Event for one.
    Refreshed,
    /// The operator obtained a machine credential (Event).
    Obtained,
    /// Renewals fail transiently and are retried.
    RefreshFailing,
    /// The provider rejected the refresh token: the user must authorize again.
    RefreshRejected,
    /// A refresh got no answer; its token is not sent again (strict rotation).
    RefreshOutcomeUnknown,
    /// The access token expired and could not be renewed yet.
    TokenExpired,
    /// A machine credential could not be obtained or renewed.
    CredentialUnavailable,
    // Account Events.
    /// A new link was written to status.
    LinkIssued,
    /// The credential was copied from `spec.credentialsRef`.
    CredentialsCopied,
    /// The grant was revoked at its pinned endpoint.
    Revoked,
    /// Revocation at the provider failed (the copies are removed anyway).
    RevocationFailed,
    /// A state change without a more specific reason.
    StateChanged,
    // Connection Ready.
    /// The Connection is usable.
    Valid,
    /// The spec is inconsistent in a way the schema cannot express.
    InvalidSpec,
    /// The signing key does not match the algorithm or cannot sign.
    InvalidSigningKey,
    /// The client secret (or signing key) Secret is missing, not opted in, or lacks the key.
    ClientSecretUnavailable,
    /// The namespaced-Connection policy refuses this Connection.
    PolicyDenied,
    /// A URL of the Connection is refused by the egress policy.
    EgressDenied,
    /// Another namespace already uses this authorization host and client id.
    ClientIdInUse,
}

impl Reason {
    /// The CamelCase name written to the API.
    pub fn as_str(self) -> &'static str {
        self.into()
    }
}

impl std::fmt::Display for Reason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl serde::Serialize for Reason {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> serde::Deserialize<'de> for Reason {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        s.parse()
            .map_err(|_| serde::de::Error::custom(format!("unknown reason {s:?}")))
    }
}

#[cfg(test)]
mod tests {
    use super::Reason;
    use strum::IntoEnumIterator;

    #[test]
    fn troubleshooting_names_every_reason() {
        let doc = include_str!("../../docs/troubleshooting.md");
        let missing: Vec<_> = Reason::iter()
            .map(Reason::as_str)
            .filter(|r| !doc.contains(&format!("`{r}`")))
            .collect();
        assert!(
            missing.is_empty(),
            "docs/troubleshooting.md does not name {missing:?}"
        );
    }

    #[test]
    fn reasons_round_trip_through_their_names() {
        for r in Reason::iter() {
            assert_eq!(r.as_str().parse::<Reason>().ok(), Some(r));
            let json = serde_json::to_string(&r).unwrap();
            assert_eq!(serde_json::from_str::<Reason>(&json).unwrap(), r);
        }
    }
}
