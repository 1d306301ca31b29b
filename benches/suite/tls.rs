//! TLS termination in front of the gateway, as the chart's Ingress (`ingress.tls`) does it: nginx
//! (Debian's package; the server ingress-nginx runs) terminates TLS and proxies to the gateway over
//! keep-alive HTTP/1.1. It serves the test control plane's loopback certificate (`apiserver.crt`,
//! signed by the cluster's `ca.crt`), so clients can verify it.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use agentauth_testcluster::{Proc, free_port};

use crate::harness::Res;

const NGINX: &str = "/usr/sbin/nginx";

/// Whether nginx is installed (`scripts/install-deps.sh` installs it).
pub fn available() -> bool {
    Path::new(NGINX).is_file()
}

/// A running nginx terminating TLS at [`TlsFront::url`] for one upstream. Dropping it stops nginx.
pub struct TlsFront {
    _proc: Proc,
    /// `https://127.0.0.1:<port>`.
    pub url: String,
    /// The CA that signed the served certificate.
    pub ca: PathBuf,
}

impl TlsFront {
    /// Starts nginx in front of `upstream` (`http://host:port`), with its files under
    /// `cluster_dir/nginx`, and waits until it accepts connections.
    pub async fn start(cluster_dir: &Path, upstream: &str) -> Res<TlsFront> {
        let upstream = upstream
            .strip_prefix("http://")
            .ok_or_else(|| format!("upstream {upstream} is not http://host:port"))?;
        let work = cluster_dir.join("nginx");
        std::fs::create_dir_all(&work).map_err(|e| format!("cannot create {}: {e}", work.display()))?;
        let port = free_port()?;
        let conf = config(&work, cluster_dir, upstream, port);
        let conf_path = work.join("nginx.conf");
        std::fs::write(&conf_path, conf).map_err(|e| e.to_string())?;
        let args = [
            "-p".to_owned(),
            work.display().to_string(),
            "-e".to_owned(),
            work.join("error.log").display().to_string(),
            "-c".to_owned(),
            conf_path.display().to_string(),
        ];
        let mut proc = Proc::spawn(cluster_dir, "nginx", Path::new(NGINX), &args, &[])?;
        let addr = format!("127.0.0.1:{port}");
        let deadline = Instant::now() + Duration::from_secs(10);
        while tokio::net::TcpStream::connect(&addr).await.is_err() {
            if let Some(status) = proc.exited() {
                return Err(format!("nginx exited ({status}):\n{}", proc.log_tail(20)));
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "nginx not listening on {addr} after 10 s:\n{}",
                    proc.log_tail(20)
                ));
            }
            tokio::time::sleep(Duration::from_millis(50)).await; // poll interval
        }
        Ok(TlsFront {
            _proc: proc,
            url: format!("https://{addr}"),
            ca: cluster_dir.join("ca.crt"),
        })
    }
}

/// One process (no master: the test launcher's parent-death signal then covers it), one worker's
/// worth of connections, no access log; TLS 1.2/1.3 and upstream keep-alive as ingress-nginx sets.
fn config(work: &Path, cluster_dir: &Path, upstream: &str, port: u16) -> String {
    let (w, c) = (work.display(), cluster_dir.display());
    format!(
        r#"daemon off;
master_process off;
pid {w}/nginx.pid;
error_log {w}/error.log warn;
worker_rlimit_nofile 8192;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    client_body_temp_path {w}/body;
    proxy_temp_path {w}/proxy;
    fastcgi_temp_path {w}/fastcgi;
    uwsgi_temp_path {w}/uwsgi;
    scgi_temp_path {w}/scgi;
    upstream gateway {{
        server {upstream};
        keepalive 64;
    }}
    server {{
        listen 127.0.0.1:{port} ssl;
        ssl_certificate {c}/apiserver.crt;
        ssl_certificate_key {c}/apiserver.key;
        ssl_protocols TLSv1.2 TLSv1.3;
        ssl_session_cache shared:SSL:10m;
        location / {{
            proxy_pass http://gateway;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Host $host;
            proxy_set_header X-Forwarded-For $remote_addr;
            proxy_set_header X-Forwarded-Proto https;
        }}
    }}
}}
"#
    )
}
