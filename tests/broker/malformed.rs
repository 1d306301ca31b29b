//! Malformed exchanges and slow clients: refused with a clear error, and cut off.

use super::*;

#[tokio::test]
async fn malformed_exchanges_are_refused_with_a_clear_error() {
    let env = setup("broker-malformed").await;
    let s = stack();
    let (client, ns, _, _) = env.parts();
    service_account(client, ns, "agent", &["use"], None).await;
    let agent = token(client, ns, "agent", Some(AUDIENCE)).await;
    let url = format!("{}/token", s.operator.broker_url);
    let http = reqwest::Client::new();
    let res = named(ns, "x");

    let no_grant = post(
        http.post(&url)
            .form(&[("subject_token", agent.as_str()), ("resource", &res)]),
    )
    .await;
    assert_eq!(refused(&no_grant, 400), "invalid_request");
    assert!(
        no_grant.1["error_description"]
            .as_str()
            .unwrap()
            .contains("grant_type")
    );
    let wrong_grant = post(http.post(&url).form(&[("grant_type", "client_credentials")])).await;
    assert_eq!(refused(&wrong_grant, 400), "unsupported_grant_type");
    let twice = exchange(&agent, &[("resource", &res), ("resource", &named(ns, "y"))]).await;
    assert_eq!(refused(&twice, 400), "invalid_request");
    let bad_resource = exchange(&agent, &[("resource", "https://evil.example/x")]).await;
    assert_eq!(refused(&bad_resource, 400), "invalid_request");
    let json_body = post(http.post(&url).json(&json!({"grant_type": EXCHANGE}))).await;
    assert_eq!(refused(&json_body, 415), "invalid_request");
    let huge = "a".repeat(64 * 1024);
    let oversized = post(
        http.post(&url)
            .header("content-type", "application/x-www-form-urlencoded")
            .body(format!("grant_type={EXCHANGE}&subject_token={huge}")),
    )
    .await;
    assert_eq!(refused(&oversized, 413), "invalid_request");
    let garbage = post(
        http.post(&url)
            .header("content-type", "application/x-www-form-urlencoded")
            .body(vec![0xff, 0xfe, b'%', b'=', 0x00, b'&', b'&']),
    )
    .await;
    assert_eq!(refused(&garbage, 400), "invalid_request");
    // The token is never echoed in an answer.
    let echoed = exchange(&agent, &[("resource", "agentauth://UPPER/x")]).await;
    assert!(!echoed.1.to_string().contains(&agent));
    let elsewhere = post(http.get(format!("{}/connect/x", s.operator.broker_url))).await;
    assert_eq!(elsewhere.0, 400, "the broker serves no gateway route");
}

/// Anything that reaches the broker port can open connections: headers that never finish, a body
/// that never arrives and a connection that stays idle are all cut off within seconds, so that no
/// one holds the process's connections (and file descriptors, shared with the controllers).
#[tokio::test]
async fn slow_and_idle_clients_are_cut_off() {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let addr = stack()
        .operator
        .broker_url
        .trim_start_matches("http://")
        .to_owned();
    let open = |first: &'static [u8]| {
        let addr = addr.clone();
        async move {
            let mut c = tokio::net::TcpStream::connect(addr).await.unwrap();
            c.write_all(first).await.unwrap();
            c
        }
    };
    let clients = [
        ("headers", open(b"POST /token HTTP/1.1\r\nHost: broker\r\n").await),
        (
            "body",
            open(
                b"POST /token HTTP/1.1\r\nHost: broker\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: 100\r\n\r\ngrant_type=",
            )
            .await,
        ),
        ("idle", open(b"").await),
    ];
    let cut = clients.into_iter().map(|(what, mut c)| async move {
        let mut answer = Vec::new();
        let closed = tokio::time::timeout(Duration::from_secs(15), c.read_to_end(&mut answer)).await;
        assert!(
            closed.is_ok(),
            "a slow client ({what}) still holds its connection after 15 s"
        );
        (what, String::from_utf8_lossy(&answer).into_owned())
    });
    for (what, answer) in futures::future::join_all(cut).await {
        if what == "body" {
            assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
            assert!(answer.contains("invalid_request"), "{answer}");
        }
    }
}
