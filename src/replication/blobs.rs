//! Copying one blob: nothing when the destination repository has it, a cross-repository mount
//! when another destination repository of this run has it, otherwise the body streamed from
//! the source into one PUT (or PATCH chunks, when the destination refuses a body that large),
//! hashed on the way so that bytes that do not match their digest never complete an upload.
//! Two images sharing a layer copy it once: concurrent asks for one blob wait for the first.

use super::report::Counters;
use super::throttle::Throttle;
use crate::oci_client::{BlobBody, Client, Mounted, OciError, OciResult};
use crate::registry::digest::Digest;
use bytes::Bytes;
use futures_util::{Stream, StreamExt};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::OnceCell;

/// Chunk size when the destination wants the body in pieces.
const CHUNK: usize = 8 * 1024 * 1024;
/// Whole-blob tries (each streams the body again from the source).
const ATTEMPTS: u32 = 4;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BlobOutcome {
    Present,
    Mounted,
    Copied,
}

/// The outcome of one (destination repository, blob), shared by every task that needs it.
type BlobCell = Arc<OnceCell<BlobOutcome>>;

pub struct BlobCopier {
    pub source: Arc<Client>,
    pub destination: Arc<Client>,
    pub throttle: Option<Arc<Throttle>>,
    pub counters: Arc<Counters>,
    pub dry_run: bool,
    /// One cell per (destination repository, digest): the first task copies, the rest wait.
    done: Mutex<HashMap<(String, Digest), BlobCell>>,
    /// A destination repository known to hold each blob, to mount from.
    homes: Mutex<HashMap<Digest, String>>,
}

impl BlobCopier {
    pub fn new(
        source: Arc<Client>,
        destination: Arc<Client>,
        throttle: Option<Arc<Throttle>>,
        counters: Arc<Counters>,
        dry_run: bool,
    ) -> BlobCopier {
        BlobCopier {
            source,
            destination,
            throttle,
            counters,
            dry_run,
            done: Mutex::default(),
            homes: Mutex::default(),
        }
    }

    pub async fn copy(
        &self,
        source_repo: &str,
        dest_repo: &str,
        digest: &Digest,
        size: u64,
    ) -> OciResult<BlobOutcome> {
        let cell = {
            let mut done = self.done.lock().unwrap_or_else(|e| e.into_inner());
            done.entry((dest_repo.to_owned(), digest.clone()))
                .or_default()
                .clone()
        };
        let outcome = cell
            .get_or_try_init(|| self.copy_once(source_repo, dest_repo, digest, size))
            .await?;
        Ok(*outcome)
    }

    async fn copy_once(
        &self,
        source_repo: &str,
        dest_repo: &str,
        digest: &Digest,
        size: u64,
    ) -> OciResult<BlobOutcome> {
        if self
            .destination
            .blob_size(dest_repo, digest)
            .await?
            .is_some()
        {
            self.remember(digest, dest_repo);
            self.counters.blob_present();
            return Ok(BlobOutcome::Present);
        }
        if self.dry_run {
            self.counters.blob_copied();
            self.counters.bytes(size);
            return Ok(BlobOutcome::Copied);
        }
        let home = self
            .homes
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(digest)
            .cloned();
        let mut upload = None;
        if let Some(from) = home.filter(|h| h != dest_repo) {
            match self
                .destination
                .mount_blob(dest_repo, digest, &from)
                .await?
            {
                (Mounted::Yes, _) => {
                    self.remember(digest, dest_repo);
                    self.counters.blob_mounted();
                    return Ok(BlobOutcome::Mounted);
                }
                (Mounted::No, location) => upload = location,
            }
        }
        let mut chunked = false;
        let mut attempt = 0;
        loop {
            let location = match upload.take() {
                Some(location) => location,
                None => self.destination.start_upload(dest_repo).await?,
            };
            let body = self.source.get_blob(source_repo, digest).await?;
            let result = if chunked {
                self.send_chunked(dest_repo, location.clone(), digest, size, body)
                    .await
            } else {
                let stream = verified(
                    body,
                    digest.clone(),
                    size,
                    self.throttle.clone(),
                    self.counters.clone(),
                );
                self.destination
                    .finish_upload(
                        dest_repo,
                        location.clone(),
                        digest,
                        size,
                        reqwest::Body::wrap_stream(stream),
                    )
                    .await
            };
            match result {
                Ok(()) => {
                    self.remember(digest, dest_repo);
                    self.counters.blob_copied();
                    return Ok(BlobOutcome::Copied);
                }
                Err(e) if e.status() == Some(413) && !chunked => {
                    tracing::info!(repository = dest_repo, %digest, "the destination refuses the blob in one request; sending it in chunks");
                    self.destination.cancel_upload(dest_repo, location).await;
                    chunked = true;
                }
                Err(e)
                    if (e.is_transient() || matches!(e, OciError::Protocol { .. }))
                        && attempt + 1 < ATTEMPTS =>
                {
                    tracing::warn!(repository = dest_repo, %digest, error = %e, attempt, "blob copy failed, trying again");
                    self.destination.cancel_upload(dest_repo, location).await;
                    tokio::time::sleep(Duration::from_millis(500 << attempt)).await;
                    attempt += 1;
                }
                Err(e) => {
                    self.destination.cancel_upload(dest_repo, location).await;
                    return Err(e);
                }
            }
        }
    }

