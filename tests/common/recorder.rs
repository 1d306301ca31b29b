//! An attacker's (or an internal service's) endpoint for the tenancy tests: a raw TCP server that
//! counts every connection and keeps every byte it was sent, and answers every request with a
//! plausible token response (plus a banner in its body), so that a leak or a read channel would
//! show up in what the operator stores or reports.
#![allow(dead_code)]

use std::sync::{Arc, Mutex};

use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Text in every answer; it must never appear in status, Events or pages.
pub const BANNER: &str = "INTERNAL-BANNER-7731";

pub struct Recorder {
    /// `http://<ip>:<port>`.
    pub url: String,
    pub port: u16,
    connections: Arc<Mutex<usize>>,
    received: Arc<Mutex<Vec<String>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Recorder {
    /// Listens on `ip` (`127.0.0.1` is on the test operator's egress allowlist; `127.0.0.2` is not).
    pub async fn start(ip: &str) -> Recorder {
        let listener = tokio::net::TcpListener::bind(format!("{ip}:0")).await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let connections = Arc::new(Mutex::new(0));
        let received = Arc::new(Mutex::new(Vec::new()));
        let (c, r) = (connections.clone(), received.clone());
        let task = tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                *c.lock().unwrap() += 1;
                let r = r.clone();
                tokio::spawn(async move {
                    let mut buf = vec![0u8; 64 * 1024];
                    let n = stream.read(&mut buf).await.unwrap_or(0);
                    r.lock()
                        .unwrap()
                        .push(String::from_utf8_lossy(&buf[..n]).into_owned());
                    let body = format!(
                        r#"{{"access_token":"attacker-{BANNER}","token_type":"Bearer","expires_in":3600,"refresh_token":"x","error_description":"{BANNER}"}}"#
                    );
                    let resp = format!(
                        "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                        body.len()
                    );
                    let _ = stream.write_all(resp.as_bytes()).await;
                });
            }
        });
        Recorder {
            url: format!("http://{ip}:{port}"),
            port,
            connections,
            received,
            task,
        }
    }

    /// Connections accepted so far.
    pub fn connections(&self) -> usize {
        *self.connections.lock().unwrap()
    }

    /// Everything received, one entry per connection.
    pub fn received(&self) -> Vec<String> {
        self.received.lock().unwrap().clone()
    }

    /// Asserts that nothing ever reached this endpoint.
    pub fn assert_untouched(&self, what: &str) {
        assert_eq!(
            self.connections(),
            0,
            "{what}: the endpoint received {:?}",
            self.received()
        );
    }
}

impl Drop for Recorder {
    fn drop(&mut self) {
        self.task.abort();
    }
}
