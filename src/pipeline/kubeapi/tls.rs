//! TLS for the pipeline API: client-go (kubectl, kratix-go) sends a kubeconfig's credentials
//! only to an `https` server, so the API speaks TLS, with a certificate for `127.0.0.1` and
//! `localhost` signed by a CA made when the runner first serves the API (kept in memory only;
//! the kubeconfig carries the CA as `certificate-authority-data`).

use std::sync::Arc;
use std::time::Duration;

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose};
use tokio_rustls::TlsAcceptor;

/// The server side: the acceptor and the CA certificate (PEM) clients trust.
#[derive(Clone)]
pub(super) struct Tls {
    pub acceptor: TlsAcceptor,
    pub ca_pem: String,
}

impl std::fmt::Debug for Tls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Tls { .. }")
    }
}

/// Makes a CA and a server certificate for `127.0.0.1` and `localhost`.
///
/// Errors: the key or certificate cannot be made, or rustls refuses them (the message says
/// which).
pub(super) fn make() -> Result<Tls, String> {
    let e = |what: &str| {
        let what = what.to_string();
        move |err: rcgen::Error| format!("{what}: {err}")
    };
    let ca_key = KeyPair::generate().map_err(e("CA key"))?;
    let mut ca = CertificateParams::new(Vec::<String>::new()).map_err(e("CA"))?;
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.distinguished_name
        .push(DnType::CommonName, "promised pipeline API CA");
    ca.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::CrlSign,
    ];
    let ca_cert = ca.self_signed(&ca_key).map_err(e("CA certificate"))?;
    let issuer = Issuer::new(ca, ca_key);
    let key = KeyPair::generate().map_err(e("server key"))?;
    let mut leaf = CertificateParams::new(vec!["127.0.0.1".to_string(), "localhost".to_string()])
        .map_err(e("server"))?;
    leaf.distinguished_name
        .push(DnType::CommonName, "promised pipeline API");
    leaf.use_authority_key_identifier_extension = true;
    leaf.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth];
    let cert = leaf
        .signed_by(&key, &issuer)
        .map_err(e("server certificate"))?;
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS: {e}"))?
        .with_no_client_auth()
        .with_single_cert(
            vec![cert.der().clone(), ca_cert.der().clone()],
            rustls::pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into()),
        )
        .map_err(|e| format!("TLS: {e}"))?;
    Ok(Tls {
        acceptor: TlsAcceptor::from(Arc::new(config)),
        ca_pem: ca_cert.pem(),
    })
}

/// A listener whose connections are TLS (handshakes one at a time, at most 10 s each; a
/// failed one is dropped).
pub(super) struct TlsListener<L> {
    pub inner: L,
    pub acceptor: TlsAcceptor,
}

impl<L> axum::serve::Listener for TlsListener<L>
where
    L: axum::serve::Listener,
{
    type Io = tokio_rustls::server::TlsStream<L::Io>;
    type Addr = L::Addr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            let (io, addr) = self.inner.accept().await;
            if let Ok(Ok(tls)) =
                tokio::time::timeout(Duration::from_secs(10), self.acceptor.accept(io)).await
            {
                return (tls, addr);
            }
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        self.inner.local_addr()
    }
}
