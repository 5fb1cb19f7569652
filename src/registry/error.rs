//! Every failure the API can answer with, mapped in one place to its OCI error code and status.

use super::digest::DigestError;
use super::names::NameError;
use super::storage::StorageError;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error("blob unknown to registry")]
    BlobUnknown,
    #[error("blob upload unknown to registry")]
    BlobUploadUnknown,
    #[error("blob upload invalid: {0}")]
    BlobUploadInvalid(String),
    #[error("requested range not satisfiable: {0}")]
    RangeNotSatisfiable(String),
    #[error("provided digest did not match uploaded content")]
    DigestMismatch,
    #[error("{0}")]
    DigestInvalid(#[from] DigestError),
    #[error("manifest references a blob or manifest that is not in this repository: {0}")]
    ManifestBlobUnknown(String),
    #[error("manifest invalid: {0}")]
    ManifestInvalid(String),
    #[error("manifest is larger than the {0} byte limit")]
    ManifestTooLarge(usize),
    #[error("manifest unknown to registry")]
    ManifestUnknown,
    #[error("{0}")]
    NameInvalid(#[from] NameError),
    #[error("repository name not known to registry")]
    NameUnknown,
    #[error("provided length did not match content length: {0}")]
    SizeInvalid(String),
    #[error("authentication required")]
    Unauthorized { challenge: HeaderValue },
    #[error("requested access to the resource is denied: {0}")]
    Denied(&'static str),
    #[error("the operation is unsupported: {0}")]
    Unsupported(&'static str),
    #[error("invalid request: {0}")]
    BadRequest(String),
    #[error("{}", storage_message(.0))]
    Storage(#[from] StorageError),
}

/// What a client is told about a storage failure: whether to retry, never the backend's detail
/// (which is logged).
fn storage_message(e: &StorageError) -> &'static str {
    match e {
        StorageError::Unavailable(_) => "storage is unavailable; retry later",
        _ => "storage failure",
    }
}

impl RegistryError {
    fn code_and_status(&self) -> (&'static str, StatusCode) {
        use RegistryError::*;
        match self {
            BlobUnknown => ("BLOB_UNKNOWN", StatusCode::NOT_FOUND),
            BlobUploadUnknown => ("BLOB_UPLOAD_UNKNOWN", StatusCode::NOT_FOUND),
            BlobUploadInvalid(_) => ("BLOB_UPLOAD_INVALID", StatusCode::BAD_REQUEST),
            RangeNotSatisfiable(_) => ("BLOB_UPLOAD_INVALID", StatusCode::RANGE_NOT_SATISFIABLE),
            DigestMismatch | DigestInvalid(_) => ("DIGEST_INVALID", StatusCode::BAD_REQUEST),
            ManifestBlobUnknown(_) => ("MANIFEST_BLOB_UNKNOWN", StatusCode::BAD_REQUEST),
            ManifestInvalid(_) => ("MANIFEST_INVALID", StatusCode::BAD_REQUEST),
            ManifestTooLarge(_) => ("SIZE_INVALID", StatusCode::PAYLOAD_TOO_LARGE),
            ManifestUnknown => ("MANIFEST_UNKNOWN", StatusCode::NOT_FOUND),
            NameInvalid(_) => ("NAME_INVALID", StatusCode::BAD_REQUEST),
            NameUnknown => ("NAME_UNKNOWN", StatusCode::NOT_FOUND),
            SizeInvalid(_) => ("SIZE_INVALID", StatusCode::BAD_REQUEST),
            Unauthorized { .. } => ("UNAUTHORIZED", StatusCode::UNAUTHORIZED),
            Denied(_) => ("DENIED", StatusCode::FORBIDDEN),
            Unsupported(_) => ("UNSUPPORTED", StatusCode::METHOD_NOT_ALLOWED),
            BadRequest(_) => ("UNSUPPORTED", StatusCode::BAD_REQUEST),
            Storage(StorageError::NotFound) => ("BLOB_UNKNOWN", StatusCode::NOT_FOUND),
            // Distribution's code for a backend that does not answer; clients retry on 503.
            Storage(StorageError::Unavailable(_)) => {
                ("UNAVAILABLE", StatusCode::SERVICE_UNAVAILABLE)
            }
            Storage(_) => ("UNKNOWN", StatusCode::INTERNAL_SERVER_ERROR),
        }
    }
}

impl IntoResponse for RegistryError {
    fn into_response(self) -> Response {
        let (code, status) = self.code_and_status();
        if status.is_server_error() {
            tracing::error!(error = ?self, "request failed");
        }
        let body = serde_json::json!({
            "errors": [{ "code": code, "message": self.to_string(), "detail": null }]
        });
        let mut response = super::api::Json::ok(body);
        *response.status_mut() = status;
        if let RegistryError::Unauthorized { challenge } = self {
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, challenge);
        }
        response
    }
}
