use serde_json::json;

use super::*;
use crate::auth::catalog;
use crate::auth::fields::{is_credential, is_reserved};

const NOW: Timestamp = Timestamp::UNIX_EPOCH;

fn quirks(provider: &str) -> TokenQuirks {
    catalog::lookup(provider).unwrap().token_quirks()
}

/// Runs the normaliser on a recorded body; returns the new status and JSON.
fn run(provider: Option<&str>, status: u16, body: Value) -> (u16, Value) {
    let q = provider.map(quirks).unwrap_or_default();
    let r = normalise(status, body.to_string().as_bytes(), &q, NOW).unwrap();
    (r.status, serde_json::from_slice(&r.body).unwrap())
}

fn assert_no_credentials_in_metadata(v: &Value) {
    fn walk(v: &Value, top: bool) {
        if let Value::Object(m) = v {
            for (k, v) in m {
                let allowed_at_top = top && (k == "access_token" || k == "refresh_token");
                assert!(allowed_at_top || !is_credential(k), "credential {k} kept");
                walk(v, false);
            }
        }
    }
    walk(v, true);
}

#[test]
fn slack_user_token_is_lifted_from_authed_user() {
    // oauth.v2.access with user_scope only, token rotation on.
    let (status, out) = run(
        Some("slack"),
        200,
        json!({
            "ok": true,
            "app_id": "A0KRD7HC3",
            "authed_user": {
                "id": "U1234",
                "scope": "chat:write,channels:history",
                "access_token": "xoxe.xoxp-1-user",
                "token_type": "user",
                "refresh_token": "xoxe-1-refresh",
                "expires_in": 43200
            },
            "team": {"id": "T9TK3CUKW", "name": "Slack Softworks"},
            "enterprise": null,
            "is_enterprise_install": false
        }),
    );
    assert_eq!(status, 200);
    assert_eq!(
        out,
        json!({
            "access_token": "xoxe.xoxp-1-user",
            "refresh_token": "xoxe-1-refresh",
            "token_type": "Bearer",
            "expires_in": 43200,
            "scope": "chat:write channels:history",
            "team_id": "T9TK3CUKW",
            "team_name": "Slack Softworks",
            "user_id": "U1234",
            "app_id": "A0KRD7HC3"
        })
    );
}

#[test]
fn slack_bot_token_next_to_the_user_token_is_dropped() {
    let (_, out) = run(
        Some("slack"),
        200,
        json!({
            "ok": true,
            "access_token": "xoxb-bot",
            "token_type": "bot",
            "scope": "commands",
            "bot_user_id": "U0KRQLJ9H",
            "app_id": "A0KRD7HC3",
            "team": {"id": "T1", "name": "T"},
            "authed_user": {"id": "U1", "scope": "users:read", "access_token": "xoxp-user", "token_type": "user"}
        }),
    );
    assert_eq!(out["access_token"], "xoxp-user");
    assert!(!out.to_string().contains("xoxb-bot"), "{out}");
}

#[test]
fn slack_errors_with_200_become_rfc6749_errors() {
    for (slack, standard, status) in [
        ("invalid_refresh_token", "invalid_grant", 400),
        ("invalid_code", "invalid_grant", 400),
        ("bad_client_secret", "invalid_client", 400),
        ("invalid_client_id", "invalid_client", 400),
        ("ratelimited", "temporarily_unavailable", 429),
        ("some_new_error", "some_new_error", 400),
    ] {
        let (s, out) = run(Some("slack"), 200, json!({"ok": false, "error": slack}));
        assert_eq!((s, out["error"].as_str().unwrap()), (status, standard), "{slack}");
        if slack != standard {
            assert_eq!(out["error_description"], slack);
        }
    }
}

#[test]
fn github_errors_with_200_become_rfc6749_errors() {
    let (s, out) = run(
        Some("github"),
        200,
        json!({
            "error": "bad_verification_code",
            "error_description": "The code passed is incorrect or expired.",
            "error_uri": "https://docs.github.com/apps/managing-oauth-apps/troubleshooting-oauth-app-access-token-request-errors/#bad-verification-code"
        }),
    );
    assert_eq!(s, 400);
    assert_eq!(out["error"], "invalid_grant");
    assert_eq!(
        out["error_description"],
        "bad_verification_code: The code passed is incorrect or expired."
    );
    assert!(
        out["error_uri"]
            .as_str()
            .unwrap()
            .starts_with("https://docs.github.com/")
    );
    for (code, standard) in [
        ("bad_refresh_token", "invalid_grant"),
        ("incorrect_client_credentials", "invalid_client"),
        ("redirect_uri_mismatch", "invalid_grant"),
    ] {
        let (s, out) = run(
            Some("github"),
            200,
            json!({"error": code, "error_description": "x"}),
        );
        assert_eq!((s, out["error"].as_str().unwrap()), (400, standard));
    }
}

