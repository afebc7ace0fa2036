//! `--tls-cert`/`--tls-key`: REST and WebSocket over TLS on the same port, with a real TLS
//! client (rustls) and a certificate made for the test.

mod common;

use bookcast::config::Config;
use common::*;
use futures_util::StreamExt;
use std::sync::Arc;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::rustls::pki_types::{CertificateDer, ServerName};
use tokio_rustls::rustls::{ClientConfig, RootCertStore};
use tokio_rustls::TlsConnector;
use tokio_tungstenite::tungstenite::Message;

struct TestCert {
    der: CertificateDer<'static>,
    dir: std::path::PathBuf,
}

fn make_cert() -> TestCert {
    let certified = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
    let dir = std::env::temp_dir().join(format!("bookcast-tls-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("cert.pem"), certified.cert.pem()).unwrap();
    std::fs::write(dir.join("key.pem"), certified.signing_key.serialize_pem()).unwrap();
    TestCert {
        der: certified.cert.der().clone(),
        dir,
    }
}

fn connector(cert: &TestCert) -> TlsConnector {
    let mut roots = RootCertStore::empty();
    roots.add(cert.der.clone()).unwrap();
    let provider = Arc::new(tokio_rustls::rustls::crypto::ring::default_provider());
    let config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    TlsConnector::from(Arc::new(config))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rest_and_streams_over_tls() {
    let cert = make_cert();
    let config = Config {
        tls_cert: Some(cert.dir.join("cert.pem")),
        tls_key: Some(cert.dir.join("key.pem")),
        ..Config::default()
    };
    let server = TestServer::start(config).await;
    let connector = connector(&cert);
    let name = ServerName::try_from("localhost").unwrap();

    // REST over HTTPS.
    let tcp = TcpStream::connect(server.addr).await.unwrap();
    let mut tls = connector.connect(name.clone(), tcp).await.unwrap();
    tls.write_all(b"GET /api/v3/ping HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut response = String::new();
    tls.read_to_string(&mut response).await.unwrap_or_default();
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    assert!(response.ends_with("{}"), "{response}");

    // A stream over wss://, with a real local book check on the way: diffs are continuous.
    let tcp = TcpStream::connect(server.addr).await.unwrap();
    let tls = connector.connect(name, tcp).await.unwrap();
    let (mut ws, _) = tokio_tungstenite::client_async("wss://localhost/ws/btcusdt@depth@0ms", tls)
        .await
        .unwrap();
    let mut last = 0u64;
    for _ in 0..20 {
        let message = tokio::time::timeout(PATIENCE, ws.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        let Message::Text(text) = message else {
            continue;
        };
        let event: serde_json::Value = serde_json::from_str(&text).unwrap();
        let (first, u) = (event["U"].as_u64().unwrap(), event["u"].as_u64().unwrap());
        assert!(last == 0 || first == last + 1, "gap over TLS");
        last = u;
    }

    // A plain-text client on the TLS port gets nothing it can mistake for a response.
    let (status, body) = server.get("/api/v3/ping").await;
    assert_eq!(
        (status, body.as_str()),
        (0, ""),
        "plain HTTP on the TLS port gets no HTTP response"
    );
    drop(ws);
    server.stop().await;
    let _ = std::fs::remove_dir_all(&cert.dir);
}
