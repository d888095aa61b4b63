//! The transport against a real server on 127.0.0.1: headers dripped too
//! slowly, idle connections over the cap, enrollment codes guessed in a
//! hurry, and HTTPS with a certificate made for the test.

use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::Value;
use tests::TestServer;

/// `GET /v1/health` over a new connection: the status.
fn health(server: &TestServer) -> u16 {
    TestServer::agent()
        .get(format!("{}/v1/health", server.url()))
        .call()
        .expect("the server answers")
        .status()
        .as_u16()
}

/// Whether the server closed `stream` (EOF or a reset) within `within`,
/// reading in short bounded waits; any bytes it sends first are skipped.
fn closed_within(stream: &mut TcpStream, within: Duration) -> bool {
    stream.set_read_timeout(Some(Duration::from_millis(100))).unwrap();
    let start = Instant::now();
    let mut buf = [0u8; 1024];
    while start.elapsed() < within {
        match stream.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => continue,
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => continue,
            Err(_) => return true,
        }
    }
    false
}

#[test]
fn headers_dripped_slowly_are_cut_off_and_others_are_served_meanwhile() {
    let timeout = Duration::from_secs(1);
    let limits = server::state::Limits { header_read_timeout: timeout, ..Default::default() };
    let server = TestServer::start_with(limits);
    let addr = server.addr.unwrap();

    // A partial request line, then nothing.
    let mut silent = TcpStream::connect(addr).unwrap();
    silent.write_all(b"POST /v1/sync HT").unwrap();
    let started = Instant::now();
    // An honest request on another connection is served meanwhile.
    assert_eq!(health(&server), 200);
    assert!(closed_within(&mut silent, 10 * timeout), "a silent connection is closed");
    assert!(started.elapsed() >= timeout / 2, "closed for its deadline, not at once");

    // Headers dripped a byte every 200 ms: every byte comes in time, the
    // whole header does not.
    let mut drip = TcpStream::connect(addr).unwrap();
    drip.set_read_timeout(Some(Duration::from_millis(200))).unwrap();
    let header = b"GET /v1/health HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n\r\n";
    let started = Instant::now();
    let mut closed = false;
    let mut buf = [0u8; 256];
    for byte in header.iter().take(60) {
        if drip.write_all(&[*byte]).is_err() {
            closed = true;
            break;
        }
        match drip.read(&mut buf) {
            Ok(0) => {
                closed = true;
                break;
            }
            Ok(_) => {}
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(_) => {
                closed = true;
                break;
            }
        }
    }
    assert!(closed, "a dripping client is cut off (after {:?})", started.elapsed());
    assert!(started.elapsed() < 10 * timeout);
    assert_eq!(health(&server), 200, "the server goes on");
}

#[test]
fn connections_over_the_cap_wait_until_one_closes() {
    let limits = server::state::Limits { max_connections: 4, ..Default::default() };
    let server = TestServer::start_with(limits);
    let addr = server.addr.unwrap();
    let mut idle: Vec<TcpStream> = (0..4).map(|_| TcpStream::connect(addr).unwrap()).collect();
    std::thread::sleep(Duration::from_millis(300));

    // The fifth connection is not served while four are open...
    let mut fifth = TcpStream::connect(addr).unwrap();
    fifth.write_all(b"GET /v1/health HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n").unwrap();
    fifth.set_read_timeout(Some(Duration::from_millis(800))).unwrap();
    let mut answer = Vec::new();
    let early = fifth.read_to_end(&mut answer);
    assert!(
        early.is_err() && answer.is_empty(),
        "no answer over the cap: {:?}",
        String::from_utf8_lossy(&answer)
    );

    // ...and is once one of them closes.
    drop(idle.pop());
    fifth.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    fifth.read_to_end(&mut answer).expect("answered once a connection closed");
    let text = String::from_utf8_lossy(&answer);
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
}

/// `POST /v1/enroll` with a code: status, `Retry-After`, JSON answer.
fn enroll(server: &TestServer, code: &str) -> (u16, Option<String>, Value) {
    let mut resp = TestServer::agent()
        .post(format!("{}/v1/enroll", server.url()))
        .send_json(serde_json::json!({ "code": code }))
        .expect("the server answers");
    let retry_after = resp.headers().get("retry-after").map(|v| v.to_str().unwrap().to_owned());
    (resp.status().as_u16(), retry_after, resp.body_mut().read_json().unwrap_or(Value::Null))
}

#[test]
fn guessing_enrollment_codes_is_throttled_per_address() {
    let limits = server::state::Limits { enroll_per_minute_per_address: 5, ..Default::default() };
    let server = TestServer::start_with(limits);
    // Successful enrollments give their attempt back: a room of surveyors
    // behind one address is not held up.
    for n in 0..8 {
        let (_, code) = server.add_device(&format!("tablet {n}"), &["nhu-co"]);
        assert_eq!(enroll(&server, &code).0, 200, "enrollment {n}");
    }
    let (_, kept) = server.add_device("tablet kept", &["nhu-co"]);
    let mut statuses = Vec::new();
    for _ in 0..6 {
        let (status, retry_after, answer) = enroll(&server, "ABCD-EFGH-JKMN");
        statuses.push(status);
        if status == 429 {
            let secs: u64 = retry_after.expect("Retry-After").parse().expect("whole seconds");
            assert!((1..=60).contains(&secs), "Retry-After {secs}");
            assert_eq!(answer["error"]["code"], "too_many_requests", "{answer}");
            assert!(answer["error"]["message"].as_str().is_some_and(|m| !m.is_empty()), "{answer}");
            assert!(answer["error"]["document"].is_null());
            break;
        }
        assert_eq!(answer["error"]["code"], "invalid_enrollment_code", "{answer}");
    }
    assert_eq!(statuses, [401, 401, 401, 401, 401, 429], "five guesses, then 429");
    // Even the right code waits now, and nothing was spent.
    assert_eq!(enroll(&server, &kept).0, 429);
    assert_eq!(health(&server), 200);
}

