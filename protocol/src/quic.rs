//! QUIC configuration shared by every role: the ALPN, server certificates (files, or a
//! self-signed one generated for development), a client configuration that pins the server's
//! certificate by its SHA-256, and the transport settings (datagrams, keep-alive, idle timeout,
//! socket buffers).
//!
//! Everything here builds `quinn-proto` configuration values, which `quinn` accepts as they are.
//! [`bind_udp_socket`] is the one function of this crate that touches the operating system.

use ring::digest;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

/// Application protocol name offered by clients and required by servers.
pub const ALPN: &[u8] = b"meridian/1";
/// Default size of the UDP socket's send and receive buffers: smaller buffers drop datagrams
/// in bursts (a shard sends a snapshot to every client in the same millisecond).
pub const DEFAULT_SOCKET_BUFFER: usize = 4 * 1024 * 1024;
/// The server name clients ask for; certificates are pinned, so it is only a label.
pub const SERVER_NAME: &str = "meridian";

/// Application close codes, sent with a connection's close frame.
pub mod close_code {
    /// Normal end: the client left or the session is over.
    pub const DONE: u32 = 0;
    /// The hello was refused (see the `RejectMsg` sent before closing).
    pub const REJECTED: u32 = 1;
    /// The client was kicked (see the `KickMsg` sent before closing).
    pub const KICKED: u32 = 2;
    /// The server is shutting down.
    pub const SHUTDOWN: u32 = 3;
    /// The peer broke the protocol before any message could say so.
    pub const PROTOCOL_ERROR: u32 = 4;
}

/// A SHA-256 certificate fingerprint.
pub type CertSha256 = [u8; 32];

/// Transport settings every role takes from its config.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct QuicConfig {
    /// Interval of keep-alive packets, milliseconds; keeps NAT bindings and detects loss.
    pub keep_alive_ms: u64,
    /// A connection with nothing heard for this long is closed, milliseconds.
    pub idle_timeout_ms: u64,
    /// UDP socket send and receive buffer size, bytes.
    pub socket_buffer_bytes: usize,
    /// Room for datagrams not yet read by the application or not yet sent, bytes, each way.
    pub datagram_buffer_bytes: usize,
}

impl Default for QuicConfig {
    fn default() -> Self {
        Self {
            keep_alive_ms: 1_000,
            // QUIC closes a connection after the lower of both peers' idle timeouts: clients on
            // this default notice a dead shard within 3 s (three missed keep-alives) and
            // reconnect, whatever the servers' own settings.
            idle_timeout_ms: 3_000,
            socket_buffer_bytes: DEFAULT_SOCKET_BUFFER,
            datagram_buffer_bytes: 1024 * 1024,
        }
    }
}

/// Why a QUIC configuration could not be built.
#[derive(Debug, thiserror::Error)]
pub enum QuicSetupError {
    /// The idle timeout must be longer than the keep-alive interval, and fit QUIC's range.
    #[error(
        "idle timeout {idle_timeout_ms} ms must be longer than keep-alive {keep_alive_ms} ms and below 2^62 ms"
    )]
    BadTimeouts {
        /// Keep-alive interval given.
        keep_alive_ms: u64,
        /// Idle timeout given.
        idle_timeout_ms: u64,
    },
    /// A certificate or key file could not be read or parsed.
    #[error("cannot read {what} from {path}: {detail}")]
    File {
        /// "certificate" or "private key".
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// What went wrong.
        detail: String,
    },
    /// The development certificate could not be generated.
    #[error("cannot generate the development certificate: {0}")]
    Generate(String),
    /// TLS refused the certificate, key or settings.
    #[error("TLS configuration refused: {0}")]
    Tls(#[from] rustls::Error),
    /// QUIC refused the TLS configuration (no TLS 1.3 initial suite).
    #[error("QUIC refused the TLS configuration: {0}")]
    Quic(String),
}

/// A server's certificate chain and private key.
#[derive(Debug)]
pub struct CertificateMaterial {
    /// The chain, leaf first.
    pub chain: Vec<CertificateDer<'static>>,
    /// The leaf's private key.
    pub key: PrivateKeyDer<'static>,
}

impl Clone for CertificateMaterial {
    fn clone(&self) -> Self {
        Self {
            chain: self.chain.clone(),
            key: self.key.clone_key(),
        }
    }
}

impl CertificateMaterial {
    /// A self-signed certificate for `names`, for development: clients pin its fingerprint,
    /// which the lobby hands them, so no certificate authority is involved.
    pub fn generate_dev(names: &[&str]) -> Result<Self, QuicSetupError> {
        let names: Vec<String> = names.iter().map(|n| (*n).to_owned()).collect();
        let certified = rcgen::generate_simple_self_signed(names)
            .map_err(|e| QuicSetupError::Generate(e.to_string()))?;
        let key = PrivatePkcs8KeyDer::from(certified.signing_key.serialize_der());
        Ok(Self {
            chain: vec![certified.cert.der().clone()],
            key: key.into(),
        })
    }