#[test]
fn github_expiring_user_tokens_keep_their_lifetimes() {
    // A GitHub App user token with expiration on; scope is empty for GitHub Apps.
    let (_, out) = run(
        Some("github"),
        200,
        json!({
            "access_token": "ghu_16C7e42F292c6912E7710c838347Ae178B4a",
            "expires_in": 28800,
            "refresh_token": "ghr_1B4a2e77838347a7E420ce178F2E7c6912E169246c34E1ccbF66C46812d16D5B1A9Dc86A1498",
            "refresh_token_expires_in": 15811200,
            "scope": "",
            "token_type": "bearer"
        }),
    );
    assert_eq!(
        out["expires_in"], 28800,
        "the access token's lifetime, not the refresh token's"
    );
    assert_eq!(out["token_type"], "bearer");
    assert!(out.get("scope").is_none(), "empty scope means: as requested");
    assert_eq!(out[REFRESH_EXPIRES_AT], "1970-07-03T00:00:00Z");
    assert!(out.get("refresh_token_expires_in").is_none());
    // An OAuth app token never expires and lists its scopes with commas.
    let (_, out) = run(
        Some("github"),
        200,
        json!({"access_token": "gho_x", "scope": "repo,gist", "token_type": "bearer"}),
    );
    assert!(out.get("expires_in").is_none());
    assert_eq!(out["scope"], "repo gist");
}

#[test]
fn salesforce_keeps_instance_url_and_id_but_never_the_signature() {
    let (_, out) = run(
        Some("salesforce"),
        200,
        json!({
            "access_token": "00Dxx0000001gPL!AR8AQJXg5oj8jXSgxJfA0lBog.39AsX.LVpxezPwuX5VAIrrbbHMuol7GQxnMeYMN7cj8EoWr78nt1u44zU31IbYNNJguseu",
            "refresh_token": "5Aep861TSESvWeug_xvFHRBTTbf_YrTWgEyjBJ.jhWq0ak_ULLE4_jhlgCz0r6zR4MEkNU0k1nCRQX3RzpGsmDW",
            "signature": "ClE2mZzf2t6BRhrnkIxWeupFHWgJi9y9M1qpFcaz0Pc=",
            "scope": "refresh_token api",
            "id_token": "eyJraWQiOiIyMjAiLCJ0eXAiOiJKV1QiLCJhbGciOiJSUzI1NiJ9",
            "instance_url": "https://yourInstance.my.salesforce.com",
            "id": "https://login.salesforce.com/id/00Dxx0000001gPLEAY/005xx000001Sv6AAAS",
            "token_type": "Bearer",
            "issued_at": "1278448101416"
        }),
    );
    assert_eq!(out["instance_url"], "https://yourInstance.my.salesforce.com");
    assert_eq!(
        out["id"],
        "https://login.salesforce.com/id/00Dxx0000001gPLEAY/005xx000001Sv6AAAS"
    );
    assert_eq!(out["issued_at"], "1278448101416");
    assert_eq!(
        out["expires_in"], 3600,
        "no expires_in: the preset's assumed lifetime"
    );
    assert!(out.get("signature").is_none() && out.get("id_token").is_none());
    assert_no_credentials_in_metadata(&out);
}

#[test]
fn notion_keeps_workspace_fields_and_the_owner_id_only() {
    let (_, out) = run(
        Some("notion"),
        200,
        json!({
            "access_token": "secret_e9X4rQ",
            "token_type": "bearer",
            "refresh_token": "nrt_4991",
            "bot_id": "b3414d659-1224-5ty7-6ffr-cc9d8773drt6",
            "workspace_name": "Acme Inc.",
            "workspace_icon": "https://website.domain/images/image.png",
            "workspace_id": "j565j4d7x3-2882-61bs-564a-jj9d9ui-c36hxfr7x",
            "owner": {"type": "user", "user": {"object": "user", "id": "4f3a2b1c", "name": "Alice", "person": {"email": "alice@example.com"}}},
            "duplicated_template_id": null,
            "request_id": "f5bb9bb5-1a8e-4c5f-8e46-0d7bb6e7e3b0"
        }),
    );
    assert_eq!(out["workspace_name"], "Acme Inc.");
    assert_eq!(out["workspace_id"], "j565j4d7x3-2882-61bs-564a-jj9d9ui-c36hxfr7x");
    assert_eq!(out["bot_id"], "b3414d659-1224-5ty7-6ffr-cc9d8773drt6");
    assert_eq!(out["owner_user_id"], "4f3a2b1c");
    assert!(out.get("owner").is_none(), "the owner's e-mail is not metadata");
    assert!(out.get("request_id").is_none());
}

