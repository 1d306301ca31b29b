//! What can go wrong in `kubectl agentauth`, worded for the person at the terminal.

/// An error of the plugin; the binary prints it on stderr and exits with status 1.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// No usable kubeconfig / in-cluster configuration, or an unknown context.
    #[error("cannot load the Kubernetes client configuration: {0}")]
    Config(String),
    /// The API server did not answer (connection refused, DNS, TLS, timeout).
    #[error("cannot reach the Kubernetes API server at {server}: {cause}")]
    Unreachable { server: String, cause: String },
    /// The API server rejected the credentials.
    #[error("the Kubernetes API server at {server} rejected the credentials (401 Unauthorized): {message}")]
    Unauthorized { server: String, message: String },
    /// RBAC does not allow the request.
    #[error("forbidden: {0}")]
    Forbidden(String),
    /// The agentauth.dev CRDs are not installed.
    #[error(
        "the ConnectedAccount API (connectedaccounts.agentauth.dev/v1alpha1) is not installed in this \
         cluster; install the CRDs first: agent-auth-operator crd | kubectl apply --server-side -f -"
    )]
    CrdNotInstalled,
    /// No such account.
    #[error("connectedaccount \"{name}\" not found in namespace \"{namespace}\"")]
    AccountNotFound { name: String, namespace: String },
    /// `link` on an account that has no link in its status; the text says what to do instead.
    #[error("{0}")]
    NoLink(String),
    /// `reauthorize` on an account for which it cannot work; the text says what to do instead.
    #[error("{0}")]
    NotReauthorizable(String),
    /// `reauthorize --wait` ran out of time.
    #[error("timed out after {waited} waiting for a new authorization link for {name}: {detail}")]
    Timeout {
        name: String,
        waited: String,
        detail: String,
    },
    /// A command-line value the API server would refuse; the text says which.
    #[error("{0}")]
    InvalidArgument(String),
    /// `connect`: the account name is taken by an account of another user.
    #[error("connectedaccounts \"{0}\" exist for other users; create the account yourself with another name")]
    NameTaken(String),
    /// `connect --wait`: the account cannot become ACTIVE without another step; the text says which.
    #[error("{0}")]
    Stuck(String),
    /// `connect` ran out of time.
    #[error("timed out after {waited} waiting for {what} of {name} (state {state})")]
    WaitTimeout {
        name: String,
        what: &'static str,
        waited: String,
        state: String,
    },
    /// Any other answer of the API server.
    #[error("the Kubernetes API server answered {code}: {message}")]
    Api { code: u16, message: String },
    /// Any other client-side failure of a request.
    #[error("request to the Kubernetes API server failed: {0}")]
    Request(String),
    /// Encoding `-o json` output.
    #[error("cannot encode JSON: {0}")]
    Json(#[from] serde_json::Error),
    /// Writing to stdout/stderr.
    #[error("cannot write output: {0}")]
    Output(#[from] std::io::Error),
}

impl Error {
    /// Classifies a failed request to `server`. A 404 is not handled here: whether it means "no such
    /// account" or "no such API" takes a discovery request (see the cluster module).
    pub fn from_kube(e: kube::Error, server: &str) -> Error {
        match e {
            kube::Error::Api(s) if s.code == 401 => Error::Unauthorized {
                server: server.to_owned(),
                message: or_reason(&s.message, &s.reason),
            },
            kube::Error::Api(s) if s.code == 403 => Error::Forbidden(or_reason(&s.message, &s.reason)),
            kube::Error::Api(s) => Error::Api {
                code: s.code,
                message: or_reason(&s.message, &s.reason),
            },
            kube::Error::HyperError(_) | kube::Error::Service(_) => Error::Unreachable {
                server: server.to_owned(),
                cause: root_cause(&e),
            },
            kube::Error::Auth(_) => Error::Config(format!("cannot authenticate: {}", root_cause(&e))),
            other => Error::Request(root_cause(&other)),
        }
    }
}

fn or_reason(message: &str, reason: &str) -> String {
    if message.is_empty() {
        reason.to_owned()
    } else {
        message.to_owned()
    }
}

pub use crate::http::root_cause;

#[cfg(test)]
mod tests {
    use super::*;

    fn api(json: serde_json::Value) -> kube::Error {
        kube::Error::Api(Box::new(serde_json::from_value(json).unwrap()))
    }

    #[test]
    fn api_answers_are_classified() {
        let e = Error::from_kube(
            api(
                serde_json::json!({"code": 403, "reason": "Forbidden", "message": "connectedaccounts.agentauth.dev \"a\" is forbidden"}),
            ),
            "https://k",
        );
        assert_eq!(
            e.to_string(),
            "forbidden: connectedaccounts.agentauth.dev \"a\" is forbidden"
        );
        let e = Error::from_kube(
            api(serde_json::json!({"code": 401, "reason": "Unauthorized"})),
            "https://k",
        );
        assert!(matches!(e, Error::Unauthorized { ref message, .. } if message == "Unauthorized"));
        let e = Error::from_kube(
            api(serde_json::json!({"code": 500, "message": "etcd is sad"})),
            "https://k",
        );
        assert_eq!(
            e.to_string(),
            "the Kubernetes API server answered 500: etcd is sad"
        );
    }

    #[test]
    fn transport_failures_name_the_server_and_the_root_cause() {
        let io = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "Connection refused");
        let e = Error::from_kube(kube::Error::Service(Box::new(io)), "https://127.0.0.1:6443/");
        assert_eq!(
            e.to_string(),
            "cannot reach the Kubernetes API server at https://127.0.0.1:6443/: Connection refused"
        );
    }

    #[test]
    fn not_found_and_missing_crd_messages() {
        let e = Error::AccountNotFound {
            name: "x".into(),
            namespace: "y".into(),
        };
        assert_eq!(
            e.to_string(),
            "connectedaccount \"x\" not found in namespace \"y\""
        );
        assert!(Error::CrdNotInstalled.to_string().contains("not installed"));
    }
}
