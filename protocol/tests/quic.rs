//! The QUIC helpers against real quinn endpoints on loopback: a pinned client reaches a server
//! with a generated development certificate, exchanges a framed hello and a datagram; a client
//! pinning another fingerprint is refused with a message naming both fingerprints.

use meridian_protocol::codec;
use meridian_protocol::datagram::{ClientDatagramMsg, PingMsg};
use meridian_protocol::frame::{self, DEFAULT_MAX_FRAME};
use meridian_protocol::handshake;
use meridian_protocol::lobby::LobbyHelloMsg;
use meridian_protocol::quic::{self, CertificateMaterial, QuicConfig};
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;

fn loopback() -> SocketAddr {
    (Ipv4Addr::LOCALHOST, 0).into()
}

fn endpoint(server: Option<quinn::ServerConfig>) -> quinn::Endpoint {
    let bound = quic::bind_udp_socket(loopback(), quic::DEFAULT_SOCKET_BUFFER).expect("bind");
    quinn::Endpoint::new(
        quinn::EndpointConfig::default(),
        server,
        bound.socket,
        Arc::new(quinn::TokioRuntime),
    )
    .expect("endpoint")
}

#[tokio::test]
async fn pinned_client_talks_to_dev_server() {
    let cert = CertificateMaterial::generate_dev(&["localhost"]).expect("cert");
    let cfg = QuicConfig::default();
    let server = endpoint(Some(
        quic::server_config(&cert, &cfg).expect("server config"),
    ));
    let addr = server.local_addr().expect("addr");

    let server_task = tokio::spawn(async move {
        let conn = server
            .accept()
            .await
            .expect("incoming")
            .await
            .expect("handshake");
        assert_eq!(
            conn.handshake_data()
                .and_then(|d| d.downcast::<quinn::crypto::rustls::HandshakeData>().ok())
                .and_then(|d| d.protocol),
            Some(quic::ALPN.to_vec())
        );
        let (mut send, mut recv) = conn.accept_bi().await.expect("stream");
        let mut header = [0u8; frame::HEADER_LEN];
        recv.read_exact(&mut header).await.expect("header");
        let len = frame::parse_header(header, DEFAULT_MAX_FRAME).expect("size");
        let mut payload = vec![0; len];
        recv.read_exact(&mut payload).await.expect("payload");
        handshake::check_version(&payload).expect("same version");
        let hello: LobbyHelloMsg =
            frame::decode_payload(&payload, DEFAULT_MAX_FRAME).expect("hello");
        let datagram = conn.read_datagram().await.expect("datagram");
        let ping: ClientDatagramMsg = codec::decode(&datagram, 2048).expect("ping");
        send.write_all(b"ok").await.expect("reply");
        send.finish().expect("finish");
        conn.closed().await;
        (hello.name, ping)
    });

    let mut client = endpoint(None);
    client.set_default_client_config(
        quic::client_config(cert.sha256(), &cfg).expect("client config"),
    );
    let conn = client
        .connect(addr, quic::SERVER_NAME)
        .expect("connect")
        .await
        .expect("handshake");
    assert!(conn.max_datagram_size().is_some(), "datagrams are enabled");
    let (mut send, mut recv) = conn.open_bi().await.expect("stream");
    let mut buf = Vec::new();
    let hello = LobbyHelloMsg {
        protocol_version: meridian_protocol::PROTOCOL_VERSION,
        name: "ann".into(),
        resume: None,
    };
    frame::encode_frame(&hello, DEFAULT_MAX_FRAME, &mut buf).expect("frame");
    send.write_all(&buf).await.expect("send");
    let ping = ClientDatagramMsg::Ping(PingMsg { nonce: 42 });
    conn.send_datagram(codec::encode(&ping).expect("encode").into())
        .expect("datagram");
    let reply = recv.read_to_end(16).await.expect("reply");
    assert_eq!(reply, b"ok");
    conn.close(0u32.into(), b"done");
    let (name, got) = server_task.await.expect("server");
    assert_eq!(name, "ann");
    assert_eq!(got, ping);
}