    /// Reads a PEM certificate chain and a PEM private key.
    pub fn load_pem(cert_path: &Path, key_path: &Path) -> Result<Self, QuicSetupError> {
        let file_err = |what, path: &Path, detail: String| QuicSetupError::File {
            what,
            path: path.to_owned(),
            detail,
        };
        let chain = CertificateDer::pem_file_iter(cert_path)
            .map_err(|e| file_err("certificate", cert_path, e.to_string()))?
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| file_err("certificate", cert_path, e.to_string()))?;
        if chain.is_empty() {
            return Err(file_err(
                "certificate",
                cert_path,
                "no CERTIFICATE block".into(),
            ));
        }
        let key = PrivateKeyDer::from_pem_file(key_path)
            .map_err(|e| file_err("private key", key_path, e.to_string()))?;
        Ok(Self { chain, key })
    }

    /// SHA-256 of the leaf certificate: what clients pin.
    pub fn sha256(&self) -> CertSha256 {
        self.chain
            .first()
            .map(|c| cert_sha256(c))
            .unwrap_or([0; 32])
    }
}

/// SHA-256 of a DER certificate.
pub fn cert_sha256(cert: &CertificateDer<'_>) -> CertSha256 {
    let d = digest::digest(&digest::SHA256, cert.as_ref());
    let mut out = [0; 32];
    out.copy_from_slice(d.as_ref());
    out
}

fn provider() -> Arc<CryptoProvider> {
    let mut provider = rustls::crypto::ring::default_provider();
    // TLS_AES_128_GCM_SHA256 first (ring's default puts AES-256 with SHA-384 first): QUIC
    // protects its initial packets with AES-128 anyway, and SHA-384 has no instructions on
    // CPUs that have SHA-256 ones (it was 6% of a join storm's CPU). A stable sort: the other
    // suites keep their order.
    provider
        .cipher_suites
        .sort_by_key(|s| s.suite() != rustls::CipherSuite::TLS13_AES_128_GCM_SHA256);
    Arc::new(provider)
}

/// The transport settings of `cfg`.
pub fn transport_config(cfg: &QuicConfig) -> Result<quinn_proto::TransportConfig, QuicSetupError> {
    let bad = || QuicSetupError::BadTimeouts {
        keep_alive_ms: cfg.keep_alive_ms,
        idle_timeout_ms: cfg.idle_timeout_ms,
    };
    if cfg.idle_timeout_ms <= cfg.keep_alive_ms {
        return Err(bad());
    }
    let idle = quinn_proto::IdleTimeout::try_from(Duration::from_millis(cfg.idle_timeout_ms))
        .map_err(|_| bad())?;
    let mut t = quinn_proto::TransportConfig::default();
    t.keep_alive_interval(Some(Duration::from_millis(cfg.keep_alive_ms)))
        .max_idle_timeout(Some(idle))
        .datagram_receive_buffer_size(Some(cfg.datagram_buffer_bytes))
        .datagram_send_buffer_size(cfg.datagram_buffer_bytes);
    Ok(t)
}

/// A server configuration presenting `cert`, requiring [`ALPN`], with datagrams enabled.
pub fn server_config(
    cert: &CertificateMaterial,
    cfg: &QuicConfig,
) -> Result<quinn_proto::ServerConfig, QuicSetupError> {
    let mut tls = rustls::ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_no_client_auth()
        .with_single_cert(cert.chain.clone(), cert.key.clone_key())?;
    tls.alpn_protocols = vec![ALPN.to_vec()];
    let crypto = quinn_proto::crypto::rustls::QuicServerConfig::try_from(tls)
        .map_err(|e| QuicSetupError::Quic(e.to_string()))?;
    let mut server = quinn_proto::ServerConfig::with_crypto(Arc::new(crypto));
    server.transport_config(Arc::new(transport_config(cfg)?));
    Ok(server)
}

/// A client configuration that accepts exactly the server certificate whose SHA-256 is `pin`.
///
/// Built once per pin and settings, then shared (the last [`CLIENT_CONFIGS_KEPT`]): connections
/// to one server resume TLS sessions (no certificate signature, on either side), as a client
/// that probes a shard and then plays on it does.
pub fn client_config(
    pin: CertSha256,
    cfg: &QuicConfig,
) -> Result<quinn_proto::ClientConfig, QuicSetupError> {
    type Kept = Vec<(CertSha256, QuicConfig, quinn_proto::ClientConfig)>;
    static KEPT: std::sync::OnceLock<std::sync::Mutex<Kept>> = std::sync::OnceLock::new();
    let kept = KEPT.get_or_init(Default::default);
    // A poisoned lock only means another thread panicked mid-push: the list is still sound.
    let found = {
        let list = kept.lock().unwrap_or_else(|e| e.into_inner());
        list.iter()
            .find(|(p, c, _)| *p == pin && c == cfg)
            .map(|(_, _, client)| client.clone())
    };
    if let Some(client) = found {
        return Ok(client);
    }
    let client = new_client_config(pin, cfg)?;
    let mut list = kept.lock().unwrap_or_else(|e| e.into_inner());
    if list.len() >= CLIENT_CONFIGS_KEPT {
        list.remove(0);
    }
    list.push((pin, cfg.clone(), client.clone()));
    Ok(client)
}

