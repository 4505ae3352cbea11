//! TLS 1.3 on every connection, both sides presenting a certificate.
//!
//! Certificates are self-signed; what identifies a side is the id of its
//! public key ([`crate::identity`]). The handshake's own check proves that
//! each side holds the private key of the certificate it shows (signatures
//! are verified by rustls's webpki code). Whether that id is welcome is
//! decided right after the handshake by the caller, before any message is
//! read, so a refusal can name the id and say how to trust it.
//!
//! ALPN tells the accepting node what the other side is (peer or client)
//! without reading a message.

use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms, verify_tls13_signature};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::server::ParsedCertificate;
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{DigitallySignedStruct, DistinguishedName, SignatureScheme};
use tokio::io::{AsyncRead, AsyncWrite, BufReader};
use uuid::Uuid;

use crate::identity::{KeyPair, id_of_public_key};

/// ALPN of a node dialing a node.
pub const ALPN_PEER: &[u8] = b"tandem-peer";
/// ALPN of a client (CLI or UI).
pub const ALPN_CLIENT: &[u8] = b"tandem-client";

/// What the other side of an accepted connection said it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// Another node.
    Peer,
    /// A client.
    Client,
}

/// Accepts any well-formed certificate whose handshake signature checks
/// out; the id it proves is judged by the caller.
#[derive(Debug)]
struct AnyKey {
    algs: WebPkiSupportedAlgorithms,
}

fn parse_check(cert: &CertificateDer<'_>) -> Result<(), rustls::Error> {
    ParsedCertificate::try_from(cert).map(|_| ())
}

impl ServerCertVerifier for AnyKey {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        parse_check(end_entity)?;
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Err(rustls::Error::General("TLS 1.2 is refused".into()))
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(message, cert, dss, &self.algs)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algs.supported_schemes()
    }
}

impl ClientCertVerifier for AnyKey {
    fn client_auth_mandatory(&self) -> bool {
        true
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        parse_check(end_entity)?;
        Ok(ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Err(rustls::Error::General("TLS 1.2 is refused".into()))
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(message, cert, dss, &self.algs)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algs.supported_schemes()
    }
}

/// ring's TLS 1.3 suites with AES-128-GCM first (as Go's TLS, and so
/// Syncthing, prefer on CPUs with AES instructions): 10 AES rounds instead
/// of 14 per block, on every byte a link carries.
fn provider() -> Arc<CryptoProvider> {
    let mut p = rustls::crypto::ring::default_provider();
    p.cipher_suites
        .sort_by_key(|s| s.suite() != rustls::CipherSuite::TLS13_AES_128_GCM_SHA256);
    Arc::new(p)
}

fn any_key(p: &CryptoProvider) -> Arc<AnyKey> {
    Arc::new(AnyKey {
        algs: p.signature_verification_algorithms,
    })
}

/// TLS setup failed (a key rustls cannot use).
#[derive(Debug, thiserror::Error)]
#[error("cannot set up TLS: {0}")]
pub struct TlsSetupError(#[from] rustls::Error);

/// Bytes read from the socket per system call at most. rustls asks its
/// transport for one record (up to 16 KiB) at a time; reading through a
/// buffer this size makes one system call of several, which a bulk transfer
/// feels (see `examples/link_throughput.rs`). It is allocated per
/// connection, so it stays small against the connection cap.
const READ_BUFFER: usize = 64 * 1024;

/// The transport under TLS: the socket, read through [`READ_BUFFER`].
pub type Transport<S> = BufReader<S>;

/// Both ends of TLS for one key: accepting (a node) and dialing as a peer
/// or as a client.
#[derive(Clone)]
pub struct Tls {
    acceptor: tokio_rustls::TlsAcceptor,
    connector: tokio_rustls::TlsConnector,
    id: Uuid,
}

impl Tls {
    /// TLS for a node (accepts and dials as a peer).
    pub fn node(key: &KeyPair) -> Result<Tls, TlsSetupError> {
        Self::new(key, ALPN_PEER)
    }

    /// TLS for a client (dials only).
    pub fn client(key: &KeyPair) -> Result<Tls, TlsSetupError> {
        Self::new(key, ALPN_CLIENT)
    }

    fn new(key: &KeyPair, alpn: &[u8]) -> Result<Tls, TlsSetupError> {
        let p = provider();
        let verifier = any_key(&p);
        let mut server = rustls::ServerConfig::builder_with_provider(p.clone())
            .with_protocol_versions(&[&rustls::version::TLS13])?
            .with_client_cert_verifier(verifier.clone())
            .with_single_cert(vec![key.cert()], key.private_key())?;
        server.alpn_protocols = vec![ALPN_PEER.to_vec(), ALPN_CLIENT.to_vec()];
        // Nothing is resumed: every connection proves its key again.
        server.session_storage = Arc::new(rustls::server::NoServerSessionStorage {});
        server.send_tls13_tickets = 0;
        let mut client = rustls::ClientConfig::builder_with_provider(p)
            .with_protocol_versions(&[&rustls::version::TLS13])?
            .dangerous()
            .with_custom_certificate_verifier(verifier)
            .with_client_auth_cert(vec![key.cert()], key.private_key())?;
        client.alpn_protocols = vec![alpn.to_vec()];
        client.resumption = rustls::client::Resumption::disabled();
        Ok(Tls {
            acceptor: tokio_rustls::TlsAcceptor::from(Arc::new(server)),
            connector: tokio_rustls::TlsConnector::from(Arc::new(client)),
            id: key.id(),
        })
    }

    /// The id this side proves.
    pub fn id(&self) -> Uuid {
        self.id
    }

    /// Runs the dialing side's handshake; returns the stream and the id
    /// the other side proved.
    pub async fn connect<S>(
        &self,
        io: S,
    ) -> std::io::Result<(tokio_rustls::client::TlsStream<Transport<S>>, Uuid)>
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        let name = ServerName::try_from("tandem").map_err(std::io::Error::other)?;
        let io = BufReader::with_capacity(READ_BUFFER, io);
        let s = self.connector.connect(name, io).await?;
        let id = proven_id(s.get_ref().1.peer_certificates())?;
        Ok((s, id))
    }

    /// Runs the accepting side's handshake; returns the stream, the id the
    /// other side proved, and what it says it is.
    pub async fn accept<S>(
        &self,
        io: S,
    ) -> std::io::Result<(tokio_rustls::server::TlsStream<Transport<S>>, Uuid, Side)>
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        let io = BufReader::with_capacity(READ_BUFFER, io);
        let s = self.acceptor.accept(io).await?;
        let conn = s.get_ref().1;
        let side = match conn.alpn_protocol() {
            Some(ALPN_PEER) => Side::Peer,
            Some(ALPN_CLIENT) => Side::Client,
            _ => {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    "the other side did not say whether it is a node or a client (ALPN)",
                ));
            }
        };
        let id = proven_id(conn.peer_certificates())?;
        Ok((s, id, side))
    }
}

