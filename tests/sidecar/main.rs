//! `agent-auth-operator sidecar`, the real binary, against a local "provider API" server.
//!
//! Accounts are laid out exactly as the kubelet mounts a Secret (`..<timestamp>/` files, a `..data`
//! link to it, a link per key), and rotated the way it rotates them (new directory, `..data_tmp`
//! renamed over `..data`, old directory deleted). Each catalog tool is called through the sidecar and
//! the request the provider receives is checked field by field (method, path, query, body, headers)
//! against what the real API expects; the provider answers in the shape of its documentation and the
//! compact result is checked whole. No Kubernetes is needed, except for `broker.rs` (broker mode
//! against the real operator). Every test ends with a scan of the sidecar's output for every
//! credential the test used.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code

mod broker;
mod broker_local;
#[path = "../common/mod.rs"]
mod common;
mod harness;
mod trust;

use axum::http::Method;
use base64::Engine as _;
use serde_json::{Value, json};
use std::io::{Read, Write};
use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use harness::*;

// ---------------------------------------------------------------------------------- the tools

const GOOGLE: &str = "ya29.a0AfH6SMBtest-google-access-token";

#[tokio::test]
async fn gmail_fetch_and_send() {
    let e = env(&[("alice-google", "google", GOOGLE)], &[]).await;
    let headers = |from: &str, subject: &str, mid: &str| {
        json!([
            {"name": "From", "value": from},
            {"name": "To", "value": "alice@example.com"},
            {"name": "Subject", "value": subject},
            {"name": "Date", "value": "Thu, 26 Nov 2026 10:00:00 +0000"},
            {"name": "Message-ID", "value": mid},
        ])
    };
    e.api.route(Method::GET, "google", "/gmail/v1/users/me/messages", 200, json!({
        "messages": [{"id": "18c1", "threadId": "t1"}, {"id": "18c2", "threadId": "t2"}, {"id": "18c3", "threadId": "t3"}],
        "nextPageToken": "np-2",
        "resultSizeEstimate": 3
    }));
    e.api.route(Method::GET, "google", "/gmail/v1/users/me/messages/18c1", 200, json!({
        "id": "18c1", "threadId": "t1", "labelIds": ["UNREAD", "INBOX"], "snippet": "Lunch tomorrow?",
        "sizeEstimate": 2048, "historyId": "9001", "internalDate": "1795687200000",
        "payload": {"partId": "", "mimeType": "multipart/alternative", "filename": "", "headers": headers("Bob <bob@example.com>", "Lunch", "<m1@mail.example.com>")}
    }));
    e.api.route(Method::GET, "google", "/gmail/v1/users/me/messages/18c2", 200, json!({
        "id": "18c2", "threadId": "t2", "labelIds": ["UNREAD", "CATEGORY_UPDATES"], "snippet": "Your invoice",
        "payload": {"mimeType": "text/plain", "headers": headers("billing@example.com", "Invoice 42", "<m2@mail.example.com>")}
    }));
    // Deleted between the list and the fetch: left out.
    e.api.route(
        Method::GET,
        "google",
        "/gmail/v1/users/me/messages/18c3",
        404,
        json!({
            "error": {"code": 404, "message": "Requested entity was not found.", "status": "NOT_FOUND"}
        }),
    );

    e.expect_tool("gmail_fetch_mails",
            json!({"query": "is:unread", "max_results": 5}), json!({
            "messages": [
                {"id": "18c1", "thread_id": "t1", "from": "Bob <bob@example.com>", "to": "alice@example.com", "subject": "Lunch",
                 "date": "Thu, 26 Nov 2026 10:00:00 +0000", "message_id": "<m1@mail.example.com>", "labels": ["UNREAD", "INBOX"], "snippet": "Lunch tomorrow?"},
                {"id": "18c2", "thread_id": "t2", "from": "billing@example.com", "to": "alice@example.com", "subject": "Invoice 42",
                 "date": "Thu, 26 Nov 2026 10:00:00 +0000", "message_id": "<m2@mail.example.com>", "labels": ["UNREAD", "CATEGORY_UPDATES"], "snippet": "Your invoice"}
            ],
            "next_page_token": "np-2",
            "result_size_estimate": 3
        })).await;
    let seen = e.api.take();
    assert_eq!(seen.len(), 4, "{seen:#?}");
    let list = seen
        .iter()
        .find(|s| s.path == "/gmail/v1/users/me/messages")
        .unwrap();
    assert_eq!(list.method, Method::GET);
    assert_eq!(
        list.query_sorted(),
        pairs(&[
            ("q", "is:unread"),
            ("maxResults", "5"),
            ("includeSpamTrash", "false")
        ])
    );
    assert!(list.body.is_empty());
    for id in ["18c1", "18c2", "18c3"] {
        let get = seen
            .iter()
            .find(|s| s.path == format!("/gmail/v1/users/me/messages/{id}"))
            .unwrap();
        assert_eq!(get.method, Method::GET);
        assert_eq!(
            get.query_sorted(),
            pairs(&[
                ("format", "metadata"),
                ("metadataHeaders", "From"),
                ("metadataHeaders", "To"),
                ("metadataHeaders", "Cc"),
                ("metadataHeaders", "Subject"),
                ("metadataHeaders", "Date"),
                ("metadataHeaders", "Message-ID"),
            ])
        );
        assert_bearer(get, GOOGLE);
    }
    for s in &seen {
        assert_bearer(s, GOOGLE);
        assert!(
            s.header("user-agent")
                .unwrap()
                .starts_with("agent-auth-operator-sidecar/")
        );
    }

    e.api.route(
        Method::POST,
        "google",
        "/gmail/v1/users/me/messages/send",
        200,
        json!({
            "id": "18d0", "threadId": "t1", "labelIds": ["SENT"]
        }),
    );
    let body_text = "Hi Bob,\nsee you at noon.\n— Alice";
    e.expect_tool(
        "gmail_send_mail",
        json!({
            "to": ["bob@example.com"], "cc": ["carol@example.com"], "subject": "Re: Grüße",
            "body": body_text, "thread_id": "t1", "in_reply_to": "<m1@mail.example.com>"
        }),
        json!({"id": "18d0", "thread_id": "t1", "labels": ["SENT"]}),
    )
    .await;
    let sent = e.api.only("google", "/gmail/v1/users/me/messages/send");
    assert_eq!(sent.method, Method::POST);
    assert!(sent.query.is_empty());
    assert_eq!(sent.header("content-type"), Some("application/json"));
    assert_bearer(&sent, GOOGLE);
    let body = sent.json();
    assert_eq!(body.as_object().unwrap().len(), 2, "{body}");
    assert_eq!(body["threadId"], "t1");
    let raw = base64::engine::general_purpose::URL_SAFE
        .decode(body["raw"].as_str().unwrap())
        .unwrap();
    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
    let expected = format!(
        "To: bob@example.com\r\nCc: carol@example.com\r\nIn-Reply-To: <m1@mail.example.com>\r\n\
         References: <m1@mail.example.com>\r\nSubject: =?UTF-8?B?{}?=\r\nMIME-Version: 1.0\r\n\
         Content-Type: text/plain; charset=\"UTF-8\"\r\nContent-Transfer-Encoding: base64\r\n\r\n{}\r\n",
        b64("Re: Grüße"),
        b64(body_text)
    );
    assert_eq!(String::from_utf8(raw).unwrap(), expected);
}

