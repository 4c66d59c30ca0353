//! TLS fixtures shared by the adapters' TLS tests: certificates made with rcgen, rustls configs
//! with the ring provider, and readers of the handshake failures a [`RecordingHook`] saw.

use std::collections::HashSet;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use conntrack_core::{ConnectionId, Recorded, RecordedError, RecordingHook};
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use rustls::{ClientConfig, RootCertStore, ServerConfig, SupportedProtocolVersion};

/// The ring crypto provider (quick to build, unlike aws-lc-rs).
#[must_use]
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// A self-signed certificate for `names`: a server config presenting it (with `versions`)
/// and a client config trusting it (safe default versions), for the caller to adjust (ALPN,
/// SNI) and wrap in an `Arc`.
///
/// # Panics
///
/// If rcgen or rustls refuse the inputs.
#[must_use]
pub fn self_signed(
    names: &[&str],
    versions: &[&'static SupportedProtocolVersion],
) -> (ServerConfig, ClientConfig) {
    let names = names.iter().map(|n| (*n).to_owned()).collect::<Vec<_>>();
    let rcgen::CertifiedKey { cert, signing_key } =
        rcgen::generate_simple_self_signed(names).unwrap();
    let der: CertificateDer<'static> = cert.der().clone();
    let server = ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(versions)
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(
            vec![der.clone()],
            PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(signing_key.serialize_der())),
        )
        .unwrap();
    (server, trusting(&der))
}

/// What a client's `TlsInfo` summarizes of the chain a [`self_signed`] server presents: one
/// certificate, this subject (rcgen's default, RFC 4514 form) and its expiry; the server's
/// entry has no summary (no client certificate asked for).
///
/// # Panics
///
/// If the client's or the server's summary is not that.
pub fn assert_self_signed_chain(
    client: &conntrack_core::TlsInfo,
    server: &conntrack_core::TlsInfo,
) {
    let chain = client
        .peer_certificates
        .as_ref()
        .expect("the client's entry summarizes the server's chain");
    assert_eq!(chain.count, 1, "{chain:?}");
    assert_eq!(
        chain.leaf_subject.as_deref(),
        Some("CN=rcgen self signed cert"),
        "{chain:?}"
    );
    assert!(chain.leaf_not_after.is_some(), "{chain:?}");
    assert!(
        server.peer_certificates.is_none(),
        "no client certificate: {:?}",
        server.peer_certificates
    );
}

/// A client config (safe default versions, no ALPN) trusting `root` only.
///
/// # Panics
///
/// If rustls refuses the certificate.
#[must_use]
pub fn trusting(root: &CertificateDer<'static>) -> ClientConfig {
    let mut roots = RootCertStore::empty();
    roots.add(root.clone()).unwrap();
    ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth()
}

/// A test CA, a "localhost" leaf it signs, and another CA that signed nothing the server
/// presents: "untrusted" is a client trusting `other_ca`, a real verification failure.
#[derive(Debug)]
pub struct Pki {
    /// The CA that signed the leaf.
    pub ca: CertificateDer<'static>,
    /// The server's certificate, for "localhost".
    pub leaf: CertificateDer<'static>,
    /// The leaf's private key (PKCS#8 DER).
    pub key: Vec<u8>,
    /// A CA that signed nothing the server presents.
    pub other_ca: CertificateDer<'static>,
}

fn ca(name: &str) -> CertifiedIssuer<'static, KeyPair> {
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.distinguished_name.push(DnType::CommonName, name);
    CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap()
}

/// The [`Pki`], made once per test binary.
///
/// # Panics
///
/// If rcgen fails.
#[must_use]
pub fn pki() -> &'static Pki {
    static PKI: OnceLock<Pki> = OnceLock::new();
    PKI.get_or_init(|| {
        let issuer = ca("conntrack test CA");
        let mut params = CertificateParams::new(vec!["localhost".to_string()]).unwrap();
        params
            .distinguished_name
            .push(DnType::OrganizationName, "conntrack tests");
        params
            .distinguished_name
            .push(DnType::CommonName, "localhost");
        let key = KeyPair::generate().unwrap();
        let leaf = params.signed_by(&key, &issuer).unwrap();
        Pki {
            ca: issuer.der().clone(),
            leaf: leaf.der().clone(),
            key: key.serialize_der(),
            other_ca: ca("another CA").der().clone(),
        }
    })
}

/// A server config presenting the [`pki`] chain (leaf, CA) with `versions` and `alpn`.
///
/// # Panics
///
/// If rustls refuses the inputs.
#[must_use]
pub fn server_config(
    versions: &[&'static SupportedProtocolVersion],
    alpn: &[&[u8]],
) -> Arc<ServerConfig> {
    let p = pki();
    let mut config = ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(versions)
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(
            vec![p.leaf.clone(), p.ca.clone()],
            PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(p.key.clone())),
        )
        .unwrap();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Arc::new(config)
}

/// A client config trusting `trusted` and offering `alpn`.
#[must_use]
pub fn client_config(trusted: &CertificateDer<'static>, alpn: &[&[u8]]) -> Arc<ClientConfig> {
    let mut config = trusting(trusted);
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Arc::new(config)
}

/// Ids of the server side's connections (from `on_accept`).
#[must_use]
pub fn server_ids(ev: &[Recorded]) -> HashSet<ConnectionId> {
    ev.iter()
        .filter_map(|e| match e {
            Recorded::Accept {
                connection: Some(c),
                ..
            } => Some(c.id),
            _ => None,
        })
        .collect()
}

/// The server side's failed handshakes, in order.
#[must_use]
pub fn server_failures(ev: &[Recorded]) -> Vec<RecordedError> {
    let ids = server_ids(ev);
    ev.iter()
        .filter_map(|e| match e {
            Recorded::TlsHandshakeDone {
                id,
                error: Some(err),
                ..
            } if ids.contains(id) => Some(err.clone()),
            _ => None,
        })
        .collect()
}

/// Waits (at most `limit`) for the `n`th failed server handshake and returns its error.
///
/// # Panics
///
/// If fewer than `n` came in time.
#[must_use]
pub fn nth_server_failure(rec: &RecordingHook, n: usize, limit: Duration) -> RecordedError {
    let ev = rec
        .wait_for(|ev| server_failures(ev).len() >= n, limit)
        .unwrap_or_else(|ev| panic!("server failures: {:?}", server_failures(&ev)));
    server_failures(&ev)[n - 1].clone()
}
