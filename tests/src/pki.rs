//! Throw-away certificates for TLS tests, made fresh by each test run (no
//! private key is ever committed): a CA, and a server certificate for
//! `127.0.0.1` and `localhost` signed by it.

use std::path::{Path, PathBuf};

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair, KeyUsagePurpose};

/// PEM files of one test CA and a server certificate it signed.
pub struct TestPki {
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl TestPki {
    /// Writes `<prefix>-ca.pem`, `<prefix>-cert.pem` and `<prefix>-key.pem`
    /// (0600) under `dir`.
    pub fn generate(dir: &Path, prefix: &str) -> Self {
        let mut ca = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca.distinguished_name
            .push(DnType::CommonName, format!("northwest test CA {prefix}"));
        ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let ca_key = KeyPair::generate().expect("CA key");
        let ca_cert = ca.self_signed(&ca_key).expect("self-signed CA");
        let mut leaf = CertificateParams::new(vec!["127.0.0.1".into(), "localhost".into()])
            .expect("server params");
        leaf.distinguished_name
            .push(DnType::CommonName, format!("northwest test node {prefix}"));
        let leaf_key = KeyPair::generate().expect("server key");
        let leaf_cert = leaf
            .signed_by(&leaf_key, &ca_cert, &ca_key)
            .expect("server certificate");
        let write = |name: &str, text: String| {
            let p = dir.join(format!("{prefix}-{name}.pem"));
            std::fs::write(&p, text).expect("write PEM");
            p
        };
        let key = write("key", leaf_key.serialize_pem());
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600))
                .expect("chmod key");
        }
        Self {
            ca: write("ca", ca_cert.pem()),
            cert: write("cert", leaf_cert.pem()),
            key,
        }
    }

    /// A client that trusts only this CA.
    pub fn client(&self) -> reqwest::Client {
        let pem = std::fs::read(&self.ca).expect("read CA");
        reqwest::Client::builder()
            .tls_built_in_root_certs(false)
            .add_root_certificate(reqwest::Certificate::from_pem(&pem).expect("CA PEM"))
            .build()
            .expect("client")
    }

    /// `[http]` lines that make a node serve HTTPS with this certificate.
    pub fn http_toml(&self) -> String {
        format!(
            "tls_cert_file = \"{}\"\ntls_key_file = \"{}\"\n",
            self.cert.display(),
            self.key.display()
        )
    }
}
