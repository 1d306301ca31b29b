//! The one recording HTTP server of the tests: it counts every TCP connection, keeps every byte
//! it was sent (even bytes that are not HTTP), logs every request it could parse, and answers
//! each one with a canned reply or one computed by the test.
//!
//! ```text
//! let server = Recorder::loopback(Answer::canned(Reply::text(404, "404 page not found\n"))).await?;
//! let api = Recorder::loopback(Answer::with(|req| if req.header("x-api-key") == Some("k") {
//!     Reply::status(200)
//! } else {
//!     Reply::status(401)
//! })).await?;
//! // ... point the code under test at server.url() ...
//! assert_eq!(server.connections(), 0, "{:?}", server.received());
//! ```
//!
//! A request is logged before it is answered, so a client that got an answer can be sure its
//! request is in [`Recorder::requests`]. HTTP/1.1 with keep-alive. Stops when dropped.

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

/// One request as the server received it.
#[derive(Clone, Debug)]
pub struct Request {
    pub method: http::Method,
    pub uri: http::Uri,
    pub headers: http::HeaderMap,
    pub body: Bytes,
}

impl Request {
    pub fn path(&self) -> &str {
        self.uri.path()
    }

    /// A header's value, if present and text.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// The query's pairs, decoded, in order.
    pub fn query(&self) -> Vec<(String, String)> {
        decode(self.uri.query().unwrap_or("").as_bytes())
    }

    /// The first query parameter `name`.
    pub fn query_param(&self, name: &str) -> Option<String> {
        self.query().into_iter().find(|(k, _)| k == name).map(|(_, v)| v)
    }

    /// The body as an `application/x-www-form-urlencoded` form.
    pub fn form(&self) -> Vec<(String, String)> {
        decode(&self.body)
    }

    /// The first form field `name`.
    pub fn form_param(&self, name: &str) -> Option<String> {
        self.form().into_iter().find(|(k, _)| k == name).map(|(_, v)| v)
    }

    /// The body as text (lossy).
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

fn decode(bytes: &[u8]) -> Vec<(String, String)> {
    form_urlencoded::parse(bytes)
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect()
}

/// An answer: status, headers, body.
#[derive(Clone, Debug)]
pub struct Reply {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Bytes,
}

impl Reply {
    /// `status` with an empty body.
    pub fn status(status: u16) -> Reply {
        Reply {
            status,
            headers: Vec::new(),
            body: Bytes::new(),
        }
    }

    /// `status` with a body of `content_type`.
    pub fn body(status: u16, content_type: &str, body: impl Into<Bytes>) -> Reply {
        Reply::status(status)
            .header("content-type", content_type)
            .with_body(body)
    }

    /// A `text/plain` answer.
    pub fn text(status: u16, body: impl Into<String>) -> Reply {
        Reply::body(status, "text/plain; charset=utf-8", body.into())
    }

    /// A `text/html` answer.
    pub fn html(status: u16, body: impl Into<String>) -> Reply {
        Reply::body(status, "text/html; charset=utf-8", body.into())
    }

    /// An `application/json` answer.
    pub fn json(status: u16, body: &serde_json::Value) -> Reply {
        Reply::body(status, "application/json", body.to_string())
    }

    /// Adds a header (repeated names are kept).
    pub fn header(mut self, name: &str, value: &str) -> Reply {
        self.headers.push((name.to_owned(), value.to_owned()));
        self
    }

    fn with_body(mut self, body: impl Into<Bytes>) -> Reply {
        self.body = body.into();
        self
    }

    fn into_response(self) -> http::Response<Full<Bytes>> {
        let mut builder = http::Response::builder().status(self.status);
        for (k, v) in &self.headers {
            builder = builder.header(k, v);
        }
        builder.body(Full::new(self.body)).unwrap_or_else(|e| {
            let mut r = http::Response::new(Full::new(Bytes::from(format!("bad canned reply: {e}"))));
            *r.status_mut() = http::StatusCode::INTERNAL_SERVER_ERROR;
            r
        })
    }
}

type BoxReply = Pin<Box<dyn Future<Output = Reply> + Send>>;

/// How the server answers: the same reply every time, or one the test computes per request.
#[derive(Clone)]
pub struct Answer(Arc<dyn Fn(Request) -> BoxReply + Send + Sync>);

impl Answer {
    /// `reply` to every request.
    pub fn canned(reply: Reply) -> Answer {
        Answer::with(move |_| reply.clone())
    }