#[test]
fn hubspot_errors_in_its_own_shape_become_rfc6749_errors() {
    let (s, out) = run(
        Some("hubspot"),
        400,
        json!({
            "status": "BAD_REFRESH_TOKEN",
            "message": "missing or unknown refresh token",
            "correlationId": "aeb5f871-7f07-4993-9211-075dc63e7cbf"
        }),
    );
    assert_eq!((s, out["error"].as_str().unwrap()), (400, "invalid_grant"));
    assert_eq!(
        out["error_description"],
        "BAD_REFRESH_TOKEN: missing or unknown refresh token"
    );
    let (_, out) = run(
        Some("hubspot"),
        400,
        json!({"status": "BAD_CLIENT_SECRET", "message": "x"}),
    );
    assert_eq!(out["error"], "invalid_client");
    // A success: no metadata beyond hub_id, which this response does not carry.
    let (_, out) = run(
        Some("hubspot"),
        200,
        json!({"token_type": "bearer", "refresh_token": "6f18f21e", "access_token": "CN2zlYn", "expires_in": 1800}),
    );
    assert_eq!(
        out,
        json!({"token_type": "bearer", "refresh_token": "6f18f21e", "access_token": "CN2zlYn", "expires_in": 1800})
    );
}

#[test]
fn microsoft_string_lifetimes_are_numbers_and_extras_are_dropped() {
    let (_, out) = run(
        Some("microsoft"),
        200,
        json!({
            "token_type": "Bearer",
            "scope": "User.Read Mail.Read",
            "expires_in": "3599",
            "ext_expires_in": "3599",
            "access_token": "eyJ0eXAiOiJKV1QiLCJub25jZSI6",
            "refresh_token": "0.AAAA-refresh",
            "id_token": "eyJ0eXAiOiJKV1QiLCJhbGciOiJSUzI1NiJ9"
        }),
    );
    assert_eq!(out["expires_in"], 3599);
    assert!(out.get("ext_expires_in").is_none() && out.get("id_token").is_none());
    // Standard errors pass through unchanged.
    let body = json!({
        "error": "invalid_grant",
        "error_description": "AADSTS70008: The provided authorization code or refresh token has expired.",
        "error_codes": [70008],
        "timestamp": "2024-01-01 00:00:00Z",
        "trace_id": "t", "correlation_id": "c"
    });
    let (s, out) = run(Some("microsoft"), 400, body);
    assert_eq!((s, out["error"].as_str().unwrap()), (400, "invalid_grant"));
    assert!(
        out["error_description"]
            .as_str()
            .unwrap()
            .starts_with("AADSTS70008")
    );
}

#[test]
fn google_responses_keep_no_id_token() {
    let (_, out) = run(
        Some("google"),
        200,
        json!({
            "access_token": "ya29.a0AfH6SMB",
            "expires_in": 3599,
            "refresh_token": "1//0gdK8",
            "scope": "openid https://www.googleapis.com/auth/userinfo.email https://www.googleapis.com/auth/gmail.readonly",
            "token_type": "Bearer",
            "id_token": "eyJhbGciOiJSUzI1NiIsImtpZCI6IjEifQ"
        }),
    );
    assert_eq!(out["scope"].as_str().unwrap().split(' ').count(), 3);
    assert!(out.get("id_token").is_none());
    let q = quirks("google");
    let granted: Vec<String> = out["scope"]
        .as_str()
        .unwrap()
        .split(' ')
        .map(String::from)
        .collect();
    let requested = vec!["openid".to_owned(), "email".to_owned()];
    let g = granted_scopes(&requested, granted, &q);
    assert!(requested.iter().all(|r| g.contains(r)), "{g:?}");
}

#[test]
fn microsoft_offline_access_and_case_differences_count_as_granted() {
    let q = quirks("microsoft");
    let requested: Vec<String> = ["offline_access", "user.read", "Mail.Send"]
        .map(String::from)
        .into();
    let g = granted_scopes(&requested, vec!["User.Read".into()], &q);
    assert!(g.contains(&"offline_access".into()) && g.contains(&"user.read".into()));
    assert!(
        !g.contains(&"Mail.Send".into()),
        "a scope really missing stays missing"
    );
}

