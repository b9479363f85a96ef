//! TLS for the API: a certificate and key given by the admin (`--tls-cert`, `--tls-key`), or a
//! self-signed CA and server certificate generated into the data directory, whose CA goes
//! into the written kubeconfig. Replicas on one database share one CA, kept in the database
//! ([`SharedCa`]); each replica issues its own server certificate from it.

use std::path::Path;
use std::sync::Arc;

use anyhow::Context as _;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

pub struct Tls {
    pub config: Arc<rustls::ServerConfig>,
    /// The CA clients should trust, when Stowage made it.
    pub ca_pem: Option<Vec<u8>>,
}

fn server_config(cert_pem: &[u8], key_pem: &[u8]) -> anyhow::Result<Arc<rustls::ServerConfig>> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(cert_pem)
        .collect::<Result<_, _>>()
        .context("reading the TLS certificate (PEM)")?;
    if certs.is_empty() {
        anyhow::bail!("the TLS certificate file holds no certificate");
    }
    let key =
        PrivateKeyDer::from_pem_slice(key_pem).context("reading the TLS private key (PEM)")?;
    let mut config = rustls::ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .context("the TLS certificate and key do not match")?;
    // HTTP/2 for clients that speak it (kubectl, browsers: one connection carries every watch
    // of a console page), HTTP/1.1 for the rest. A graceful shutdown says GOAWAY to HTTP/2
    // connections, and one whose peer keeps it open is dropped after the drain (see
    // `api::listen`).
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// Loads an admin-provided certificate chain and key.
pub fn load(cert: &Path, key: &Path) -> anyhow::Result<Tls> {
    let cert_pem = std::fs::read(cert).with_context(|| format!("reading {}", cert.display()))?;
    let key_pem = std::fs::read(key).with_context(|| format!("reading {}", key.display()))?;
    Ok(Tls {
        config: server_config(&cert_pem, &key_pem)?,
        ca_pem: None,
    })
}

/// Generates (once) a CA and a server certificate for `hosts` under `<data-dir>/tls`.
pub fn self_signed(data_dir: &Path, hosts: &[String]) -> anyhow::Result<Tls> {
    let dir = data_dir.join("tls");
    std::fs::create_dir_all(&dir)?;
    let (ca_crt, srv_crt, srv_key) = (
        dir.join("ca.crt"),
        dir.join("server.crt"),
        dir.join("server.key"),
    );
    if !(ca_crt.exists() && srv_crt.exists() && srv_key.exists()) {
        let ca_key = rcgen::KeyPair::generate()?;
        let ca = ca_params()?.self_signed(&ca_key)?;
        let (cert, key) = server_certificate(hosts, ca_key)?;
        write_private(&srv_key, key.as_bytes())?;
        std::fs::write(&srv_crt, cert)?;
        std::fs::write(&ca_crt, ca.pem())?;
        tracing::info!(dir = %dir.display(), "generated a self-signed CA and server certificate");
    }
    let ca_pem = std::fs::read(&ca_crt)?;
    let mut chain = std::fs::read(&srv_crt)?;
    chain.extend_from_slice(&ca_pem);
    Ok(Tls {
        config: server_config(&chain, &std::fs::read(&srv_key)?)?,
        ca_pem: Some(ca_pem),
    })
}

/// The CA's parameters. Always the same, so that the issuer of a certificate made from a
/// stored CA key names the stored CA certificate's subject.
fn ca_params() -> anyhow::Result<rcgen::CertificateParams> {
    let mut p = rcgen::CertificateParams::new(Vec::<String>::new())?;
    p.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    p.distinguished_name
        .push(rcgen::DnType::CommonName, "Stowage CA");
    Ok(p)
}

/// A server certificate for `hosts` signed by the CA's key: (certificate PEM, key PEM).
fn server_certificate(
    hosts: &[String],
    ca_key: rcgen::KeyPair,
) -> anyhow::Result<(String, String)> {
    let key = rcgen::KeyPair::generate()?;
    let mut params = rcgen::CertificateParams::new(hosts.to_vec())?;
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "stowage");
    let issuer = rcgen::Issuer::new(ca_params()?, ca_key);
    let cert = params.signed_by(&key, &issuer)?;
    Ok((cert.pem(), key.serialize_pem()))
}

/// The CA replicas share, as kept in the database.
#[derive(serde::Serialize, serde::Deserialize)]
pub struct SharedCa {
    pub cert_pem: String,
    pub key_pem: String,
}

impl SharedCa {
    /// A new CA, for the first replica that needs one.
    pub fn generate() -> anyhow::Result<SharedCa> {
        let key = rcgen::KeyPair::generate()?;
        let cert = ca_params()?.self_signed(&key)?;
        Ok(SharedCa {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        })
    }

    /// A server certificate for this replica's `hosts`, from the shared CA. The CA's
    /// certificate (public) is also written to `<data-dir>/tls/ca.crt` for clients.
    pub fn serve(&self, data_dir: &Path, hosts: &[String]) -> anyhow::Result<Tls> {
        let ca_key =
            rcgen::KeyPair::from_pem(&self.key_pem).context("reading the shared CA's key")?;
        let (cert, key) = server_certificate(hosts, ca_key)?;
        let dir = data_dir.join("tls");
        std::fs::create_dir_all(&dir)?;
        std::fs::write(dir.join("ca.crt"), &self.cert_pem)?;
        std::fs::write(dir.join("server.crt"), &cert)?;
        write_private(&dir.join("server.key"), key.as_bytes())?;
        let mut chain = cert.into_bytes();
        chain.extend_from_slice(self.cert_pem.as_bytes());
        Ok(Tls {
            config: server_config(&chain, key.as_bytes())?,
            ca_pem: Some(self.cert_pem.clone().into_bytes()),
        })
    }
}

fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .write(true)
        .truncate(true)
        .mode(0o600)
        .open(path)?;
    f.write_all(bytes)
}