/// Client configurations [`client_config`] keeps for reuse.
pub const CLIENT_CONFIGS_KEPT: usize = 64;

fn new_client_config(
    pin: CertSha256,
    cfg: &QuicConfig,
) -> Result<quinn_proto::ClientConfig, QuicSetupError> {
    let provider = provider();
    let mut tls = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(PinnedCertVerifier {
            pin: Some(pin),
            seen: None,
            provider,
        }))
        .with_no_client_auth();
    tls.alpn_protocols = vec![ALPN.to_vec()];
    let crypto = quinn_proto::crypto::rustls::QuicClientConfig::try_from(tls)
        .map_err(|e| QuicSetupError::Quic(e.to_string()))?;
    let mut client = quinn_proto::ClientConfig::new(Arc::new(crypto));
    client.transport_config(Arc::new(transport_config(cfg)?));
    Ok(client)
}

/// The certificate an insecure client configuration accepted: its SHA-256, once a handshake
/// got that far (see [`insecure_client_config`]).
pub type SeenCert = Arc<std::sync::Mutex<Option<CertSha256>>>;

/// DEVELOPMENT ONLY: a client configuration that accepts whatever certificate the server
/// presents (its handshake signature is still checked against it) and records its SHA-256 in
/// the returned [`SeenCert`], so that the caller can pin it from then on (trust on first use).
/// Anyone on the path can impersonate the server to such a client: never use it outside a
/// development network.
pub fn insecure_client_config(
    cfg: &QuicConfig,
) -> Result<(quinn_proto::ClientConfig, SeenCert), QuicSetupError> {
    let provider = provider();
    let seen = SeenCert::default();
    let verifier = PinnedCertVerifier {
        pin: None,
        seen: Some(seen.clone()),
        provider: provider.clone(),
    };
    let mut tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(verifier))
        .with_no_client_auth();
    tls.alpn_protocols = vec![ALPN.to_vec()];
    let crypto = quinn_proto::crypto::rustls::QuicClientConfig::try_from(tls)
        .map_err(|e| QuicSetupError::Quic(e.to_string()))?;
    let mut client = quinn_proto::ClientConfig::new(Arc::new(crypto));
    client.transport_config(Arc::new(transport_config(cfg)?));
    Ok((client, seen))
}

/// Accepts a server certificate by its SHA-256 alone, and checks the handshake signature
/// against it: the pin replaces a certificate authority. Without a pin (development only:
/// [`insecure_client_config`]) any certificate is accepted and recorded in `seen`.
#[derive(Debug)]
struct PinnedCertVerifier {
    pin: Option<CertSha256>,
    seen: Option<SeenCert>,
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for PinnedCertVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let got = cert_sha256(end_entity);
        if let Some(seen) = &self.seen
            && let Ok(mut seen) = seen.lock()
        {
            *seen = Some(got);
        }
        match self.pin {
            None => Ok(ServerCertVerified::assertion()),
            Some(pin) if got == pin => Ok(ServerCertVerified::assertion()),
            Some(pin) => Err(rustls::Error::General(format!(
                "server certificate SHA-256 {} does not match the pinned {}",
                crate::ticket::to_hex(&got),
                crate::ticket::to_hex(&pin)
            ))),
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// A bound UDP socket and the buffer sizes the kernel actually granted.
#[derive(Debug)]
pub struct BoundSocket {
    /// The socket, non-blocking, ready for an endpoint.
    pub socket: std::net::UdpSocket,
    /// Receive buffer granted, bytes (the kernel may cap the request: `net.core.rmem_max`).
    pub recv_buffer: usize,
    /// Send buffer granted, bytes (`net.core.wmem_max`).
    pub send_buffer: usize,
}

/// Binds a UDP socket at `addr` with `buffer_bytes` send and receive buffers. The kernel may
/// grant less than asked (the granted sizes are returned, for the caller to log).
pub fn bind_udp_socket(addr: SocketAddr, buffer_bytes: usize) -> std::io::Result<BoundSocket> {
    use socket2::{Domain, Protocol, Socket, Type};
    let socket = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
    if addr.is_ipv6() {
        // Accept IPv4 too on an unspecified IPv6 address where the platform allows it.
        let _ = socket.set_only_v6(false);
    }
    // Ask generously; the kernel caps at its maximum, which is not an error.
    let _ = socket.set_recv_buffer_size(buffer_bytes);
    let _ = socket.set_send_buffer_size(buffer_bytes);
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    let recv_buffer = socket.recv_buffer_size()?;
    let send_buffer = socket.send_buffer_size()?;
    Ok(BoundSocket {
        socket: socket.into(),
        recv_buffer,
        send_buffer,
    })
}