#[tokio::test]
async fn google_calendar_and_drive() {
    let e = env(&[("alice-google", "google", GOOGLE)], &[]).await;
    e.api.route(Method::GET, "google", "/calendar/v3/calendars/primary/events", 200, json!({
        "kind": "calendar#events", "summary": "alice@example.com", "timeZone": "Europe/Berlin", "nextPageToken": "p2",
        "items": [
            {"kind": "calendar#event", "id": "ev1", "status": "confirmed", "htmlLink": "https://www.google.com/calendar/event?eid=ev1",
             "summary": "Standup", "location": "Room 1", "description": "Daily",
             "start": {"dateTime": "2026-12-01T09:00:00+01:00", "timeZone": "Europe/Berlin"},
             "end": {"dateTime": "2026-12-01T09:15:00+01:00", "timeZone": "Europe/Berlin"},
             "organizer": {"email": "bob@example.com"},
             "attendees": [{"email": "alice@example.com", "responseStatus": "accepted"}, {"email": "bob@example.com", "organizer": true}],
             "hangoutLink": "https://meet.google.com/abc-defg-hij"},
            {"kind": "calendar#event", "id": "ev2", "status": "confirmed", "htmlLink": "https://www.google.com/calendar/event?eid=ev2",
             "summary": "Offsite", "start": {"date": "2026-12-05"}, "end": {"date": "2026-12-06"},
             "organizer": {"email": "alice@example.com", "self": true}}
        ]
    }));
    e.expect_tool("google_calendar_list_events",
            json!({
                "time_min": "2026-12-01T00:00:00Z", "time_max": "2026-12-08T00:00:00Z", "query": "standup"
            }), json!({
            "events": [
                {"id": "ev1", "summary": "Standup", "start": "2026-12-01T09:00:00+01:00", "end": "2026-12-01T09:15:00+01:00",
                 "location": "Room 1", "description": "Daily", "status": "confirmed", "organizer": "bob@example.com",
                 "attendees": ["alice@example.com", "bob@example.com"], "link": "https://www.google.com/calendar/event?eid=ev1",
                 "meet_link": "https://meet.google.com/abc-defg-hij"},
                {"id": "ev2", "summary": "Offsite", "start": "2026-12-05", "end": "2026-12-06", "status": "confirmed",
                 "organizer": "alice@example.com", "link": "https://www.google.com/calendar/event?eid=ev2"}
            ],
            "next_page_token": "p2",
            "time_zone": "Europe/Berlin"
        })).await;
    let seen = e.api.only_with(
        Method::GET,
        "google",
        "/calendar/v3/calendars/primary/events",
        GOOGLE,
    );
    assert_eq!(
        seen.query_sorted(),
        pairs(&[
            ("timeMin", "2026-12-01T00:00:00Z"),
            ("timeMax", "2026-12-08T00:00:00Z"),
            ("q", "standup"),
            ("maxResults", "10"),
            ("singleEvents", "true"),
            ("orderBy", "startTime"),
        ])
    );

    // A calendar ID with `@` is one path segment, percent-encoded as Google expects.
    e.api.route(
        Method::GET,
        "google",
        "/calendar/v3/calendars/team%40group.calendar.google.com/events",
        200,
        json!({"items": []}),
    );
    let (status, result) = e
        .call(
            "google_calendar_list_events",
            json!({"calendar_id": "team@group.calendar.google.com"}),
        )
        .await;
    assert_eq!((status, result), (200, json!({"events": []})));
    e.api.only(
        "google",
        "/calendar/v3/calendars/team%40group.calendar.google.com/events",
    );

    e.api.route(Method::POST, "google", "/calendar/v3/calendars/primary/events", 200, json!({
        "kind": "calendar#event", "id": "ev9", "status": "confirmed", "htmlLink": "https://www.google.com/calendar/event?eid=ev9",
        "created": "2026-11-27T10:00:00.000Z", "summary": "Review", "description": "Q4 numbers",
        "start": {"dateTime": "2026-12-02T14:00:00+01:00", "timeZone": "Europe/Berlin"},
        "end": {"dateTime": "2026-12-02T15:00:00+01:00", "timeZone": "Europe/Berlin"},
        "attendees": [{"email": "bob@example.com", "responseStatus": "needsAction"}]
    }));
    e.expect_tool("google_calendar_create_event", json!({
        "summary": "Review", "description": "Q4 numbers", "start": "2026-12-02T14:00:00+01:00", "end": "2026-12-02T15:00:00+01:00",
        "time_zone": "Europe/Berlin", "attendees": ["bob@example.com"], "send_updates": "all"
    }), json!({
            "id": "ev9", "status": "confirmed", "summary": "Review", "start": "2026-12-02T14:00:00+01:00",
            "end": "2026-12-02T15:00:00+01:00", "link": "https://www.google.com/calendar/event?eid=ev9"
        })).await;
    let seen = e.api.only_with(
        Method::POST,
        "google",
        "/calendar/v3/calendars/primary/events",
        GOOGLE,
    );
    assert_eq!(seen.query_sorted(), pairs(&[("sendUpdates", "all")]));
    assert_eq!(
        seen.json(),
        json!({
            "summary": "Review", "description": "Q4 numbers",
            "start": {"dateTime": "2026-12-02T14:00:00+01:00", "timeZone": "Europe/Berlin"},
            "end": {"dateTime": "2026-12-02T15:00:00+01:00", "timeZone": "Europe/Berlin"},
            "attendees": [{"email": "bob@example.com"}]
        })
    );

    e.api.route(Method::GET, "google", "/drive/v3/files", 200, json!({
        "nextPageToken": "d2",
        "files": [
            {"id": "f1", "name": "Budget 2027", "mimeType": "application/vnd.google-apps.spreadsheet", "modifiedTime": "2026-11-20T08:00:00.000Z",
             "webViewLink": "https://docs.google.com/spreadsheets/d/f1/edit", "owners": [{"emailAddress": "alice@example.com"}]},
            {"id": "f2", "name": "budget.pdf", "mimeType": "application/pdf", "modifiedTime": "2026-10-01T08:00:00.000Z", "size": "48213",
             "webViewLink": "https://drive.google.com/file/d/f2/view", "owners": [{"emailAddress": "bob@example.com"}]}
        ]
    }));
    e.expect_tool("google_drive_search",
            json!({"query": "name contains 'budget'", "page_size": 5}), json!({
            "files": [
                {"id": "f1", "name": "Budget 2027", "mime_type": "application/vnd.google-apps.spreadsheet", "modified_time": "2026-11-20T08:00:00.000Z",
                 "owners": ["alice@example.com"], "link": "https://docs.google.com/spreadsheets/d/f1/edit"},
                {"id": "f2", "name": "budget.pdf", "mime_type": "application/pdf", "modified_time": "2026-10-01T08:00:00.000Z", "size": "48213",
                 "owners": ["bob@example.com"], "link": "https://drive.google.com/file/d/f2/view"}
            ],
            "next_page_token": "d2"
        })).await;
    let seen = e.api.only_with(Method::GET, "google", "/drive/v3/files", GOOGLE);
    assert_eq!(
        seen.query_sorted(),
        pairs(&[
            ("q", "name contains 'budget'"),
            ("pageSize", "5"),
            ("orderBy", "modifiedTime desc"),
            (
                "fields",
                "nextPageToken,files(id,name,mimeType,modifiedTime,webViewLink,size,owners(emailAddress))"
            ),
        ])
    );
}

const SLACK: &str = "xoxp-1111111111-2222222222-3333333333-abcdef";

#[tokio::test]
async fn slack_send_list_and_errors_in_200_answers() {
    let e = env(&[("team-slack", "slack", SLACK)], &[]).await;
    e.api.route(Method::POST, "slack", "/api/chat.postMessage", 200, json!({
        "ok": true, "channel": "C0123", "ts": "1795687201.000200",
        "message": {"type": "message", "text": "Deploy done", "user": "U1", "ts": "1795687201.000200", "thread_ts": "1795687200.000100"}
    }));
    e.expect_tool(
        "slack_send_message",
        json!({"channel": "C0123", "text": "Deploy done", "thread_ts": "1795687200.000100"}),
        json!({"channel": "C0123", "ts": "1795687201.000200", "thread_ts": "1795687200.000100"}),
    )
    .await;
    let seen = e
        .api
        .only_with(Method::POST, "slack", "/api/chat.postMessage", SLACK);
    assert_eq!(
        seen.header("content-type"),
        Some("application/json; charset=utf-8")
    );
    assert!(seen.query.is_empty());
    assert_eq!(
        seen.json(),
        json!({"channel": "C0123", "text": "Deploy done", "thread_ts": "1795687200.000100"})
    );

    e.api.route(Method::GET, "slack", "/api/conversations.list", 200, json!({
        "ok": true,
        "channels": [
            {"id": "C0123", "name": "general", "is_channel": true, "is_private": false, "is_archived": false, "is_member": true,
             "num_members": 42, "created": 1449252889, "topic": {"value": "Company-wide", "creator": "U1", "last_set": 0},
             "purpose": {"value": "", "creator": "", "last_set": 0}},
            {"id": "G0456", "name": "secret-project", "is_channel": false, "is_private": true, "is_archived": false, "is_member": true,
             "num_members": 3, "topic": {"value": ""}, "purpose": {"value": "Hush"}}
        ],
        "response_metadata": {"next_cursor": "dGVhbTpDMDYxRkE1UEI="}
    }));
    e.expect_tool("slack_list_channels",
            json!({"types": ["public_channel", "private_channel"]}), json!({
            "channels": [
                {"id": "C0123", "name": "general", "is_private": false, "is_member": true, "is_archived": false, "num_members": 42, "topic": "Company-wide"},
                {"id": "G0456", "name": "secret-project", "is_private": true, "is_member": true, "is_archived": false, "num_members": 3, "purpose": "Hush"}
            ],
            "next_cursor": "dGVhbTpDMDYxRkE1UEI="
        })).await;
    let seen = e
        .api
        .only_with(Method::GET, "slack", "/api/conversations.list", SLACK);
    assert_eq!(
        seen.query_sorted(),
        pairs(&[
            ("types", "public_channel,private_channel"),
            ("exclude_archived", "true"),
            ("limit", "100"),
        ])
    );

    // Slack reports failures as HTTP 200 with ok=false: the agent gets a real error status.
    e.api.route(
        Method::POST,
        "slack",
        "/api/chat.postMessage",
        200,
        json!({"ok": false, "error": "channel_not_found"}),
    );
    let (status, result) = e
        .call("slack_send_message", json!({"channel": "C404", "text": "hello"}))
        .await;
    assert_eq!(status, 404, "{result}");
    assert_eq!(result["error"]["code"], "provider_error");
    assert_eq!(result["error"]["provider_status"], 404);
    assert!(
        result["error"]["message"]
            .as_str()
            .unwrap()
            .contains("channel_not_found"),
        "{result}"
    );
    e.api.only("slack", "/api/chat.postMessage");
}