    /// `f(request)` to every request.
    pub fn with(f: impl Fn(&Request) -> Reply + Send + Sync + 'static) -> Answer {
        Answer(Arc::new(move |req| {
            let reply = f(&req);
            Box::pin(async move { reply })
        }))
    }

    /// The reply `f(request)` resolves to (e.g. after forwarding it, or never).
    pub fn with_async<F, Fut>(f: F) -> Answer
    where
        F: Fn(Request) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Reply> + Send + 'static,
    {
        Answer(Arc::new(move |req| Box::pin(f(req))))
    }
}

/// What the server saw.
#[derive(Default)]
struct Log {
    /// Every byte received, one entry per connection, in accept order.
    connections: Mutex<Vec<Arc<Mutex<Vec<u8>>>>>,
    requests: Mutex<Vec<Request>>,
}

/// A running recording server; stops when dropped.
pub struct Recorder {
    url: String,
    addr: std::net::SocketAddr,
    log: Arc<Log>,
    task: tokio::task::JoinHandle<()>,
}

impl Recorder {
    /// Serves on a free port of `127.0.0.1`.
    pub async fn loopback(answer: Answer) -> Result<Recorder, String> {
        Self::start("127.0.0.1:0", answer).await
    }

    /// Serves on `addr` (`ip:port`; port 0 picks a free one), e.g. `127.0.0.2:0` for an address
    /// outside an allowlist of `127.0.0.1`.
    pub async fn start(addr: &str, answer: Answer) -> Result<Recorder, String> {
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|e| format!("recorder: cannot bind {addr}: {e}"))?;
        let addr = listener
            .local_addr()
            .map_err(|e| format!("recorder: local address: {e}"))?;
        let log = Arc::new(Log::default());
        let task = tokio::spawn(accept(listener, answer, log.clone()));
        Ok(Recorder {
            url: format!("http://{addr}"),
            addr,
            log,
            task,
        })
    }

    /// `http://<ip>:<port>` (no trailing slash).
    pub fn url(&self) -> &str {
        &self.url
    }

    pub fn addr(&self) -> std::net::SocketAddr {
        self.addr
    }

    /// TCP connections accepted so far.
    pub fn connections(&self) -> usize {
        lock(&self.log.connections).len()
    }

    /// Everything received so far, one entry per connection (lossy text).
    pub fn received(&self) -> Vec<String> {
        lock(&self.log.connections)
            .iter()
            .map(|bytes| String::from_utf8_lossy(&lock(bytes)).into_owned())
            .collect()
    }

    /// Every request so far, in arrival order.
    pub fn requests(&self) -> Vec<Request> {
        lock(&self.log.requests).clone()
    }

    /// The requests so far, emptying the log (connections and bytes are kept).
    pub fn take(&self) -> Vec<Request> {
        std::mem::take(&mut *lock(&self.log.requests))
    }

    /// Asserts that nothing ever reached this server (a test assertion: panics otherwise).
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

/// A poisoned lock still holds a usable log (a test that panicked while holding it has failed).
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

async fn accept(listener: tokio::net::TcpListener, answer: Answer, log: Arc<Log>) {
    while let Ok((stream, _)) = listener.accept().await {
        let bytes = Arc::new(Mutex::new(Vec::new()));
        lock(&log.connections).push(bytes.clone());
        let (answer, log) = (answer.clone(), log.clone());
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req: http::Request<Incoming>| {
                let (answer, log) = (answer.clone(), log.clone());
                async move {
                    let (parts, body) = req.into_parts();
                    let body = body.collect().await.map(|b| b.to_bytes()).unwrap_or_default();
                    let request = Request {
                        method: parts.method,
                        uri: parts.uri,
                        headers: parts.headers,
                        body,
                    };
                    lock(&log.requests).push(request.clone());
                    Ok::<_, Infallible>((answer.0)(request).await.into_response())
                }
            });
            let io = TokioIo::new(Recording { stream, bytes });
            // A client that hangs up, or sends something that is not HTTP, ends the connection.
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(io, service)
                .await;
        });
    }
}

/// A TCP stream that keeps a copy of every byte read from it.
struct Recording {
    stream: TcpStream,
    bytes: Arc<Mutex<Vec<u8>>>,
}

impl AsyncRead for Recording {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let polled = Pin::new(&mut this.stream).poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = polled {
            lock(&this.bytes).extend_from_slice(&buf.filled()[before..]);
        }
        polled
    }
}

impl AsyncWrite for Recording {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, data: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().stream).poll_write(cx, data)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_shutdown(cx)
    }
}
