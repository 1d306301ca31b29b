//! kube-apiserver goes down for 20 s and comes back: the operator recovers on its own and loses nothing
//! (see `common/outage.rs`).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code

mod common;

#[tokio::test]
async fn apiserver_outage_loses_nothing() {
    common::outage::survive("kube-apiserver").await;
}
