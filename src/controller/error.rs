//! Reconcile errors, one variant per step that can fail, each carrying its source.
//!
//! The variant names the step, so a log line or `agentauth_reconcile_errors_total{category}`
//! says where a reconcile stopped without formatting any detail (which could carry remote text).

use crate::store::operator_copy::StoreError;

/// Why a reconcile stopped. Every variant is retried by the error policy.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("watch caches are not synced yet")]
    NotSynced,
    #[error("reading the operator's copy: {0}")]
    ReadRecord(#[source] StoreError),
    #[error("writing the operator's copy: {0}")]
    WriteRecord(#[source] StoreError),
    #[error("deleting the operator's copy: {0}")]
    DeleteRecord(#[source] StoreError),
    #[error("updating the account's finalizer: {0}")]
    Finalizer(#[source] kube::Error),
    #[error("reading the agent Secret: {0}")]
    ReadSecret(#[source] kube::Error),
    #[error("publishing the agent Secret: {0}")]
    PublishSecret(#[source] kube::Error),
    #[error("deleting the agent Secret: {0}")]
    DeleteSecret(#[source] kube::Error),
    #[error("patching status: {0}")]
    PatchStatus(#[source] kube::Error),
}

impl Error {
    /// The failing step, as a metrics label and log field.
    pub fn category(&self) -> &'static str {
        match self {
            Error::NotSynced => "not_synced",
            Error::ReadRecord(_) => "read_record",
            Error::WriteRecord(_) => "write_record",
            Error::DeleteRecord(_) => "delete_record",
            Error::Finalizer(_) => "finalizer",
            Error::ReadSecret(_) => "read_secret",
            Error::PublishSecret(_) => "publish_secret",
            Error::DeleteSecret(_) => "delete_secret",
            Error::PatchStatus(_) => "patch_status",
        }
    }

    /// Someone else wrote first (the gateway, another reconcile): worth a quick retry on fresh data.
    pub fn is_conflict(&self) -> bool {
        let api_conflict = |e: &kube::Error| matches!(e, kube::Error::Api(s) if s.code == 409);
        match self {
            Error::WriteRecord(StoreError::Conflict) => true,
            Error::WriteRecord(StoreError::Api(e)) | Error::PatchStatus(e) | Error::Finalizer(e) => {
                api_conflict(e)
            }
            _ => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn api(code: u16) -> kube::Error {
        kube::Error::Api(
            kube::core::Status::failure("conflict", "Conflict")
                .with_code(code)
                .boxed(),
        )
    }

    #[test]
    fn the_category_names_the_step_and_conflicts_are_told_apart() {
        assert_eq!(
            Error::WriteRecord(StoreError::Conflict).category(),
            "write_record"
        );
        assert!(Error::WriteRecord(StoreError::Conflict).is_conflict());
        assert!(Error::PatchStatus(api(409)).is_conflict());
        assert!(!Error::PatchStatus(api(500)).is_conflict());
        assert!(!Error::ReadRecord(StoreError::Corrupt).is_conflict());
        assert_eq!(Error::PublishSecret(api(500)).category(), "publish_secret");
    }
}
