//! A throwaway PKI for the TLS tests (rcgen): a CA, a second CA that signed nothing
//! the servers present, and server and client certificates issued by the first,
//! including one that expired long ago. Files live in a temp dir removed on drop.

use std::path::PathBuf;

use rcgen::{
    BasicConstraints, Certificate, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose,
};

pub struct Pki {
    pub dir: PathBuf,
    ca: Certificate,
    ca_key: KeyPair,
    /// The CA every certificate here is issued by (PEM file).
    pub ca_file: PathBuf,
    /// A CA that issued nothing the servers present (PEM file).
    pub other_ca_file: PathBuf,
}

/// A certificate and its private key, as PEM text.
pub struct Issued {
    pub cert: String,
    pub key: String,
}

fn ca(name: &str) -> (Certificate, KeyPair) {
    let mut p = CertificateParams::new(Vec::<String>::new()).expect("ca params");
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    p.distinguished_name.push(DnType::CommonName, name);
    p.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let key = KeyPair::generate().expect("ca key");
    (p.self_signed(&key).expect("self-signed ca"), key)
}

impl Pki {
    pub fn new() -> Self {
        let dir =
            std::env::temp_dir().join(format!("hookrelay-pki-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&dir).expect("pki dir");
        let (other, _) = ca("some other CA");
        let (ca, ca_key) = ca("hookrelay test CA");
        let ca_file = dir.join("ca.pem");
        std::fs::write(&ca_file, ca.pem()).expect("write ca");
        let other_ca_file = dir.join("other-ca.pem");
        std::fs::write(&other_ca_file, other.pem()).expect("write other ca");
        Self {
            dir,
            ca,
            ca_key,
            ca_file,
            other_ca_file,
        }
    }

    pub fn ca_pem(&self) -> String {
        self.ca.pem()
    }

    fn issue(&self, mut p: CertificateParams) -> Issued {
        let key = KeyPair::generate().expect("key");
        let cert = std::mem::take(&mut p)
            .signed_by(&key, &self.ca, &self.ca_key)
            .expect("sign");
        Issued {
            cert: cert.pem(),
            key: key.serialize_pem(),
        }
    }

    /// A server certificate for `names` (IP addresses or DNS names).
    pub fn server(&self, names: &[&str]) -> Issued {
        self.issue(server_params(names))
    }

    /// A server certificate for `names` that was valid for one day in 2020.
    pub fn expired_server(&self, names: &[&str]) -> Issued {
        let mut p = server_params(names);
        p.not_before = rcgen::date_time_ymd(2020, 1, 1);
        p.not_after = rcgen::date_time_ymd(2020, 1, 2);
        self.issue(p)
    }

    /// A client certificate whose common name is `user` (PostgreSQL's `cert` auth
    /// maps it to the role of that name).
    pub fn client(&self, user: &str) -> Issued {
        let mut p = CertificateParams::new(Vec::<String>::new()).expect("client params");
        p.distinguished_name.push(DnType::CommonName, user);
        p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        self.issue(p)
    }

    /// Writes `text` to `name` in the PKI's directory (mode 0600) and returns its path.
    pub fn write(&self, name: &str, text: &str) -> PathBuf {
        use std::os::unix::fs::PermissionsExt;
        let path = self.dir.join(name);
        std::fs::write(&path, text).expect("write pem");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).expect("mode");
        path
    }
}

fn server_params(names: &[&str]) -> CertificateParams {
    let mut p = CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())
        .expect("server params");
    p.distinguished_name.push(DnType::CommonName, names[0]);
    p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    p
}

impl Drop for Pki {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