#[test]
fn linear_array_scopes_and_figma_missing_token_type() {
    let (_, out) = run(
        Some("linear"),
        200,
        json!({"access_token": "lin_oauth_x", "token_type": "Bearer", "expires_in": 86399, "scope": ["read", "write"]}),
    );
    assert_eq!(out["scope"], "read write");
    let (_, out) = run(
        Some("figma"),
        200,
        json!({"user_id_string": "1234", "user_id": 1234, "access_token": "figu_x", "expires_in": 7776000}),
    );
    assert_eq!(out["token_type"], "Bearer");
    assert_eq!(out["user_id"], "1234");
    let (s, out) = run(
        Some("figma"),
        400,
        json!({"error": true, "status": 400, "message": "Invalid refresh token", "i18n": null}),
    );
    assert_eq!((s, out["error"].as_str().unwrap()), (400, "invalid_request"));
}

#[test]
fn airtable_refresh_lifetime_becomes_an_absolute_time() {
    let (_, out) = run(
        Some("airtable"),
        200,
        json!({
            "access_token": "oaaX", "refresh_token": "oarX", "token_type": "Bearer",
            "scope": "data.records:read user.email:read", "expires_in": 3600, "refresh_expires_in": 5184000
        }),
    );
    assert_eq!(out[REFRESH_EXPIRES_AT], "1970-03-02T00:00:00Z");
}

#[test]
fn intercom_token_duplicate_and_discord_webhook_secret_are_dropped() {
    let (_, out) = run(
        Some("intercom"),
        200,
        json!({"token_type": "Bearer", "token": "dG9rOmNk", "access_token": "dG9rOmNk"}),
    );
    assert!(out.get("token").is_none());
    let (_, out) = run(
        Some("discord"),
        200,
        json!({
            "access_token": "6qrZcUqja7812RVdnEKjpzOL4CvHBFG", "token_type": "Bearer", "expires_in": 604800,
            "refresh_token": "D43f5y0ahjqew82jZ4NViEr2YafMKhue", "scope": "identify bot",
            "guild": {"id": "290926798626357250", "name": "Test"},
            "webhook": {"id": "1", "token": "hook-secret", "url": "https://discord.com/api/webhooks/1/hook-secret"}
        }),
    );
    assert_eq!(out["guild_id"], "290926798626357250");
    assert!(!out.to_string().contains("hook-secret"));
}

#[test]
fn without_a_preset_every_non_credential_field_is_kept() {
    let (_, out) = run(
        None,
        200,
        json!({
            "access_token": "a", "token_type": "bearer", "expires_in": 60, "id_token": "jwt",
            "team": {"id": "T1", "access_token": "nested"}, "instance_url": "https://x.test"
        }),
    );
    assert_eq!(out["team"], json!({"id": "T1"}));
    assert_eq!(out["instance_url"], "https://x.test");
    assert!(out.get("id_token").is_none());
    assert_no_credentials_in_metadata(&out);
}

#[test]
fn non_json_and_server_errors_are_left_alone() {
    assert!(normalise(502, b"<html>Bad gateway</html>", &TokenQuirks::default(), NOW).is_none());
    let (s, out) = run(None, 503, json!({"message": "down"}));
    assert_eq!((s, out), (503, json!({"message": "down"})));
    // A 200 without token or error: left for the oauth2 crate to call malformed.
    let (s, out) = run(None, 200, json!({"ok": true}));
    assert_eq!((s, out), (200, json!({"ok": true})));
}

#[test]
fn no_catalog_metadata_path_reaches_a_credential() {
    for p in catalog::presets() {
        for (key, path) in &p.metadata {
            assert!(!is_reserved(key), "{}: {key}", p.name);
            assert!(!path.split('.').any(is_credential), "{}: {path}", p.name);
        }
    }
}

mod fuzz {
    use proptest::prelude::*;

    use super::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(500))]

        /// Any body, any status, any preset: no panic, and the metadata holds no credential.
        #[test]
        fn normalise_never_panics_nor_keeps_credentials(
            status in prop_oneof![Just(200u16), Just(400u16), 100u16..600],
            body in prop_oneof![
                ".{0,200}".prop_map(String::into_bytes),
                (".{0,20}", ".{0,20}", any::<i64>(), ".{0,30}", any::<bool>()).prop_map(|(t, ty, e, sc, ok)| {
                    json!({"ok": ok, "authed_user": {"access_token": t, "token_type": ty, "expires_in": e, "scope": sc},
                           "access_token": t, "error": sc, "team": {"id": ty, "token": t}, "expires_in": e.to_string(),
                           "refresh_token_expires_in": e}).to_string().into_bytes()
                }),
            ],
            provider in prop::sample::select(vec!["slack", "github", "salesforce", "hubspot", "notion", "figma"]),
        ) {
            if let Some(r) = normalise(status, &body, &quirks(provider), NOW)
                && let Ok(v) = serde_json::from_slice::<Value>(&r.body)
                && r.status == 200
            {
                assert_no_credentials_in_metadata(&v);
            }
        }
    }
}
