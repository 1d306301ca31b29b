//! The admin kubeconfig, with the certificates embedded so the file stands alone.

use base64::{Engine, engine::general_purpose::STANDARD as B64};

use crate::certs::Pki;

pub fn render(server: &str, pki: &Pki) -> String {
    let ca = B64.encode(&pki.ca_pem);
    let cert = B64.encode(&pki.admin_cert_pem);
    let key = B64.encode(&pki.admin_key_pem);
    format!(
        "apiVersion: v1
kind: Config
clusters:
- name: agentauth-test
  cluster:
    server: {server}
    certificate-authority-data: {ca}
users:
- name: admin
  user:
    client-certificate-data: {cert}
    client-key-data: {key}
contexts:
- name: agentauth-test
  context:
    cluster: agentauth-test
    user: admin
current-context: agentauth-test
"
    )
}
