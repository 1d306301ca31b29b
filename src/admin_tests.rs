//! `/metrics` against a mocked API server that answers TokenReviews and SubjectAccessReviews: what
//! each kind of scraper gets, and which reviews it costs.
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};

use axum::body::Body;
use axum::http::{Request, StatusCode};
use tower::ServiceExt as _;

use super::*;

/// A token of user `good` that lives an hour (acceptances are kept no longer than a token lives).
fn good() -> String {
    use base64::Engine as _;
    let exp = jiff::Timestamp::now().as_second() + 3600;
    let claims = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(format!("{{\"exp\":{exp}}}"));
    format!("good.{claims}.sig")
}

/// Tokens the mocked API server knows: `good…` may get /metrics, `plain` is a valid user without
/// the grant, `broken` makes it fail; every other token is unknown.
fn api_server() -> (kube::Client, Arc<AtomicUsize>) {
    let (service, mut handle) =
        tower_test::mock::pair::<http::Request<kube::client::Body>, http::Response<kube::client::Body>>();
    let calls = Arc::new(AtomicUsize::new(0));
    let seen = calls.clone();
    tokio::spawn(async move {
        while let Some((request, send)) = handle.next_request().await {
            seen.fetch_add(1, SeqCst);
            let path = request.uri().path().to_owned();
            let body = http_body_util::BodyExt::collect(request.into_body())
                .await
                .map(|b| b.to_bytes())
                .unwrap_or_default();
            let review: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
            let (status, answer) = if path.ends_with("/tokenreviews") {
                match review["spec"]["token"].as_str() {
                    Some("broken") => (500, serde_json::json!({"kind": "Status", "code": 500})),
                    Some(t) if t.starts_with("good") || t == "plain" => (
                        201,
                        serde_json::json!({"kind": "TokenReview", "spec": {},
                            "status": {"authenticated": true, "user": {"username": &t[..4]}}}),
                    ),
                    _ => (
                        201,
                        serde_json::json!({"kind": "TokenReview", "spec": {}, "status": {"authenticated": false}}),
                    ),
                }
            } else {
                let allowed = review["spec"]["user"] == "good"
                    && review["spec"]["nonResourceAttributes"]
                        == serde_json::json!({"path": "/metrics", "verb": "get"});
                (
                    201,
                    serde_json::json!({"kind": "SubjectAccessReview", "spec": {}, "status": {"allowed": allowed}}),
                )
            };
            let mut response = http::Response::new(kube::client::Body::from(answer.to_string().into_bytes()));
            *response.status_mut() = http::StatusCode::from_u16(status).unwrap();
            send.send_response(response);
        }
    });
    (kube::Client::new(service, "default"), calls)
}

fn admin(guard: Option<MetricsGuard>) -> Router {
    let (_, ready) = tokio::sync::watch::channel(true);
    router(Admin {
        ready,
        also: Arc::new(|| true),
        metrics: Arc::new(Metrics::new()),
        guard,
    })
}

async fn get(app: &Router, path: &str, token: Option<&str>) -> StatusCode {
    let mut request = Request::get(path);
    if let Some(t) = token {
        request = request.header("authorization", format!("Bearer {t}"));
    }
    let response = app
        .clone()
        .oneshot(request.body(Body::empty()).unwrap())
        .await
        .unwrap();
    response.status()
}

#[tokio::test]
async fn a_scrape_needs_a_token_the_cluster_accepts_and_allows() {
    let (client, calls) = api_server();
    let app = admin(Some(MetricsGuard::new(client)));
    assert_eq!(get(&app, "/metrics", None).await, StatusCode::UNAUTHORIZED);
    assert_eq!(calls.load(SeqCst), 0, "no token, no review");
    assert_eq!(
        get(&app, "/metrics", Some("unknown")).await,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(get(&app, "/metrics", Some("plain")).await, StatusCode::FORBIDDEN);
    assert_eq!(
        get(&app, "/metrics", Some("broken")).await,
        StatusCode::SERVICE_UNAVAILABLE
    );
    assert_eq!(get(&app, "/metrics", Some(&good())).await, StatusCode::OK);
    // Probes stay open.
    assert_eq!(get(&app, "/healthz", None).await, StatusCode::OK);
    assert_eq!(get(&app, "/readyz", None).await, StatusCode::OK);
}

#[tokio::test]
async fn answers_are_reused_and_failures_are_not() {
    let (client, calls) = api_server();
    let app = admin(Some(MetricsGuard::new(client)));
    for token in [good().as_str(), "plain", "unknown"] {
        let first = get(&app, "/metrics", Some(token)).await;
        let before = calls.load(SeqCst);
        assert_eq!(get(&app, "/metrics", Some(token)).await, first);
        assert_eq!(
            calls.load(SeqCst),
            before,
            "{token}: the second scrape asked again"
        );
    }
    get(&app, "/metrics", Some("broken")).await;
    let before = calls.load(SeqCst);
    assert_eq!(
        get(&app, "/metrics", Some("broken")).await,
        StatusCode::SERVICE_UNAVAILABLE
    );
    assert!(calls.load(SeqCst) > before, "a failed review must be asked again");
}

#[tokio::test]
async fn without_the_guard_metrics_are_open() {
    let app = admin(None);
    assert_eq!(get(&app, "/metrics", None).await, StatusCode::OK);
}