#[tokio::test]
async fn wrong_pin_is_refused_naming_both_fingerprints() {
    let cert = CertificateMaterial::generate_dev(&["localhost"]).expect("cert");
    let cfg = QuicConfig::default();
    let server = endpoint(Some(
        quic::server_config(&cert, &cfg).expect("server config"),
    ));
    let addr = server.local_addr().expect("addr");
    tokio::spawn(async move {
        if let Some(incoming) = server.accept().await {
            let _ = incoming.await;
        }
    });
    let mut client = endpoint(None);
    let wrong = [7u8; 32];
    client.set_default_client_config(quic::client_config(wrong, &cfg).expect("client config"));
    let err = client
        .connect(addr, quic::SERVER_NAME)
        .expect("connect")
        .await
        .expect_err("pin mismatch");
    let text = err.to_string();
    assert!(text.contains("does not match the pinned"), "{text}");
    assert!(
        text.contains(&meridian_protocol::ticket::to_hex(&wrong)),
        "{text}"
    );
}

#[test]
fn socket_buffers_are_as_large_as_the_kernel_allows() {
    let want = quic::DEFAULT_SOCKET_BUFFER;
    let bound = quic::bind_udp_socket(loopback(), want).expect("bind");
    // Linux grants min(request, net.core.rmem_max) and reports twice that.
    let cap = |path: &str| {
        std::fs::read_to_string(path)
            .ok()
            .and_then(|s| s.trim().parse::<usize>().ok())
            .unwrap_or(want)
    };
    assert!(
        bound.recv_buffer >= want.min(cap("/proc/sys/net/core/rmem_max")),
        "{bound:?}"
    );
    assert!(
        bound.send_buffer >= want.min(cap("/proc/sys/net/core/wmem_max")),
        "{bound:?}"
    );
}

#[test]
fn bad_timeouts_and_missing_files_are_named() {
    let cfg = QuicConfig {
        keep_alive_ms: 5000,
        idle_timeout_ms: 5000,
        ..QuicConfig::default()
    };
    let err = quic::transport_config(&cfg).expect_err("idle must exceed keep-alive");
    assert!(err.to_string().contains("5000"), "{err}");
    let err = CertificateMaterial::load_pem(
        "/nonexistent/cert.pem".as_ref(),
        "/nonexistent/key.pem".as_ref(),
    )
    .expect_err("missing");
    assert!(err.to_string().contains("/nonexistent/cert.pem"), "{err}");
}

#[test]
fn pem_files_load_and_keep_their_fingerprint() {
    let cert = rcgen_pem();
    let dir = std::env::temp_dir().join(format!("meridian-pem-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let (c, k) = (dir.join("cert.pem"), dir.join("key.pem"));
    std::fs::write(&c, &cert.0).expect("write");
    std::fs::write(&k, &cert.1).expect("write");
    let loaded = CertificateMaterial::load_pem(&c, &k).expect("load");
    assert_eq!(loaded.chain.len(), 1);
    let err = CertificateMaterial::load_pem(&k, &k).expect_err("a key is not a certificate");
    assert!(err.to_string().contains("key.pem"), "{err}");
    std::fs::remove_dir_all(&dir).expect("cleanup");
}

fn rcgen_pem() -> (String, String) {
    let c = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).expect("cert");
    (c.cert.pem(), c.signing_key.serialize_pem())
}

#[tokio::test]
async fn insecure_client_accepts_any_certificate_and_records_it() {
    let cert = CertificateMaterial::generate_dev(&["localhost"]).expect("cert");
    let cfg = QuicConfig::default();
    let server = endpoint(Some(
        quic::server_config(&cert, &cfg).expect("server config"),
    ));
    let addr = server.local_addr().expect("addr");
    tokio::spawn(async move {
        while let Some(incoming) = server.accept().await {
            tokio::spawn(async move {
                if let Ok(conn) = incoming.await {
                    conn.closed().await;
                }
            });
        }
    });
    let client = endpoint(None);
    let (config, seen) = quic::insecure_client_config(&cfg).expect("client config");
    assert_eq!(
        *seen.lock().expect("lock"),
        None,
        "nothing seen before a handshake"
    );
    let conn = client
        .connect_with(config, addr, quic::SERVER_NAME)
        .expect("connect")
        .await
        .expect("any certificate is accepted");
    assert_eq!(
        *seen.lock().expect("lock"),
        Some(cert.sha256()),
        "the certificate accepted is the server's"
    );
    // Pinned from then on, the same server is reached as usual.
    let pinned = client
        .connect_with(
            quic::client_config(cert.sha256(), &cfg).expect("pinned config"),
            addr,
            quic::SERVER_NAME,
        )
        .expect("connect")
        .await;
    assert!(pinned.is_ok(), "{pinned:?}");
    conn.close(0u32.into(), b"done");
}
