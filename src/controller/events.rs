//! Events are diagnostics: a few background workers record them, so a reconcile never waits on one
//! and a burst of thousands of accounts spends the API server's write capacity on status first.
//!
//! Guarantees: Events of one account keep their order when the queue is not full (one worker per
//! account would be stricter; Events carry their own timestamps); a full queue drops the newest
//! Event (logged at debug) instead of blocking or growing without bound.

use futures::StreamExt;
use k8s_openapi::api::core::v1::ObjectReference;
use kube::runtime::events::{Event, Recorder};
use tokio::sync::mpsc;

/// Events waiting to be written at most; beyond that they are dropped.
const CAPACITY: usize = 10_000;
/// Event writes in flight at once.
const WORKERS: usize = 4;

/// The sending side; the workers stop once every sender is gone.
#[derive(Clone)]
pub struct EventQueue {
    tx: mpsc::Sender<(Event, ObjectReference)>,
}

impl EventQueue {
    pub fn start(recorder: Recorder) -> EventQueue {
        let (tx, rx) = mpsc::channel::<(Event, ObjectReference)>(CAPACITY);
        let stream =
            futures::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|item| (item, rx)) });
        tokio::spawn(stream.for_each_concurrent(WORKERS, move |(ev, reference)| {
            let recorder = recorder.clone();
            async move {
                if let Err(e) = recorder.publish(&ev, &reference).await {
                    tracing::debug!(error = %e, reason = %ev.reason, "cannot record event");
                }
            }
        }));
        EventQueue { tx }
    }

    pub fn push(&self, ev: Event, reference: ObjectReference) {
        if self.tx.try_send((ev, reference)).is_err() {
            tracing::debug!("event queue full; dropping an Event");
        }
    }
}