fn proven_id(certs: Option<&[CertificateDer<'static>]>) -> std::io::Result<Uuid> {
    let bad = |why: &str| std::io::Error::new(std::io::ErrorKind::InvalidData, why.to_string());
    let cert = certs
        .and_then(|c| c.first())
        .ok_or_else(|| bad("the other side presented no certificate"))?;
    let parsed = ParsedCertificate::try_from(cert).map_err(|e| bad(&e.to_string()))?;
    Ok(id_of_public_key(parsed.subject_public_key_info().as_ref()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    fn key(name: &str) -> (KeyPair, std::path::PathBuf) {
        let dir = std::env::temp_dir().join(format!("tandem-tls-{name}-{}", Uuid::new_v4()));
        let (k, _) = KeyPair::load_or_create(&dir.join("k.pem")).unwrap();
        (k, dir)
    }

    #[tokio::test]
    async fn both_sides_learn_the_other_id_and_bytes_flow() {
        let (a, da) = key("a");
        let (b, db) = key("b");
        let (ta, tb) = (Tls::node(&a).unwrap(), Tls::client(&b).unwrap());
        let (x, y) = tokio::io::duplex(64 * 1024);
        let server = tokio::spawn(async move {
            let (mut s, id, side) = ta.accept(x).await.unwrap();
            let mut buf = [0u8; 5];
            s.read_exact(&mut buf).await.unwrap();
            s.write_all(&buf).await.unwrap();
            s.flush().await.unwrap();
            let suite = s.get_ref().1.negotiated_cipher_suite().map(|c| c.suite());
            (id, side, buf, suite)
        });
        let (mut c, server_id) = tb.connect(y).await.unwrap();
        c.write_all(b"hello").await.unwrap();
        c.flush().await.unwrap();
        let mut back = [0u8; 5];
        c.read_exact(&mut back).await.unwrap();
        let (client_id, side, got, suite) = server.await.unwrap();
        assert_eq!(suite, Some(rustls::CipherSuite::TLS13_AES_128_GCM_SHA256));
        assert_eq!(server_id, a.id());
        assert_eq!(client_id, b.id());
        assert_eq!(side, Side::Client);
        assert_eq!(&got, b"hello");
        assert_eq!(&back, b"hello");
        let _ = std::fs::remove_dir_all(da);
        let _ = std::fs::remove_dir_all(db);
    }
}