    async fn send_chunked(
        &self,
        dest_repo: &str,
        mut location: reqwest::Url,
        digest: &Digest,
        size: u64,
        body: BlobBody,
    ) -> OciResult<()> {
        let mut stream = Box::pin(verified(
            body,
            digest.clone(),
            size,
            self.throttle.clone(),
            self.counters.clone(),
        ));
        let mut offset = 0u64;
        let mut buffer = Vec::with_capacity(CHUNK.min(size as usize));
        loop {
            let next = stream.next().await;
            if let Some(chunk) = &next {
                let chunk = chunk
                    .as_ref()
                    .map_err(|e| self.protocol(dest_repo, e.to_string()))?;
                buffer.extend_from_slice(chunk);
            }
            if buffer.len() >= CHUNK || (next.is_none() && !buffer.is_empty()) {
                let piece = Bytes::from(std::mem::take(&mut buffer));
                let len = piece.len() as u64;
                location = self
                    .destination
                    .upload_chunk(dest_repo, location, offset, piece)
                    .await?;
                offset += len;
            }
            if next.is_none() {
                break;
            }
        }
        self.destination
            .close_upload(dest_repo, location, digest)
            .await
    }

    fn protocol(&self, repo: &str, message: String) -> OciError {
        OciError::Protocol {
            what: format!("copy a blob into {repo}"),
            host: self.source.host().to_owned(),
            message,
        }
    }

    fn remember(&self, digest: &Digest, repo: &str) {
        self.homes
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(digest.clone())
            .or_insert_with(|| repo.to_owned());
    }
}

/// The source's bytes as they pass, throttled and counted, ending in an error instead of the
/// last piece when they are more than `size`, or when everything arrived and the hash is not
/// `digest`: the upload then never completes.
fn verified(
    body: BlobBody,
    digest: Digest,
    size: u64,
    throttle: Option<Arc<Throttle>>,
    counters: Arc<Counters>,
) -> impl Stream<Item = Result<Bytes, std::io::Error>> + Send + 'static {
    let state = (body.stream, digest.algorithm().hasher(), 0u64, false);
    futures_util::stream::unfold(
        state,
        move |(mut stream, mut hasher, mut seen, finished)| {
            let digest = digest.clone();
            let throttle = throttle.clone();
            let counters = counters.clone();
            async move {
                if finished {
                    return None;
                }
                let broken = |message: String| std::io::Error::other(message);
                match stream.next().await {
                    Some(Ok(chunk)) => {
                        if let Some(t) = &throttle {
                            t.take(chunk.len()).await;
                        }
                        seen += chunk.len() as u64;
                        if seen > size {
                            return Some((
                                Err(broken(format!(
                                    "the source sent more than the {size} bytes of {digest}"
                                ))),
                                (stream, hasher, seen, true),
                            ));
                        }
                        hasher.update(&chunk);
                        counters.bytes(chunk.len() as u64);
                        if seen == size {
                            let got = std::mem::replace(&mut hasher, digest.algorithm().hasher())
                                .finish();
                            if got != digest {
                                return Some((
                                    Err(broken(format!(
                                        "the source's bytes for {digest} hash to {got}"
                                    ))),
                                    (stream, hasher, seen, true),
                                ));
                            }
                        }
                        Some((Ok(chunk), (stream, hasher, seen, false)))
                    }
                    Some(Err(e)) => {
                        Some((Err(broken(e.to_string())), (stream, hasher, seen, true)))
                    }
                    None if seen < size => Some((
                        Err(broken(format!(
                            "the source sent {seen} of the {size} bytes of {digest}"
                        ))),
                        (stream, hasher, seen, true),
                    )),
                    None => None,
                }
            }
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::digest::Algorithm;

    fn body(pieces: Vec<&'static [u8]>) -> BlobBody {
        BlobBody {
            length: None,
            stream: Box::pin(futures_util::stream::iter(
                pieces.into_iter().map(|p| Ok(Bytes::from_static(p))),
            )),
        }
    }

    async fn collect(body: BlobBody, digest: Digest, size: u64) -> Result<Vec<u8>, String> {
        let counters = Arc::new(Counters::default());
        let mut out = Vec::new();
        let mut stream = Box::pin(verified(body, digest, size, None, counters));
        while let Some(item) = stream.next().await {
            out.extend_from_slice(&item.map_err(|e| e.to_string())?);
        }
        Ok(out)
    }

    #[tokio::test]
    async fn only_bytes_that_match_their_digest_get_through_whole() {
        let digest = Digest::of(Algorithm::Sha256, b"hello world");
        assert_eq!(
            collect(body(vec![b"hello ", b"world"]), digest.clone(), 11)
                .await
                .unwrap(),
            b"hello world"
        );
        let wrong = collect(body(vec![b"hello ", b"WORLD"]), digest.clone(), 11)
            .await
            .unwrap_err();
        assert!(wrong.contains("hash to sha256:"), "{wrong}");
        let short = collect(body(vec![b"hello"]), digest.clone(), 11)
            .await
            .unwrap_err();
        assert!(short.contains("sent 5 of the 11 bytes"), "{short}");
        let long = collect(body(vec![b"hello world", b"!"]), digest, 11)
            .await
            .unwrap_err();
        assert!(long.contains("more than the 11 bytes"), "{long}");
    }
}