const NOTION: &str = "ntn_4567890123456789012345678901234567890abc";

#[tokio::test]
async fn notion_search_and_create_page() {
    let e = env(&[("wiki", "notion", NOTION)], &[]).await;
    e.api.route(Method::POST, "notion", "/v1/search", 200, json!({
        "object": "list",
        "results": [
            {"object": "page", "id": "59833787-2cf9-4fdf-8782-e53db20768a5", "created_time": "2026-11-01T10:00:00.000Z",
             "last_edited_time": "2026-11-20T10:00:00.000Z", "url": "https://www.notion.so/Roadmap-598337872cf94fdf8782e53db20768a5",
             "parent": {"type": "workspace", "workspace": true},
             "properties": {"title": {"id": "title", "type": "title", "title": [
                 {"type": "text", "text": {"content": "Road", "link": null}, "plain_text": "Road", "href": null},
                 {"type": "text", "text": {"content": "map", "link": null}, "plain_text": "map", "href": null}
             ]}}},
            {"object": "database", "id": "a8aec43c-8f43-4e50-a4c7-3d7f7a2b1c11", "last_edited_time": "2026-11-19T10:00:00.000Z",
             "url": "https://www.notion.so/a8aec43c8f434e50a4c73d7f7a2b1c11",
             "title": [{"type": "text", "text": {"content": "Tasks", "link": null}, "plain_text": "Tasks", "href": null}],
             "properties": {"Name": {"id": "title", "name": "Name", "type": "title", "title": {}}}}
        ],
        "next_cursor": null, "has_more": false, "type": "page_or_database", "page_or_database": {}
    }));
    e.expect_tool("notion_search", json!({"query": "Road", "object_type": "page"}), json!({
            "results": [
                {"id": "59833787-2cf9-4fdf-8782-e53db20768a5", "object": "page", "title": "Roadmap",
                 "url": "https://www.notion.so/Roadmap-598337872cf94fdf8782e53db20768a5", "last_edited_time": "2026-11-20T10:00:00.000Z"},
                {"id": "a8aec43c-8f43-4e50-a4c7-3d7f7a2b1c11", "object": "database", "title": "Tasks",
                 "url": "https://www.notion.so/a8aec43c8f434e50a4c73d7f7a2b1c11", "last_edited_time": "2026-11-19T10:00:00.000Z"}
            ],
            "has_more": false
        })).await;
    let seen = e.api.only_with(Method::POST, "notion", "/v1/search", NOTION);
    assert_eq!(seen.header("notion-version"), Some("2022-06-28"));
    assert_eq!(
        seen.json(),
        json!({
            "query": "Road", "filter": {"property": "object", "value": "page"},
            "sort": {"direction": "descending", "timestamp": "last_edited_time"}, "page_size": 10
        })
    );
    // Without object_type, no filter at all (Notion refuses a filter without a value).
    e.call("notion_search", json!({})).await;
    assert_eq!(
        e.api.only("notion", "/v1/search").json(),
        json!({"sort": {"direction": "descending", "timestamp": "last_edited_time"}, "page_size": 10})
    );

    e.api.route(Method::POST, "notion", "/v1/pages", 200, json!({
        "object": "page", "id": "b55c9c91-384d-452b-81db-d1ef79372b75", "created_time": "2026-11-27T10:00:00.000Z",
        "last_edited_time": "2026-11-27T10:00:00.000Z", "archived": false,
        "parent": {"type": "page_id", "page_id": "59833787-2cf9-4fdf-8782-e53db20768a5"},
        "url": "https://www.notion.so/Meeting-notes-b55c9c91384d452b81dbd1ef79372b75",
        "properties": {"title": {"id": "title", "type": "title", "title": [{"plain_text": "Meeting notes"}]}}
    }));
    e.expect_tool("notion_create_page", json!({
        "parent_page_id": "59833787-2cf9-4fdf-8782-e53db20768a5", "title": "Meeting notes", "content": "First point\n\nSecond point\n"
    }), json!({
            "id": "b55c9c91-384d-452b-81db-d1ef79372b75", "url": "https://www.notion.so/Meeting-notes-b55c9c91384d452b81dbd1ef79372b75",
            "created_time": "2026-11-27T10:00:00.000Z"
        })).await;
    let seen = e.api.only_with(Method::POST, "notion", "/v1/pages", NOTION);
    assert_eq!(seen.header("notion-version"), Some("2022-06-28"));
    let paragraph = |t: &str| json!({"object": "block", "type": "paragraph", "paragraph": {"rich_text": [{"type": "text", "text": {"content": t}}]}});
    assert_eq!(
        seen.json(),
        json!({
            "parent": {"page_id": "59833787-2cf9-4fdf-8782-e53db20768a5"},
            "properties": {"title": {"title": [{"type": "text", "text": {"content": "Meeting notes"}}]}},
            "children": [paragraph("First point"), paragraph("Second point")]
        })
    );
}

const HUBSPOT: &str = "pat-na1-11111111-2222-3333-4444-555555555555";

#[tokio::test]
async fn hubspot_contacts_and_a_conflict_cleaned_of_secrets() {
    let e = env(&[("crm", "hubspot", HUBSPOT)], &[]).await;
    e.api.route(Method::GET, "hubspot", "/crm/v3/objects/contacts", 200, json!({
        "results": [{
            "id": "512",
            "properties": {"company": "Acme", "createdate": "2026-01-01T00:00:00.000Z", "email": "ann@acme.example", "firstname": "Ann",
                           "hs_object_id": "512", "lastmodifieddate": "2026-11-01T00:00:00.000Z", "lastname": "Lee", "phone": null},
            "createdAt": "2026-01-01T00:00:00.000Z", "updatedAt": "2026-11-01T00:00:00.000Z", "archived": false
        }],
        "paging": {"next": {"after": "513", "link": "https://api.hubapi.com/crm/v3/objects/contacts?after=513"}}
    }));
    e.expect_tool("hubspot_list_contacts", json!({}), json!({
            "contacts": [{"id": "512", "properties": {"company": "Acme", "email": "ann@acme.example", "firstname": "Ann", "lastname": "Lee", "phone": null},
                          "updated_at": "2026-11-01T00:00:00.000Z"}],
            "next_after": "513"
        })).await;
    let seen = e
        .api
        .only_with(Method::GET, "hubspot", "/crm/v3/objects/contacts", HUBSPOT);
    assert_eq!(
        seen.query_sorted(),
        pairs(&[
            ("limit", "10"),
            ("properties", "email,firstname,lastname,phone,company"),
            ("archived", "false"),
        ])
    );

    e.api.route(Method::POST, "hubspot", "/crm/v3/objects/contacts", 201, json!({
        "id": "601",
        "properties": {"company": "Acme", "createdate": "2026-11-27T10:00:00.000Z", "email": "ben@acme.example", "firstname": "Ben",
                       "hs_object_id": "601", "lastmodifieddate": "2026-11-27T10:00:00.000Z", "lastname": "Ng"},
        "createdAt": "2026-11-27T10:00:00.000Z", "updatedAt": "2026-11-27T10:00:00.000Z", "archived": false
    }));
    let input =
        json!({"email": "ben@acme.example", "first_name": "Ben", "last_name": "Ng", "company": "Acme"});
    e.expect_tool("hubspot_create_contact", input.clone(), json!({
            "id": "601", "properties": {"company": "Acme", "email": "ben@acme.example", "firstname": "Ben", "lastname": "Ng"},
            "created_at": "2026-11-27T10:00:00.000Z"
        })).await;
    let seen = e
        .api
        .only_with(Method::POST, "hubspot", "/crm/v3/objects/contacts", HUBSPOT);
    assert_eq!(
        seen.json(),
        json!({"properties": {"email": "ben@acme.example", "firstname": "Ben", "lastname": "Ng", "company": "Acme"}})
    );

    // The provider's error reaches the agent with its status and message; a token it echoes does not.
    e.api.route(Method::POST, "hubspot", "/crm/v3/objects/contacts", 409, json!({
        "status": "error", "message": "Contact already exists. Existing ID: 601", "correlationId": "c0ffee",
        "category": "CONFLICT", "context": {"authorization": [format!("Bearer {HUBSPOT}")]},
        "debug": format!("request carried Bearer {HUBSPOT}")
    }));
    let (status, result) = e.call("hubspot_create_contact", input).await;
    assert_eq!(status, 409, "{result}");
    assert_eq!(result["error"]["code"], "provider_error");
    assert_eq!(
        result["error"]["message"],
        "the provider answered 409: Contact already exists. Existing ID: 601"
    );
    assert_eq!(result["error"]["details"]["category"], "CONFLICT");
    assert_eq!(result["error"]["details"]["debug"], "request carried [redacted]");
    e.api.only("hubspot", "/crm/v3/objects/contacts");
}