/// A self-signed certificate for 127.0.0.1, written as PEM files; their paths.
fn certificate(dir: &std::path::Path) -> (std::path::PathBuf, std::path::PathBuf, String) {
    let made = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_owned(), "localhost".to_owned()])
        .expect("a certificate");
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    std::fs::write(&cert, made.cert.pem()).unwrap();
    std::fs::write(&key, made.signing_key.serialize_pem()).unwrap();
    (cert, key, made.cert.pem())
}

/// An agent that trusts only `cert_pem`.
fn trusting(cert_pem: &str) -> ureq::Agent {
    let cert = ureq::tls::Certificate::from_pem(cert_pem.as_bytes()).expect("PEM");
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(30)))
        .tls_config(
            ureq::tls::TlsConfig::builder()
                .root_certs(ureq::tls::RootCerts::Specific(Arc::new(vec![cert])))
                .build(),
        )
        .build()
        .into()
}

#[test]
fn the_server_speaks_https_with_a_pem_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let (cert, key, cert_pem) = certificate(dir.path());
    let tls = server::TlsConfig::from_pem_files(&cert, &key).expect("the PEM files load");
    let server = TestServer::start_tls(server::state::Limits::default(), tls, &cert_pem);
    assert!(server.url().starts_with("https://127.0.0.1:"));
    let agent = trusting(&cert_pem);

    let mut resp = agent.get(format!("{}/v1/health", server.url())).call().expect("HTTPS answers");
    assert_eq!(resp.status().as_u16(), 200);
    assert_eq!(resp.body_mut().read_json::<Value>().unwrap()["status"], "ok");
    let mut resp = agent
        .post(format!("{}/v1/enroll", server.url()))
        .send_json(serde_json::json!({ "code": "ABCD-EFGH-JKMN" }))
        .expect("HTTPS answers");
    assert_eq!(resp.status().as_u16(), 401);
    assert_eq!(resp.body_mut().read_json::<Value>().unwrap()["error"]["code"], "invalid_enrollment_code");

    // Plain HTTP on the TLS port gets no answer.
    let plain = TestServer::agent().get(format!("http://{}/v1/health", server.addr.unwrap())).call();
    assert!(plain.is_err() || plain.unwrap().status().as_u16() != 200);
    // A client that does not trust the certificate is refused.
    assert!(TestServer::agent().get(format!("{}/v1/health", server.url())).call().is_err());
}

#[test]
fn unusable_tls_files_are_named() {
    let dir = tempfile::tempdir().unwrap();
    let (cert, key, _) = certificate(dir.path());
    let missing = dir.path().join("nope.pem");
    let err = server::TlsConfig::from_pem_files(&missing, &key).unwrap_err().to_string();
    assert!(err.contains("nope.pem") && err.contains("certificate"), "{err}");
    let junk = dir.path().join("junk.pem");
    std::fs::write(&junk, "not a key").unwrap();
    let err = server::TlsConfig::from_pem_files(&cert, &junk).unwrap_err().to_string();
    assert!(err.contains("junk.pem") && err.contains("not usable PEM"), "{err}");
    let err = server::TlsConfig::from_pem_files(&junk, &key).unwrap_err().to_string();
    assert!(err.contains("junk.pem") && err.contains("certificate"), "{err}");
    // A key that is not the certificate's.
    let (_, other_key, _) = certificate(&{
        let d = dir.path().join("other");
        std::fs::create_dir(&d).unwrap();
        d
    });
    let err = server::TlsConfig::from_pem_files(&cert, &other_key).unwrap_err().to_string();
    assert!(err.contains("cert.pem") && err.contains("key.pem"), "{err}");
}

#[test]
fn a_field_device_enrolls_and_pulls_over_https_trusting_a_private_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let (cert, key, cert_pem) = certificate(dir.path());
    let tls = server::TlsConfig::from_pem_files(&cert, &key).expect("the PEM files load");
    let server = TestServer::start_tls(server::state::Limits::default(), tls, &cert_pem);
    let root = tempfile::tempdir().unwrap();

    // Without the certificate the device does not trust the server.
    let (_, code) = server.add_device("tablet-a", &["nhu-co"]);
    let refused = cli::device::Device::init(&root.path().join("a"), &server.url(), &code, None, None);
    let err = refused.err().expect("an untrusted certificate is refused").to_string();
    assert!(err.to_lowercase().contains("certificate") || err.contains("issuer"), "{err}");

    // With it, the device enrolls, keeps it, and syncs.
    let mut device = cli::device::Device::init_trusting(
        &root.path().join("a"),
        &server.url(),
        &code,
        None,
        None,
        Some(&cert_pem),
    )
    .expect("enrolls over HTTPS");
    device.pull(&tests::quick()).expect("pulls over HTTPS");
    assert!(!device.document_ids().unwrap().is_empty());
    let mut reopened = cli::device::Device::open(&root.path().join("a")).expect("opens");
    reopened.sync(&tests::quick()).expect("syncs over HTTPS after reopening");
}
