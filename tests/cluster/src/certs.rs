//! Certificates for the test control plane: a CA, the API server's serving certificate, an admin
//! client certificate in `system:masters`, and the service-account signing key.

use std::path::Path;

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
    KeyUsagePurpose,
};

/// PEM files written into the cluster directory.
pub struct Pki {
    pub ca_pem: String,
    pub admin_cert_pem: String,
    pub admin_key_pem: String,
}

/// The serving certificate names `api_host` (where the API server listens) and, for pods on a
/// node, the `kubernetes` Service's address and DNS names.
pub fn generate(dir: &Path, api_host: &str) -> Result<Pki, String> {
    let e = |e: rcgen::Error| format!("certificate generation failed: {e}");
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).map_err(e)?;
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "agentauth-test-ca");
    ca_params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().map_err(e)?).map_err(e)?;

    let serving_key = KeyPair::generate().map_err(e)?;
    let mut names: Vec<String> = ["localhost", "127.0.0.1", crate::node::API_SERVICE_IP]
        .into_iter()
        .chain(["kubernetes", "kubernetes.default", "kubernetes.default.svc"])
        .map(str::to_owned)
        .collect();
    if !names.iter().any(|n| n == api_host) {
        names.push(api_host.to_owned());
    }
    let mut serving = CertificateParams::new(names).map_err(e)?;
    serving
        .distinguished_name
        .push(DnType::CommonName, "kube-apiserver");
    serving.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    let serving_cert = serving.signed_by(&serving_key, &ca).map_err(e)?;

    let admin_key = KeyPair::generate().map_err(e)?;
    let mut admin = CertificateParams::new(Vec::<String>::new()).map_err(e)?;
    admin
        .distinguished_name
        .push(DnType::CommonName, "agentauth-test-admin");
    admin
        .distinguished_name
        .push(DnType::OrganizationName, "system:masters");
    admin.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    let admin_cert = admin.signed_by(&admin_key, &ca).map_err(e)?;

    let sa_key = KeyPair::generate().map_err(e)?;

    let pki = Pki {
        ca_pem: ca.pem(),
        admin_cert_pem: admin_cert.pem(),
        admin_key_pem: admin_key.serialize_pem(),
    };
    for (name, body) in [
        ("ca.crt", pki.ca_pem.as_str()),
        ("apiserver.crt", &serving_cert.pem()),
        ("apiserver.key", &serving_key.serialize_pem()),
        ("admin.crt", &pki.admin_cert_pem),
        ("admin.key", &pki.admin_key_pem),
        ("sa.key", &sa_key.serialize_pem()),
        ("sa.pub", &sa_key.public_key_pem()),
    ] {
        std::fs::write(dir.join(name), body).map_err(|err| format!("cannot write {name}: {err}"))?;
    }
    Ok(pki)
}