const GITHUB: &str = "gho_16C7e42F292c6912E7710c838347Ae178B4a";
const GITHUB_B: &str = "gho_BBBBe42F292c6912E7710c838347Ae178B4b";

fn issue(number: u64, title: &str, extra: Value) -> Value {
    let mut v = json!({
        "id": number * 10, "node_id": "I_x", "number": number, "title": title, "state": "open", "locked": false,
        "user": {"login": "octocat", "id": 1}, "labels": [], "assignees": [], "comments": 0,
        "created_at": "2026-11-01T00:00:00Z", "updated_at": "2026-11-02T00:00:00Z", "closed_at": null,
        "html_url": format!("https://github.com/acme/widgets/issues/{number}"),
        "url": format!("https://api.github.com/repos/acme/widgets/issues/{number}"), "body": null
    });
    for (k, val) in extra.as_object().unwrap() {
        v[k] = val.clone();
    }
    v
}

fn assert_github_headers(seen: &Seen) {
    assert_eq!(seen.header("accept"), Some("application/vnd.github+json"));
    assert_eq!(seen.header("x-github-api-version"), Some("2022-11-28"));
    assert!(
        seen.header("user-agent")
            .unwrap()
            .starts_with("agent-auth-operator-sidecar/")
    );
}

#[tokio::test]
async fn github_issues() {
    let e = env(&[("gh", "github", GITHUB)], &[]).await;
    e.api.route(Method::GET, "github", "/repos/acme/widgets/issues", 200, json!([
        issue(1347, "Found a bug", json!({"labels": [{"id": 208045946, "name": "bug", "color": "f29513"}], "comments": 3, "body": "It crashes."})),
        issue(1348, "Add feature", json!({"user": {"login": "hubot"}, "assignees": [{"login": "octocat"}],
            "html_url": "https://github.com/acme/widgets/pull/1348",
            "pull_request": {"url": "https://api.github.com/repos/acme/widgets/pulls/1348", "html_url": "https://github.com/acme/widgets/pull/1348"}}))
    ]));
    e.expect_tool("github_list_issues",
            json!({"owner": "acme", "repo": "widgets", "labels": ["bug", "p1"]}), json!({"issues": [
            {"number": 1347, "title": "Found a bug", "state": "open", "author": "octocat", "labels": ["bug"], "comments": 3,
             "created_at": "2026-11-01T00:00:00Z", "updated_at": "2026-11-02T00:00:00Z", "url": "https://github.com/acme/widgets/issues/1347", "body": "It crashes."},
            {"number": 1348, "title": "Add feature", "state": "open", "author": "hubot", "assignees": ["octocat"], "comments": 0,
             "created_at": "2026-11-01T00:00:00Z", "updated_at": "2026-11-02T00:00:00Z", "url": "https://github.com/acme/widgets/pull/1348",
             "pull_request": "https://github.com/acme/widgets/pull/1348"}
        ]})).await;
    let seen = e
        .api
        .only_with(Method::GET, "github", "/repos/acme/widgets/issues", GITHUB);
    assert_github_headers(&seen);
    assert_eq!(
        seen.query_sorted(),
        pairs(&[("state", "open"), ("labels", "bug,p1"), ("per_page", "20")])
    );

    e.api.route(
        Method::POST,
        "github",
        "/repos/acme/widgets/issues",
        201,
        issue(1349, "Crash on start", json!({"labels": [{"name": "bug"}]})),
    );
    e.expect_tool("github_create_issue", json!({
        "owner": "acme", "repo": "widgets", "title": "Crash on start", "body": "Steps:\n1. start", "labels": ["bug"]
    }), json!({"number": 1349, "title": "Crash on start", "state": "open", "url": "https://github.com/acme/widgets/issues/1349"})).await;
    let seen = e
        .api
        .only_with(Method::POST, "github", "/repos/acme/widgets/issues", GITHUB);
    assert_github_headers(&seen);
    assert_eq!(
        seen.json(),
        json!({"title": "Crash on start", "body": "Steps:\n1. start", "labels": ["bug"]})
    );

    // `..` as a repository name would leave the repository's path: refused before any request.
    let (status, result) = e
        .call("github_list_issues", json!({"owner": "acme", "repo": ".."}))
        .await;
    assert_eq!(status, 400, "{result}");
    assert!(e.api.take().is_empty());
}

// --------------------------------------------------------------------- listing and errors

#[tokio::test]
async fn tool_listing_account_choice_and_input_errors() {
    let e = env(
        &[
            ("alice-google", "google", GOOGLE),
            ("gh-a", "github", GITHUB),
            ("gh-b", "github", GITHUB_B),
        ],
        &[],
    )
    .await;
    let (status, listed) = e.get("/v1/tools").await;
    assert_eq!(status, 200);
    let names: Vec<&str> = listed["tools"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        [
            "github_create_issue",
            "github_list_issues",
            "gmail_fetch_mails",
            "gmail_send_mail",
            "google_calendar_create_event",
            "google_calendar_list_events",
            "google_drive_search",
        ]
    );
    let fetch = &listed["tools"][2];
    assert_eq!(
        fetch.as_object().unwrap().keys().collect::<Vec<_>>(),
        ["description", "input_schema", "name"]
    );
    assert_eq!(fetch["input_schema"]["type"], "object");
    assert_eq!(fetch["input_schema"]["properties"]["max_results"]["maximum"], 50);
    assert_eq!(
        listed["accounts"][0],
        json!({"name": "alice-google", "provider": "google", "tools": [
        "gmail_fetch_mails", "gmail_send_mail", "google_calendar_create_event", "google_calendar_list_events", "google_drive_search"]})
    );
    let (_, openai) = e.get("/v1/tools?format=openai").await;
    assert_eq!(openai["tools"][0]["type"], "function");
    assert_eq!(openai["tools"][0]["function"]["name"], "github_create_issue");
    assert_eq!(
        openai["tools"][0]["function"]["parameters"]["required"],
        json!(["owner", "repo", "title"])
    );

    let check = |(status, body): (u16, Value), want_status: u16, code: &str, mentions: &str| {
        assert_eq!(status, want_status, "{body}");
        assert_eq!(body["error"]["code"], code, "{body}");
        assert!(
            body["error"]["message"].as_str().unwrap().contains(mentions),
            "{mentions} not in {body}"
        );
    };
    // (tool, input, status, error code, a word the message names)
    let refused = [
        ("no_such_tool", json!({}), 404, "unknown_tool", "no_such_tool"),
        (
            "slack_send_message",
            json!({"channel": "C1", "text": "x"}),
            404,
            "no_account",
            "slack",
        ),
        (
            "gmail_fetch_mails",
            json!({"max_results": 500}),
            400,
            "invalid_input",
            "max_results",
        ),
        (
            "gmail_fetch_mails",
            json!({"max_results": "five"}),
            400,
            "invalid_input",
            "max_results",
        ),
        (
            "gmail_fetch_mails",
            json!({"bogus": 1}),
            400,
            "invalid_input",
            "bogus",
        ),
        ("gmail_fetch_mails", json!([1, 2]), 400, "invalid_input", "object"),
        (
            "gmail_send_mail",
            json!({"to": ["bob@example.com"], "body": "x"}),
            400,
            "invalid_input",
            "subject",
        ),
        (
            "gmail_send_mail",
            json!({"to": ["not an address"], "subject": "s", "body": "x"}),
            400,
            "invalid_input",
            "to.0",
        ),
        (
            "gmail_send_mail",
            json!({"to": ["b@example.com"], "subject": "a\r\nBcc: x@example.com", "body": "x"}),
            400,
            "invalid_input",
            "subject",
        ),
    ];
    for (tool, input, status, code, mentions) in refused {
        check(e.call(tool, input).await, status, code, mentions);
    }
    let raw = e
        .http
        .post(format!("{}/v1/tools/gmail_fetch_mails", e.sidecar.url))
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(raw.status(), 400);
    let issues = json!({"owner": "acme", "repo": "widgets"});
    check(
        e.call("github_list_issues", issues.clone()).await,
        400,
        "ambiguous_account",
        "gh-a, gh-b",
    );
    check(
        e.call_path(
            "/v1/tools/github_list_issues?account=alice-google",
            issues.clone(),
        )
        .await,
        400,
        "wrong_account",
        "google",
    );
    check(
        e.call_path("/v1/tools/github_list_issues?account=nobody", issues.clone())
            .await,
        404,
        "unknown_account",
        "nobody",
    );
    assert!(
        e.api.take().is_empty(),
        "no request reaches a provider for refused calls"
    );

    e.api.route(
        Method::GET,
        "github",
        "/repos/acme/widgets/issues",
        200,
        json!([]),
    );
    let (status, result) = e
        .call_path("/v1/tools/github_list_issues?account=gh-b", issues.clone())
        .await;
    assert_eq!((status, result), (200, json!({"issues": []})));
    assert_bearer(&e.api.only("github", "/repos/acme/widgets/issues"), GITHUB_B);
    let resp = e
        .http
        .post(format!("{}/v1/tools/github_list_issues", e.sidecar.url))
        .header("X-Agentauth-Account", "gh-a")
        .json(&issues)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_bearer(&e.api.only("github", "/repos/acme/widgets/issues"), GITHUB);

    // A provider error that quotes the token: status and message pass, the token does not.
    e.api.route(Method::GET, "google", "/drive/v3/files", 403, json!({"error": {
        "code": 403, "message": format!("Request had insufficient authentication scopes for {GOOGLE}."),
        "errors": [{"message": "Insufficient Permission", "domain": "global", "reason": "insufficientPermissions"}],
        "status": "PERMISSION_DENIED"
    }}));
    let (status, result) = e.call("google_drive_search", json!({})).await;
    assert_eq!(status, 403);
    assert_eq!(
        result["error"]["message"],
        "the provider answered 403: Request had insufficient authentication scopes for [redacted]."
    );
    assert_eq!(result["error"]["details"]["error"]["status"], "PERMISSION_DENIED");

    let (status, health) = e.get("/healthz").await;
    assert_eq!(status, 200);
    assert_eq!(
        health["accounts"][1],
        json!({"name": "gh-a", "provider": "github", "readable": true})
    );
}

// ------------------------------------------------------------------------------------ proxy

/// A raw HTTP/1.1 request (paths exactly as written: clients normalise `..`). Returns the status.
fn raw_request(addr: SocketAddr, head: &str) -> u16 {
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(format!("{head}\r\nConnection: close\r\n\r\n").as_bytes())
        .unwrap();
    let mut resp = String::new();
    let _ = s.read_to_string(&mut resp);
    resp.split(' ').nth(1).and_then(|c| c.parse().ok()).unwrap_or(0)
}

#[tokio::test]
async fn proxy_forwards_with_the_credential_and_stays_on_the_provider() {
    const SALESFORCE: &str = "00D5e000000abcd!AQ0AQHtestsalesforcesessiontoken";
    let mut e = env(&[("gh", "github", GITHUB), ("wiki", "notion", NOTION)], &[]).await;
    // A Salesforce account: its org's instance_url is in the credential's metadata, but the pod
    // spec's --api-base wins (instance_url must be https under .salesforce.com, which a loopback
    // test server cannot be; see a_tools_file_cannot_send_a_built_in_providers_tokens_elsewhere).
    let sf = e.root.path().join("accounts").join("sf");
    write_volume(
        &sf,
        &token_secret(
            "salesforce",
            SALESFORCE,
            json!({"instance_url": "https://acme.my.salesforce.com", "id": "https://login.salesforce.com/id/00D/005"}),
        ),
    );
    let mut args: Vec<String> = ["gh", "wiki", "sf"]
        .iter()
        .map(|a| format!("--account={a}={}", e.dir(a).display()))
        .collect();
    args.extend(
        PREFIXES
            .iter()
            .map(|(p, prefix)| format!("--api-base={p}={}", e.api.base(prefix))),
    );
    args.push(format!("--api-base=salesforce={}", e.api.base("sfdc")));
    e.sidecar = SidecarProcess::start(&args);
    e.remember(SALESFORCE);
    let url = e.sidecar.url.clone();

    e.api.route_with(
        Method::GET,
        "github",
        "/repos/acme/widgets/issues",
        200,
        json!([issue(1, "One", json!({}))]),
        &[
            ("Set-Cookie", "logged_in=yes"),
            ("X-RateLimit-Remaining", "4999"),
            ("Link", "<https://api.github.com/x?page=2>; rel=\"next\""),
        ],
    );
    let resp = e
        .http
        .get(format!(
            "{url}/v1/proxy/gh/repos/acme/widgets/issues?state=closed&per_page=2"
        ))
        .header("Authorization", "Bearer agent-supplied-value")
        .header("Cookie", "session=agent")
        .header("X-Custom", "kept")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert!(resp.headers().get("set-cookie").is_none());
    assert_eq!(resp.headers()["x-ratelimit-remaining"], "4999");
    assert!(resp.headers()["link"].to_str().unwrap().contains("page=2"));
    assert_eq!(resp.json::<Value>().await.unwrap()[0]["number"], 1);
    let seen = e
        .api
        .only_with(Method::GET, "github", "/repos/acme/widgets/issues", GITHUB);
    assert_eq!(seen.headers.get_all("authorization").iter().count(), 1);
    assert!(seen.header("cookie").is_none());
    assert_eq!(seen.header("x-custom"), Some("kept"));
    assert_eq!(seen.header("x-github-api-version"), Some("2022-11-28"));
    assert_eq!(
        seen.query,
        vec![
            ("state".to_owned(), "closed".to_owned()),
            ("per_page".to_owned(), "2".to_owned())
        ]
    );

    e.api.route(
        Method::POST,
        "github",
        "/repos/acme/widgets/issues",
        201,
        issue(2, "Two", json!({})),
    );
    let resp = e
        .http
        .post(format!("{url}/v1/proxy/gh/repos/acme/widgets/issues"))
        .json(&json!({"title": "Two", "body": "text"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 201);
    let seen = e
        .api
        .only_with(Method::POST, "github", "/repos/acme/widgets/issues", GITHUB);
    assert_eq!(seen.header("content-type"), Some("application/json"));
    assert_eq!(seen.json(), json!({"title": "Two", "body": "text"}));

    // The org's base.
    e.api.route(
        Method::GET,
        "sfdc",
        "/services/data/v62.0/query",
        200,
        json!({"totalSize": 1, "done": true, "records": [{"Id": "001"}]}),
    );
    let resp = e
        .http
        .get(format!(
            "{url}/v1/proxy/sf/services/data/v62.0/query?q=SELECT+Id+FROM+Account"
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let seen = e.api.only("sfdc", "/services/data/v62.0/query");
    assert_bearer(&seen, SALESFORCE);
    assert_eq!(
        seen.query,
        vec![("q".to_owned(), "SELECT Id FROM Account".to_owned())]
    );

    // Provider headers are defaults: Notion-Version is added.
    e.api.route(
        Method::POST,
        "notion",
        "/v1/search",
        200,
        json!({"object": "list", "results": []}),
    );
    let resp = e
        .http
        .post(format!("{url}/v1/proxy/wiki/search"))
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let seen = e.api.only("notion", "/v1/search");
    assert_eq!(seen.header("notion-version"), Some("2022-06-28"));
    assert_bearer(&seen, NOTION);

    // An error body that echoes the token comes back without it; no retry with the same credential.
    e.api.route(Method::GET, "github", "/user", 401, json!({"message": format!("Bad credentials: Bearer {GITHUB}"), "documentation_url": "https://docs.github.com/rest"}));
    let resp = e
        .http
        .get(format!("{url}/v1/proxy/gh/user"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 401);
    let text = resp.text().await.unwrap();
    assert!(
        !text.contains(GITHUB) && text.contains("Bad credentials"),
        "{text}"
    );
    e.api.only("github", "/user");

    // Escapes from the API base, unknown accounts, foreign hosts and origins.
    let addr = e.sidecar.addr;
    for path in [
        "/v1/proxy/gh/../../etc/passwd",
        "/v1/proxy/gh/repos/%2e%2e/%2E%2E/x",
        "/v1/proxy/gh/a/.%2e/b",
        "/v1/proxy/gh//evil.example.com/x",
        "/v1/proxy/gh/a%5c..%5cb",
    ] {
        assert_eq!(
            raw_request(addr, &format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1")),
            400,
            "{path}"
        );
    }
    assert_eq!(
        raw_request(addr, "GET /v1/proxy/nobody/x HTTP/1.1\r\nHost: 127.0.0.1"),
        404
    );
    assert_eq!(
        raw_request(addr, "GET /v1/proxy/gh/user HTTP/1.1\r\nHost: evil.example.com"),
        403
    );
    assert_eq!(
        raw_request(
            addr,
            "GET /v1/tools HTTP/1.1\r\nHost: localhost:1\r\nOrigin: https://evil.example.com"
        ),
        403
    );
    assert_eq!(
        raw_request(
            addr,
            "GET /v1/tools HTTP/1.1\r\nHost: localhost:1\r\nOrigin: http://127.0.0.1:3000"
        ),
        200
    );
    assert!(e.api.take().is_empty(), "refused requests never reach a provider");

    // Bodies above 10 MiB are refused before they are read.
    let head = format!(
        "POST /v1/proxy/gh/repos/acme/widgets/issues HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: {}",
        11 * 1024 * 1024
    );
    assert_eq!(raw_request(addr, &head), 413);
    assert!(e.api.take().is_empty());
}

// -------------------------------------------------------------------------------------- MCP

#[tokio::test]
async fn mcp_with_the_official_client() {
    use rmcp::ServiceExt as _;
    use rmcp::model::{CallToolRequestParams, ClientConfig};
    use rmcp::transport::StreamableHttpClientTransport;

    let e = env(&[("gh-a", "github", GITHUB), ("gh-b", "github", GITHUB_B)], &[]).await;
    let transport = StreamableHttpClientTransport::from_uri(format!("{}/mcp", e.sidecar.url));
    let client = ClientConfig::default().serve(transport).await.unwrap();
    let info = client.peer_info().unwrap();
    assert_eq!(
        info.server_info.as_ref().unwrap().name,
        "agent-auth-operator-sidecar"
    );
    assert!(info.capabilities.tools.is_some());

    let tools = client.list_all_tools().await.unwrap();
    let names: Vec<&str> = tools.iter().map(|t| t.name.as_ref()).collect();
    assert_eq!(names, ["github_create_issue", "github_list_issues"]);
    let schema = &tools[1].input_schema;
    assert_eq!(schema["properties"]["account"]["enum"], json!(["gh-a", "gh-b"]));
    assert!(schema["required"].as_array().unwrap().contains(&json!("account")));

    e.api.route(
        Method::GET,
        "github",
        "/repos/acme/widgets/issues",
        200,
        json!([issue(7, "Seven", json!({}))]),
    );
    let args = json!({"account": "gh-b", "owner": "acme", "repo": "widgets", "state": "all"});
    let result = client
        .call_tool(
            CallToolRequestParams::new("github_list_issues")
                .with_arguments(args.as_object().unwrap().clone()),
        )
        .await
        .unwrap();
    assert_eq!(result.is_error, Some(false));
    assert_eq!(
        result.structured_content.as_ref().unwrap()["issues"][0]["number"],
        7
    );
    let seen = e.api.only("github", "/repos/acme/widgets/issues");
    assert_bearer(&seen, GITHUB_B);
    assert_eq!(
        seen.query_sorted(),
        pairs(&[("state", "all"), ("per_page", "20")])
    );

    // Bad input is a tool error the model can read; an unknown tool is a protocol error.
    let args = json!({"account": "gh-a", "owner": "acme"});
    let result = client
        .call_tool(
            CallToolRequestParams::new("github_list_issues")
                .with_arguments(args.as_object().unwrap().clone()),
        )
        .await
        .unwrap();
    assert_eq!(result.is_error, Some(true));
    let err = &result.structured_content.as_ref().unwrap()["error"];
    assert_eq!(err["code"], "invalid_input");
    assert!(err["message"].as_str().unwrap().contains("repo"));
    assert!(
        client
            .call_tool(CallToolRequestParams::new("nope"))
            .await
            .is_err()
    );
    assert!(e.api.take().is_empty());
    client.cancel().await.unwrap();
}

#[tokio::test]
async fn mcp_conformance_sequence_over_plain_http() {
    let e = env(&[("gh", "github", GITHUB)], &[]).await;
    let url = format!("{}/mcp", e.sidecar.url);
    let post = |body: Value, initialized: bool| {
        let mut req = e
            .http
            .post(&url)
            .header("Accept", "application/json, text/event-stream")
            .json(&body);
        if initialized {
            req = req.header("MCP-Protocol-Version", "2025-06-18");
        }
        req.send()
    };
    let resp = post(json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
        "protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "conformance", "version": "1.0"}
    }}), false).await.unwrap();
    assert_eq!(resp.status(), 200);
    assert!(
        resp.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("application/json")
    );
    let init: Value = resp.json().await.unwrap();
    assert_eq!(init["jsonrpc"], "2.0");
    assert_eq!(init["id"], 1);
    assert_eq!(init["result"]["protocolVersion"], "2025-06-18");
    assert!(init["result"]["capabilities"]["tools"].is_object(), "{init}");
    assert_eq!(
        init["result"]["serverInfo"]["name"],
        "agent-auth-operator-sidecar"
    );

    let resp = post(
        json!({"jsonrpc": "2.0", "method": "notifications/initialized"}),
        true,
    )
    .await
    .unwrap();
    assert_eq!(resp.status(), 202);

    let list: Value = post(json!({"jsonrpc": "2.0", "id": 2, "method": "tools/list"}), true)
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let tools = list["result"]["tools"].as_array().unwrap();
    assert_eq!(tools.len(), 2, "{list}");
    assert_eq!(tools[0]["name"], "github_create_issue");
    assert_eq!(
        tools[0]["inputSchema"]["required"],
        json!(["owner", "repo", "title"])
    );
    assert!(tools[0]["description"].as_str().unwrap().contains("issue"));

    e.api.route(
        Method::POST,
        "github",
        "/repos/acme/widgets/issues",
        201,
        issue(9, "Nine", json!({})),
    );
    let call: Value = post(
        json!({"jsonrpc": "2.0", "id": 3, "method": "tools/call", "params": {
            "name": "github_create_issue", "arguments": {"owner": "acme", "repo": "widgets", "title": "Nine"}
        }}),
        true,
    )
    .await
    .unwrap()
    .json()
    .await
    .unwrap();
    assert_eq!(call["id"], 3);
    assert_eq!(call["result"]["isError"], false, "{call}");
    let expected = json!({"number": 9, "title": "Nine", "state": "open", "url": "https://github.com/acme/widgets/issues/9"});
    assert_eq!(call["result"]["structuredContent"], expected);
    assert_eq!(call["result"]["content"][0]["type"], "text");
    assert_eq!(
        serde_json::from_str::<Value>(call["result"]["content"][0]["text"].as_str().unwrap()).unwrap(),
        expected
    );
    let seen = e.api.only("github", "/repos/acme/widgets/issues");
    assert_bearer(&seen, GITHUB);
    assert_eq!(seen.json(), json!({"title": "Nine"}));

    let unknown: Value = post(json!({"jsonrpc": "2.0", "id": 4, "method": "tools/call", "params": {"name": "nope", "arguments": {}}}), true)
        .await.unwrap().json().await.unwrap();
    assert_eq!(unknown["error"]["code"], -32602, "{unknown}");
    let ping: Value = post(json!({"jsonrpc": "2.0", "id": 5, "method": "ping"}), true)
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(ping["result"], json!({}), "{ping}");
    let bogus: Value = post(
        json!({"jsonrpc": "2.0", "id": 6, "method": "no/such/method"}),
        true,
    )
    .await
    .unwrap()
    .json()
    .await
    .unwrap();
    assert_eq!(bogus["error"]["code"], -32601, "{bogus}");
}

// --------------------------------------------------------------------------------- rotation

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotation_under_load_loses_no_call() {
    let tokens: Vec<String> = (0..6)
        .map(|i| format!("ya29.rotation-token-{i}-abcdefghijklmnop"))
        .collect();
    let e = Arc::new(env(&[("alice-google", "google", &tokens[0])], &[]).await);
    for t in &tokens {
        e.remember(t);
    }
    e.api.route(
        Method::GET,
        "google",
        "/drive/v3/files",
        200,
        json!({"files": []}),
    );
    // The provider accepts only the newest token: a call that read the old one must re-read and retry.
    e.api.accept_only("google", &[format!("Bearer {}", tokens[0])]);
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let done = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut workers = Vec::new();
    for _ in 0..3 {
        let (e, stop, done) = (e.clone(), stop.clone(), done.clone());
        workers.push(tokio::spawn(async move {
            let mut n = 0;
            while !stop.load(Ordering::SeqCst) {
                let (status, result) = e.call("google_drive_search", json!({})).await;
                assert_eq!(status, 200, "call {n} failed during rotation: {result}");
                n += 1;
                done.fetch_add(1, Ordering::SeqCst);
            }
            n
        }));
    }
    // Lets the background load make some calls with the current token before the next swap.
    let calls_go_on = || {
        let done = done.clone();
        async move {
            let from = done.load(Ordering::SeqCst);
            let deadline = std::time::Instant::now() + Duration::from_secs(30);
            while done.load(Ordering::SeqCst) < from + 10 {
                assert!(std::time::Instant::now() < deadline, "background calls stalled");
                tokio::time::sleep(Duration::from_millis(5)).await; // poll interval
            }
        }
    };
    let dir = e.dir("alice-google");
    for (swap, (old, t)) in tokens.iter().zip(&tokens[1..]).enumerate() {
        calls_go_on().await;
        // Both while the files change (a read of the new files never meets the old gate), then the
        // old one is revoked: calls still in flight with it get a 401.
        e.api
            .accept_only("google", &[format!("Bearer {old}"), format!("Bearer {t}")]);
        write_volume(&dir, &token_secret("google", t, Value::Null));
        e.api.accept_only("google", &[format!("Bearer {t}")]);
        // The next call uses the new token at once: nothing is cached. (Found by its query: a
        // background call that read the old token may land after it.)
        let marker = format!("name = 'after-swap-{swap}'");
        let (status, _) = e.call("google_drive_search", json!({"query": marker})).await;
        assert_eq!(status, 200);
        let ours = e
            .api
            .seen()
            .iter()
            .rev()
            .find(|s| s.query.iter().any(|(_, v)| *v == marker))
            .cloned()
            .unwrap();
        assert_bearer(&ours, t);
    }
    calls_go_on().await;
    stop.store(true, Ordering::SeqCst);
    let mut calls = 0;
    for w in workers {
        calls += w.await.unwrap();
    }
    assert!(calls >= 10, "only {calls} calls ran during the rotation");
    let seen = e.api.take();
    // Every call is one request, plus one for each retry after a rejected (just revoked) token.
    let retries = seen.len() - calls - (tokens.len() - 1);
    eprintln!(
        "{calls} background calls during {} swaps, {retries} retried after a 401",
        tokens.len() - 1
    );
    assert!(
        seen.iter()
            .rev()
            .take(3)
            .all(|s| s.auth() == format!("Bearer {}", tokens[5]))
    );
}

#[tokio::test]
async fn a_rejected_credential_is_reread_and_retried_once() {
    const OLD: &str = "ya29.old-token-abcdefghijklmnop";
    const NEW: &str = "ya29.new-token-abcdefghijklmnop";
    const SLACK_OLD: &str = "xoxp-9999999999-old-slack-token";
    const SLACK_NEW: &str = "xoxp-9999999999-new-slack-token";
    let e = env(
        &[
            ("alice-google", "google", OLD),
            ("team-slack", "slack", SLACK_OLD),
        ],
        &[],
    )
    .await;
    for s in [NEW, SLACK_NEW] {
        e.remember(s);
    }
    e.api.route(
        Method::GET,
        "google",
        "/drive/v3/files",
        200,
        json!({"files": [{"id": "f1", "name": "a"}]}),
    );
    e.api.route(
        Method::GET,
        "slack",
        "/api/conversations.list",
        200,
        json!({"ok": true, "channels": []}),
    );
    e.api.accept_only("google", &[format!("Bearer {NEW}")]);
    e.api.accept_only("slack", &[format!("Bearer {SLACK_NEW}")]);
    // The refresh lands while the request with the old token is in flight: the kubelet swaps the
    // files just before the provider answers 401.
    let (gdir, sdir) = (e.dir("alice-google"), e.dir("team-slack"));
    e.api.on_reject(move |auth| {
        if auth.ends_with(OLD) {
            write_volume(&gdir, &token_secret("google", NEW, Value::Null));
        } else if auth.ends_with(SLACK_OLD) {
            write_volume(&sdir, &token_secret("slack", SLACK_NEW, Value::Null));
        }
    });
    let result = e.call_ok("google_drive_search", json!({})).await;
    assert_eq!(result["files"][0]["id"], "f1");
    let seen: Vec<String> = e.api.take().iter().map(|s| s.auth().to_owned()).collect();
    assert_eq!(seen, [format!("Bearer {OLD}"), format!("Bearer {NEW}")]);

    // Slack says `invalid_auth` in a 200 answer: the same re-read and retry.
    let _result = e.call_ok("slack_list_channels", json!({})).await;
    let seen: Vec<String> = e.api.take().iter().map(|s| s.auth().to_owned()).collect();
    assert_eq!(
        seen,
        [format!("Bearer {SLACK_OLD}"), format!("Bearer {SLACK_NEW}")]
    );

    // Rejected again with nothing new mounted: one request, the 401 goes to the agent.
    e.api
        .accept_only("google", &["Bearer something-else-entirely".to_owned()]);
    let (status, result) = e.call("google_drive_search", json!({})).await;
    assert_eq!(status, 401, "{result}");
    assert_eq!(result["error"]["code"], "provider_error");
    assert_eq!(e.api.take().len(), 1);
}

// ------------------------------------------------------------------------------ custom tools

#[tokio::test]
async fn custom_tools_from_a_configmap_directory_without_restart() {
    const ACME_KEY: &str = "acme_live_key_0123456789abcdef";
    let api = ProviderApi::start().await;
    let root = temp_dir("custom");
    let tools_dir = root.path().join("tools");
    let acme_base = api.base("acme");
    let acme_tools = |extra: &str| {
        format!(
            r#"providers:
  acme:
    baseUrl: {base}
    headers: {{X-Acme-Version: "3"}}
tools:
  - name: acme_list_widgets
    provider: acme
    description: Lists widgets of one color.
    inputSchema:
      type: object
      required: [color]
      properties:
        color: {{type: string, enum: [red, blue]}}
    request:
      method: GET
      path: /v2/widgets
      query: {{color: "{{{{input.color}}}}"}}
    result:
      widgets:
        $for: response.data
        $do: {{id: "{{{{it.id}}}}", name: "{{{{it.attributes.name}}}}"}}
{extra}"#,
            base = acme_base
        )
    };
    write_volume(&tools_dir, &[("acme.yaml", acme_tools(""))]);
    // API-key account without a provider key, in its own header; accounts found under a directory.
    let accounts = root.path().join("accounts");
    write_volume(
        &accounts.join("acme-team"),
        &[
            ("authorization", ACME_KEY.to_owned()),
            ("header_name", "X-Api-Key".to_owned()),
            ("api_key", ACME_KEY.to_owned()),
            (
                "credentials.json",
                json!({"authorization": ACME_KEY, "header_name": "X-Api-Key", "api_key": ACME_KEY})
                    .to_string(),
            ),
        ],
    );
    write_volume(&accounts.join("gh"), &token_secret("github", GITHUB, Value::Null));
    let sidecar = SidecarProcess::start(&[
        format!(
            "--account=acme-team={}:acme",
            accounts.join("acme-team").display()
        ),
        format!("--account=gh={}", accounts.join("gh").display()),
        format!("--api-base=github={}", api.base("github")),
        format!("--tools-dir={}", tools_dir.display()),
    ]);
    let e = Env {
        api,
        sidecar,
        http: reqwest::Client::new(),
        root,
        secrets: Mutex::new(vec![ACME_KEY.to_owned(), GITHUB.to_owned()]),
    };
    let (_, listed) = e.get("/v1/tools").await;
    assert_eq!(
        tool_names(&listed),
        ["acme_list_widgets", "github_create_issue", "github_list_issues"]
    );

    e.api.route(
        Method::GET,
        "acme",
        "/v2/widgets",
        200,
        json!({"data": [{"id": "w1", "type": "widget", "attributes": {"name": "Sprocket", "color": "red"}}]}),
    );
    let (status, result) = e.call("acme_list_widgets", json!({"color": "red"})).await;
    assert_eq!(
        (status, result),
        (200, json!({"widgets": [{"id": "w1", "name": "Sprocket"}]}))
    );
    let seen = e.api.only("acme", "/v2/widgets");
    assert_eq!(seen.header("x-api-key"), Some(ACME_KEY));
    assert!(seen.header("authorization").is_none());
    assert_eq!(seen.header("x-acme-version"), Some("3"));
    assert_eq!(seen.query, vec![("color".to_owned(), "red".to_owned())]);
    let (status, result) = e.call("acme_list_widgets", json!({"color": "green"})).await;
    assert_eq!(status, 400, "{result}");

    // The ConfigMap changes (kubelet swap): a new tool, and a user override of a built-in one.
    let more = r#"  - name: acme_get_widget
    provider: acme
    description: One widget.
    inputSchema: {type: object, required: [id], properties: {id: {type: string}}}
    request: {method: GET, path: "/v2/widgets/{{input.id}}"}
  - name: github_list_issues
    provider: github
    description: Only the open bugs.
    inputSchema: {type: object, required: [owner, repo], properties: {owner: {type: string}, repo: {type: string}}}
    request: {method: GET, path: "/repos/{{input.owner}}/{{input.repo}}/issues", query: {labels: bug}}
"#;
    write_volume(&e.root.path().join("tools"), &[("acme.yaml", acme_tools(more))]);
    let (_, listed) = e.get("/v1/tools").await;
    assert_eq!(
        tool_names(&listed),
        [
            "acme_get_widget",
            "acme_list_widgets",
            "github_create_issue",
            "github_list_issues"
        ]
    );
    e.api.route(
        Method::GET,
        "acme",
        "/v2/widgets/w%201",
        200,
        json!({"data": {"id": "w 1"}}),
    );
    let (status, result) = e.call("acme_get_widget", json!({"id": "w 1"})).await;
    assert_eq!((status, result), (200, json!({"data": {"id": "w 1"}})));
    e.api.only("acme", "/v2/widgets/w%201");
    e.api.route(
        Method::GET,
        "github",
        "/repos/acme/widgets/issues",
        200,
        json!([]),
    );
    let (status, _) = e
        .call("github_list_issues", json!({"owner": "acme", "repo": "widgets"}))
        .await;
    assert_eq!(status, 200);
    assert_eq!(
        e.api.only("github", "/repos/acme/widgets/issues").query,
        vec![("labels".to_owned(), "bug".to_owned())]
    );

    // A broken edit is logged and the previous catalog stays.
    write_volume(
        &e.root.path().join("tools"),
        &[("acme.yaml", "tools: [{name: Broken".to_owned())],
    );
    let (_, listed) = e.get("/v1/tools").await;
    assert_eq!(tool_names(&listed).len(), 4);
    assert!(e.sidecar.wait_output("tool catalog not reloaded").await);
}

#[test]
fn refuses_to_start_without_loopback_or_with_a_broken_catalog() {
    let root = temp_dir("refuse");
    write_volume(
        &root.path().join("a"),
        &token_secret("github", GITHUB, Value::Null),
    );
    let run = |args: &[String]| {
        let out = Command::new(env!("CARGO_BIN_EXE_agent-auth-operator"))
            .arg("sidecar")
            .args(args)
            .output()
            .unwrap();
        (
            out.status.success(),
            format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ),
        )
    };
    let account = format!("--account=a={}", root.path().join("a").display());
    let (ok, out) = run(&[account.clone(), "--listen=0.0.0.0:0".into()]);
    assert!(!ok && out.contains("not a loopback address"), "{out}");
    let (ok, out) = run(&["--listen=127.0.0.1:0".into()]);
    assert!(!ok && out.contains("no accounts"), "{out}");
    std::fs::create_dir_all(root.path().join("tools")).unwrap();
    std::fs::write(
        root.path().join("tools/bad.yaml"),
        "tools:\n  - name: x\n    provider: p\n",
    )
    .unwrap();
    let (ok, out) = run(&[
        account,
        format!("--tools-dir={}", root.path().join("tools").display()),
        "--listen=127.0.0.1:0".into(),
    ]);
    assert!(!ok && out.contains("bad.yaml"), "{out}");
    assert!(!out.contains(GITHUB));
    // A file that moves a built-in provider stops the start too, with the reason.
    std::fs::write(
        root.path().join("tools/bad.yaml"),
        "providers:\n  google: {baseUrl: 'https://collector.example'}\n",
    )
    .unwrap();
    let (ok, out) = run(&[
        format!("--account=a={}", root.path().join("a").display()),
        format!("--tools-dir={}", root.path().join("tools").display()),
        "--listen=127.0.0.1:0".into(),
    ]);
    assert!(
        !ok && out.contains("bad.yaml: refused: provider google is built in"),
        "{out}"
    );
}

// --------------------------------------------------------------------------------- examples

fn example_yaml() -> Vec<Value> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/agent-with-sidecar.yaml");
    let docs: Vec<Value> = serde_saphyr::from_multiple(&std::fs::read_to_string(path).unwrap()).unwrap();
    docs.into_iter().filter(|d| d.is_object()).collect()
}

/// The example Deployment's sidecar arguments and ConfigMap of tools, run for real: the flags parse,
/// the custom tool loads and makes the request GitHub documents.
#[tokio::test]
async fn the_example_deployment_sidecar_and_its_custom_tool() {
    let docs = example_yaml();
    let configmap = docs
        .iter()
        .find(|d| d["kind"] == "ConfigMap" && d["metadata"]["name"] == "agent-tools")
        .unwrap();
    let deployment = docs.iter().find(|d| d["kind"] == "Deployment").unwrap();
    let sidecar = &deployment["spec"]["template"]["spec"]["initContainers"][0];
    assert_eq!(sidecar["restartPolicy"], "Always");
    // The tools decide where custom providers' keys go: never an optional mount.
    let volumes = deployment["spec"]["template"]["spec"]["volumes"]
        .as_array()
        .unwrap();
    let tools = volumes.iter().find(|v| v["name"] == "tools").unwrap();
    assert_eq!(tools["configMap"]["name"], "agent-tools");
    assert!(
        volumes.iter().all(|v| v["configMap"]["optional"] != true),
        "{volumes:#?}"
    );
    let api = ProviderApi::start().await;
    let root = temp_dir("example");
    let files: Vec<(&str, String)> = configmap["data"]
        .as_object()
        .unwrap()
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str().unwrap().to_owned()))
        .collect();
    write_volume(&root.path().join("tools"), &files);
    write_volume(
        &root.path().join("accounts/alice-github"),
        &token_secret("github", GITHUB, Value::Null),
    );
    let mut args: Vec<String> = sidecar["args"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap().to_owned())
        .filter(|a| a != "sidecar" && !a.starts_with("--listen") && !a.starts_with("--log-format"))
        .map(|a| {
            a.replace(
                "/var/run/agentauth",
                root.path().join("accounts").to_str().unwrap(),
            )
            .replace(
                "/etc/agentauth/tools",
                root.path().join("tools").to_str().unwrap(),
            )
        })
        .collect();
    args.push(format!("--api-base=github={}", api.base("github")));
    let e = Env {
        api,
        sidecar: SidecarProcess::start(&args),
        http: reqwest::Client::new(),
        root,
        secrets: Mutex::new(vec![GITHUB.to_owned()]),
    };
    e.api.route(Method::GET, "github", "/repos/acme/widgets/pulls", 200, json!([{
        "id": 1, "number": 42, "state": "open", "title": "Faster widgets", "user": {"login": "octocat"}, "draft": false,
        "html_url": "https://github.com/acme/widgets/pull/42", "head": {"ref": "fast"}, "base": {"ref": "main"}
    }]));
    e.expect_tool(
        "github_list_pull_requests",
        json!({"owner": "acme", "repo": "widgets"}),
        json!({"pulls": [{"number": 42, "title": "Faster widgets", "author": "octocat", "draft": false,
        "url": "https://github.com/acme/widgets/pull/42"}]}),
    )
    .await;
    let seen = e.api.only("github", "/repos/acme/widgets/pulls");
    assert_bearer(&seen, GITHUB);
    assert_github_headers(&seen);
    assert_eq!(
        seen.query_sorted(),
        pairs(&[("state", "open"), ("per_page", "20")])
    );
}

/// examples/agent/agent.py (plain Python, standard library) against the sidecar.
#[tokio::test]
async fn the_example_python_agent_reads_mail_through_the_sidecar() {
    let e = env(&[("alice-gmail", "google", GOOGLE)], &[]).await;
    e.api.route(
        Method::GET,
        "google",
        "/gmail/v1/users/me/messages",
        200,
        json!({
            "messages": [{"id": "m1", "threadId": "t1"}], "resultSizeEstimate": 1
        }),
    );
    e.api.route(Method::GET, "google", "/gmail/v1/users/me/messages/m1", 200, json!({
        "id": "m1", "threadId": "t1", "labelIds": ["UNREAD"], "snippet": "Hi",
        "payload": {"headers": [{"name": "From", "value": "Bob <bob@example.com>"}, {"name": "Subject", "value": "Lunch?"}]}
    }));
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/agent/agent.py");
    let url = e.sidecar.url.clone();
    let out = tokio::task::spawn_blocking(move || {
        Command::new("python3")
            .arg(script)
            .env("AGENTAUTH_SIDECAR", url)
            .env("AGENT_INTERVAL", "0")
            .output()
            .expect("python3 runs the example agent")
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        stdout,
        "tools: gmail_fetch_mails, gmail_send_mail, google_calendar_create_event, google_calendar_list_events, google_drive_search\n\
         1 unread\n- Bob <bob@example.com>: Lunch?\n"
    );
    let seen = e.api.take();
    assert_eq!(seen.len(), 2);
    assert!(seen.iter().all(|s| s.auth() == format!("Bearer {GOOGLE}")));
}
