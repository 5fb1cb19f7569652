//! The S3 backend: the same layout as the filesystem backend, as keys under an optional
//! prefix of one bucket, through the `object_store` crate (request signing, multipart uploads,
//! conditional puts, listings, retries).
//!
//! ```text
//! blobs/<alg>/<hex[..2]>/<hex>                         content, one object, written whole
//! uploads/<id>/state                                   JSON: repository, segments, hash checkpoint
//! uploads/<id>/segments/<random>                       the bytes of one PATCH
//! repositories/<name>/_layers/<alg>/<hex>              "this repository may read this blob"
//! repositories/<name>/_manifests/revisions/<alg>/<hex> media type of a manifest in this repository
//! repositories/<name>/_manifests/tags/<tag>/current    digest the tag points to
//! repositories/<name>/_referrers/<alg>/<subject>/<alg>-<hex>  descriptor of a referrer
//! _catalog/<name>                                      one empty object per repository
//! _wharf/<key>                                         the registry's own documents
//! ```
//! Objects become visible whole (a PUT, a completed multipart upload or a server-side copy), so
//! a crash leaves at most unreferenced segments, an abandoned multipart upload or an unlinked
//! blob, never a partial object. Every replica reads the bucket: nothing here is cached except
//! manifest bytes by digest (immutable) and which repositories this process has indexed.

mod documents;
mod inventory;
mod uploads;

use super::manifest_cache::ManifestCache;
use super::{BlobBody, StorageError, StorageResult, Store, StoredManifest};
use crate::registry::digest::Digest;
use crate::registry::names::{RepoName, Tag};
use bytes::Bytes;
use futures_util::{StreamExt, TryStreamExt};
use object_store::aws::{AmazonS3, AmazonS3Builder};
use object_store::path::Path;
use object_store::{
    ClientOptions, GetOptions, GetRange, ObjectStore, ObjectStoreExt, PutMode, PutOptions,
    PutPayload, RetryConfig,
};
use std::collections::HashSet;
use std::io;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Concurrent requests of one listing's follow-up reads (referrer descriptors, tags).
const READ_CONCURRENCY: usize = 16;
/// How long a presigned blob URL stays valid.
const PRESIGN_LIFETIME: Duration = Duration::from_secs(20 * 60);

/// Where the bucket is and how to reach it (`storage.s3` in the registry config).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct S3Config {
    pub bucket: String,
    /// Keys start with `<prefix>/` (none: at the bucket's root).
    pub prefix: Option<String>,
    pub region: Option<String>,
    /// `https://host:port` of an S3-compatible server; none: AWS.
    pub endpoint: Option<String>,
    /// Path-style requests (`endpoint/bucket/key`), what MinIO, Ceph and Garage expect.
    pub path_style: bool,
    /// PEM bundle of the CAs the endpoint's certificate is checked against (besides the system's).
    pub ca_bundle: Option<std::path::PathBuf>,
    /// Answer blob GETs with a redirect to a presigned URL instead of streaming them.
    pub redirect: bool,
}

pub struct S3Store {
    client: Arc<AmazonS3>,
    prefix: String,
    redirect: bool,
    /// Every request runs on this runtime of its own, not on the server's: garbage collection
    /// waits for requests while holding a lock that the server's request handlers may also wait
    /// for, and if the requests needed the handlers' threads to make progress, both would wait
    /// forever (on a 2-core machine with two worker threads, they did). The blocking `Inventory`
    /// calls run their futures here too.
    runtime: tokio::runtime::Handle,
    io_runtime: Option<tokio::runtime::Runtime>,
    manifest_cache: ManifestCache,
    /// Repositories this process has written a catalog entry for.
    indexed: Mutex<HashSet<RepoName>>,
    /// When the blob store's size was last listed, and what it was.
    blob_bytes_sample: Mutex<Option<(std::time::Instant, u64)>>,
}

#[derive(Debug, thiserror::Error)]
pub enum S3SetupError {
    #[error("cannot read the S3 CA bundle {path}: {source}")]
    CaBundle { path: String, source: io::Error },
    #[error("the S3 CA bundle {path} holds no usable certificate: {message}")]
    CaBundleInvalid { path: String, message: String },
    #[error("invalid S3 configuration: {0}")]
    Invalid(String),
    #[error("bucket {bucket:?} is not usable: {reason}")]
    Unreachable { bucket: String, reason: String },
}

/// What a failed request means for a registry client: a missing object is `NotFound`, a server
/// or network that does not answer is `Unavailable` (503, the client may retry), anything else
/// is a storage failure.
pub(super) fn storage_error(operation: &str, key: &Path, e: object_store::Error) -> StorageError {
    use object_store::Error as E;
    match e {
        E::NotFound { .. } => StorageError::NotFound,
        E::Precondition { .. } | E::AlreadyExists { .. } => {
            StorageError::Backend(format!("{operation} {key}: precondition failed: {e}"))
        }
        E::PermissionDenied { .. } | E::Unauthenticated { .. } => {
            StorageError::Unavailable(format!(
                "{operation} {key}: the S3 credentials were refused: {}",
                explain(&e.to_string())
            ))
        }
        other => {
            let text = other.to_string();
            if is_unavailable(&text) {
                StorageError::Unavailable(format!("{operation} {key}: {}", explain(&text)))
            } else {
                StorageError::Backend(format!("{operation} {key}: {}", explain(&text)))
            }
        }
    }
}

/// A failed request in words a user can act on: the S3 error code's meaning when the server sent
/// one (its XML body also echoes the request, which says nothing useful), else the transport
/// failure.
pub fn explain(text: &str) -> String {
    let between = |open: &str, close: &str| {
        let start = text.find(open)? + open.len();
        let end = text[start..].find(close)? + start;
        Some(text[start..end].to_owned())
    };
    if let Some(code) = between("<Code>", "</Code>") {
        let message = between("<Message>", "</Message>").unwrap_or_default();
        let advice = match code.as_str() {
            "NoSuchBucket" => "the bucket does not exist (the registry does not create it)",
            "SignatureDoesNotMatch" => "the secret access key is wrong",
            "InvalidAccessKeyId" => "the access key id is unknown to the server",
            "AccessDenied" => "the credentials may not use this bucket",
            "AuthorizationHeaderMalformed" | "InvalidRegion" => "the region is wrong",
            _ => "",
        };
        return match advice {
            "" => format!("the S3 server answered {code}: {message}"),
            advice => format!("{advice} (S3 answered {code}: {message})"),
        };
    }
    if text.contains("error sending request") || text.contains("Connect") {
        return "the S3 endpoint does not answer (connection failed after retries)".to_owned();
    }
    let first = text.lines().next().unwrap_or_default();
    first.chars().take(300).collect()
}

/// Connection failures, timeouts and 5xx answers, which `object_store` reports as generic
/// errors after its retries.
fn is_unavailable(text: &str) -> bool {
    let lower = text.to_ascii_lowercase();
    [
        "connect",
        "timed out",
        "timeout",
        "503",
        "502",
        "500 internal",
        "slow down",
        "403 forbidden",
        "signaturedoesnotmatch",
        "invalidaccesskeyid",
        "accessdenied",
        "no such bucket",
        "nosuchbucket",
    ]
    .iter()
    .any(|needle| lower.contains(needle))
}

impl S3Store {
    /// Builds the client and checks that the bucket answers, so that a wrong endpoint, wrong
    /// keys or a missing bucket stop the registry at start with a message saying which.
    /// Credentials come from the environment (`AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`,
    /// `AWS_SESSION_TOKEN`, web identity, instance metadata), as every AWS client reads them.
    pub async fn connect(config: &S3Config) -> Result<Arc<S3Store>, S3SetupError> {
        if config.bucket.is_empty() {
            return Err(S3SetupError::Invalid("storage.s3.bucket is empty".into()));
        }
        let mut options = ClientOptions::new()
            .with_connect_timeout(Duration::from_secs(5))
            // Blob bodies stream for as long as they take; a stalled connection is caught by
            // the read timeout instead.
            .with_timeout_disabled()
            .with_read_timeout(Duration::from_secs(60))
            .with_pool_max_idle_per_host(64);
        if let Some(path) = &config.ca_bundle {
            let pem = std::fs::read(path).map_err(|source| S3SetupError::CaBundle {
                path: path.display().to_string(),
                source,
            })?;
            let certs = object_store::Certificate::from_pem_bundle(&pem).map_err(|e| {
                S3SetupError::CaBundleInvalid {
                    path: path.display().to_string(),
                    message: e.to_string(),
                }
            })?;
            if certs.is_empty() {
                return Err(S3SetupError::CaBundleInvalid {
                    path: path.display().to_string(),
                    message: "no PEM certificate in it".into(),
                });
            }
            for cert in certs {
                options = options.with_root_certificate(cert);
            }
        }
        let io_runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("wharf-s3-io")
            .enable_all()
            .build()
            .map_err(|e| S3SetupError::Invalid(format!("cannot start the S3 I/O threads: {e}")))?;
        let mut builder = AmazonS3Builder::from_env()
            .with_http_connector(object_store::client::SpawnedReqwestConnector::new(
                io_runtime.handle().clone(),
            ))
            .with_bucket_name(&config.bucket)
            .with_client_options(options)
            .with_retry(RetryConfig {
                max_retries: 3,
                retry_timeout: Duration::from_secs(15),
                ..RetryConfig::default()
            });
        if let Some(region) = &config.region {
            builder = builder.with_region(region);
        }
        if let Some(endpoint) = &config.endpoint {
            builder = builder
                .with_endpoint(endpoint)
                .with_allow_http(endpoint.starts_with("http://"));
        }
        builder = builder.with_virtual_hosted_style_request(!config.path_style);
        let client = match builder.build() {
            Ok(client) => client,
            Err(e) => {
                // Dropping a runtime here, inside another, would block: let it go in the background.
                io_runtime.shutdown_background();
                return Err(S3SetupError::Invalid(e.to_string()));
            }
        };
        let prefix = config
            .prefix
            .as_deref()
            .map(|p| p.trim_matches('/').to_owned())
            .unwrap_or_default();
        let store = Arc::new(S3Store {
            client: Arc::new(client),
            prefix,
            redirect: config.redirect,
            runtime: io_runtime.handle().clone(),
            io_runtime: Some(io_runtime),
            manifest_cache: ManifestCache::default(),
            indexed: Mutex::new(HashSet::new()),
            blob_bytes_sample: Mutex::new(None),
        });
        store
            .check_reachable()
            .await
            .map_err(|reason| S3SetupError::Unreachable {
                bucket: config.bucket.clone(),
                reason,
            })?;
        Ok(store)
    }

    async fn check_reachable(&self) -> Result<(), String> {
        // A listing needs the bucket, the keys and the endpoint all to be right.
        let probe = self.key("_wharf");
        self.client
            .list_with_delimiter(Some(&probe))
            .await
            .map(drop)
            .map_err(|e| match e {
                object_store::Error::NotFound { .. } => "the bucket does not exist".to_owned(),
                other => explain(&other.to_string()),
            })
    }

    /// The object key of a path relative to the prefix.
    pub(super) fn key(&self, relative: &str) -> Path {
        if self.prefix.is_empty() {
            Path::from(relative)
        } else {
            Path::from(format!("{}/{relative}", self.prefix))
        }
    }

    /// A key relative to the prefix again (listings return full keys).
    pub(super) fn relative<'a>(&self, key: &'a Path) -> &'a str {
        let full = key.as_ref();
        if self.prefix.is_empty() {
            full
        } else {
            full.strip_prefix(self.prefix.as_str())
                .and_then(|rest| rest.strip_prefix('/'))
                .unwrap_or(full)
        }
    }

    fn blob_key(&self, d: &Digest) -> Path {
        self.key(&format!(
            "blobs/{}/{}/{}",
            d.algorithm().name(),
            &d.hex()[..2],
            d.hex()
        ))
    }

    fn repo_key(&self, repo: &str, rest: &str) -> Path {
        self.key(&format!("repositories/{repo}/{rest}"))
    }

    fn layer_key(&self, repo: &str, d: &Digest) -> Path {
        self.repo_key(
            repo,
            &format!("_layers/{}/{}", d.algorithm().name(), d.hex()),
        )
    }

    fn revision_key(&self, repo: &str, d: &Digest) -> Path {
        self.repo_key(
            repo,
            &format!("_manifests/revisions/{}/{}", d.algorithm().name(), d.hex()),
        )
    }

    fn tags_prefix(&self, repo: &RepoName) -> Path {
        self.repo_key(repo.as_str(), "_manifests/tags")
    }

    /// A tag is a "directory" holding one object, so that the tag list is the listing's common
    /// prefixes: S3 and S3-compatible servers produce those without reading each object's
    /// metadata, which a listing of the objects themselves costs on servers over a filesystem.
    fn tag_key(&self, repo: &RepoName, tag: &str) -> Path {
        self.repo_key(repo.as_str(), &format!("_manifests/tags/{tag}/current"))
    }

    /// The repository's tag names, unsorted: one delimited listing.
    async fn tag_names(&self, repo: &RepoName) -> StorageResult<Vec<String>> {
        let prefix = self.tags_prefix(repo);
        let listed = self
            .client
            .list_with_delimiter(Some(&prefix))
            .await
            .map_err(|e| storage_error("list", &prefix, e))?;
        Ok(listed
            .common_prefixes
            .iter()
            .filter_map(|p| p.filename().map(str::to_owned))
            .collect())
    }

    async fn tag_target(
        &self,
        repo: &RepoName,
        tag: &Tag,
    ) -> StorageResult<Option<(Digest, Option<String>)>> {
        match self.get_bytes(&self.tag_key(repo, tag.as_str())).await? {
            None => Ok(None),
            Some(raw) => Self::parse_tag_object(&raw, &format!("tag {tag} in {repo}")).map(Some),
        }
    }

    fn referrers_prefix(&self, repo: &RepoName, subject: &Digest) -> Path {
        self.repo_key(
            repo.as_str(),
            &format!(
                "_referrers/{}/{}",
                subject.algorithm().name(),
                subject.hex()
            ),
        )
    }

    pub(super) async fn get_bytes(&self, key: &Path) -> StorageResult<Option<Bytes>> {
        match self.client.get(key).await {
            Ok(result) => result
                .bytes()
                .await
                .map(Some)
                .map_err(|e| storage_error("read", key, e)),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(storage_error("read", key, e)),
        }
    }

    pub(super) async fn put_bytes(&self, key: &Path, bytes: Bytes) -> StorageResult<()> {
        let mut attempt = 0;
        loop {
            match self.client.put(key, PutPayload::from(bytes.clone())).await {
                Ok(_) => return Ok(()),
                // A plain PUT has no precondition: a 409 is the server's own transient conflict
                // (versitygw's posix backend answers ExistingObjectIsDirectory while a delete
                // next to the key removes their shared parent directory). Try again.
                Err(object_store::Error::AlreadyExists { .. }) if attempt < 5 => {
                    attempt += 1;
                    tokio::time::sleep(Duration::from_millis(10 << attempt)).await;
                }
                Err(e) => return Err(storage_error("write", key, e)),
            }
        }
    }

    /// Writes only when nothing is at `key`; returns whether it wrote.
    ///
    /// "Already exists" is checked against what is there: the same bytes mean our own write
    /// landed and its answer was lost (the client retried a PUT the server had done), and
    /// nothing at all means the server's transient conflict (versitygw's posix backend answers
    /// 409 while a delete nearby removes a shared parent directory): write again.
    pub(super) async fn create_bytes(&self, key: &Path, bytes: Bytes) -> StorageResult<bool> {
        let mut attempt = 0;
        loop {
            let options = PutOptions {
                mode: PutMode::Create,
                ..PutOptions::default()
            };
            match self
                .client
                .put_opts(key, PutPayload::from(bytes.clone()), options)
                .await
            {
                Ok(_) => return Ok(true),
                Err(object_store::Error::AlreadyExists { .. }) => {
                    match self.get_bytes(key).await? {
                        Some(there) => return Ok(there == bytes),
                        None if attempt < 5 => {
                            attempt += 1;
                            tokio::time::sleep(Duration::from_millis(10 << attempt)).await;
                        }
                        None => {
                            return Err(StorageError::Unavailable(format!(
                                "create {key}: the server keeps answering that it exists, yet nothing is there"
                            )));
                        }
                    }
                }
                Err(e) => return Err(storage_error("create", key, e)),
            }
        }
    }

    pub(super) async fn exists(&self, key: &Path) -> StorageResult<bool> {
        match self.client.head(key).await {
            Ok(_) => Ok(true),
            Err(object_store::Error::NotFound { .. }) => Ok(false),
            Err(e) => Err(storage_error("stat", key, e)),
        }
    }

    /// Deletes `key`; returns whether it existed (S3 answers a delete the same either way, so
    /// this asks first).
    pub(super) async fn delete_if_present(&self, key: &Path) -> StorageResult<bool> {
        if !self.exists(key).await? {
            return Ok(false);
        }
        match self.client.delete(key).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(true),
            Err(e) => Err(storage_error("delete", key, e)),
        }
    }

    /// Every key under `prefix/`, relative to it.
    pub(super) async fn list_names(&self, prefix: &Path) -> StorageResult<Vec<String>> {
        let base = format!("{}/", prefix.as_ref());
        self.client
            .list(Some(prefix))
            .map_ok(|meta| {
                meta.location
                    .as_ref()
                    .strip_prefix(base.as_str())
                    .unwrap_or_default()
                    .to_owned()
            })
            .try_collect()
            .await
            .map_err(|e| storage_error("list", prefix, e))
    }

    /// Makes `repo` appear in the catalog (once per repository and process).
    async fn index_repository(&self, repo: &RepoName) -> StorageResult<()> {
        if self
            .indexed
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .contains(repo)
        {
            return Ok(());
        }
        let key = self.key(&format!("_catalog/{repo}"));
        self.put_bytes(&key, Bytes::new()).await?;
        let mut indexed = self.indexed.lock().unwrap_or_else(|e| e.into_inner());
        if indexed.len() >= 100_000 {
            indexed.clear();
        }
        indexed.insert(repo.clone());
        Ok(())
    }

    /// A tag's object: the manifest's digest and, on a second line, its media type, so that a
    /// GET by tag is answered without reading the revision link.
    fn tag_object(digest: &Digest, media_type: &str) -> Bytes {
        Bytes::from(format!("{digest}\n{media_type}").into_bytes())
    }

    /// The digest and media type a tag object holds (a bare digest has no media type).
    pub(super) fn parse_tag_object(
        raw: &[u8],
        what: &str,
    ) -> StorageResult<(Digest, Option<String>)> {
        let corrupt = || StorageError::Corrupt(what.to_owned());
        let text = std::str::from_utf8(raw).map_err(|_| corrupt())?;
        let (digest, media_type) = match text.split_once('\n') {
            Some((digest, media_type)) => (digest, Some(media_type.trim())),
            None => (text, None),
        };
        let digest = digest.trim().parse().map_err(|_| corrupt())?;
        let media_type = media_type.filter(|m| !m.is_empty()).map(str::to_owned);
        Ok((digest, media_type))
    }
}

impl Drop for S3Store {
    fn drop(&mut self) {
        // The store goes away inside the server's runtime, where a runtime cannot be dropped
        // (it would block): let its threads finish in the background.
        if let Some(runtime) = self.io_runtime.take() {
            runtime.shutdown_background();
        }
    }
}

impl Store for S3Store {
    async fn blob_size(&self, digest: &Digest) -> StorageResult<Option<u64>> {
        let key = self.blob_key(digest);
        match self.client.head(&key).await {
            Ok(meta) => Ok(Some(meta.size)),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(storage_error("stat", &key, e)),
        }
    }

    async fn read_blob(
        &self,
        digest: &Digest,
        range: Option<(u64, u64)>,
    ) -> StorageResult<BlobBody> {
        let key = self.blob_key(digest);
        let options = GetOptions {
            range: range.map(|(start, end)| GetRange::Bounded(start..end)),
            ..GetOptions::default()
        };
        let result = self
            .client
            .get_opts(&key, options)
            .await
            .map_err(|e| storage_error("read", &key, e))?;
        let len = result.range.end - result.range.start;
        let stream = result
            .into_stream()
            .map_err(|e| io::Error::other(e.to_string()))
            .boxed();
        Ok(BlobBody { len, stream })
    }

    async fn blob_url(&self, digest: &Digest) -> StorageResult<Option<String>> {
        if !self.redirect {
            return Ok(None);
        }
        use object_store::signer::Signer;
        let key = self.blob_key(digest);
        self.client
            .signed_url(axum::http::Method::GET, &key, PRESIGN_LIFETIME)
            .await
            .map(|url| Some(url.to_string()))
            .map_err(|e| storage_error("presign", &key, e))
    }

    async fn link_blob(&self, repo: &RepoName, digest: &Digest) -> StorageResult<()> {
        self.index_repository(repo).await?;
        self.put_bytes(&self.layer_key(repo.as_str(), digest), Bytes::new())
            .await
    }

    async fn blob_linked(&self, repo: &RepoName, digest: &Digest) -> StorageResult<bool> {
        self.exists(&self.layer_key(repo.as_str(), digest)).await
    }

    async fn unlink_blob(&self, repo: &RepoName, digest: &Digest) -> StorageResult<bool> {
        self.delete_if_present(&self.layer_key(repo.as_str(), digest))
            .await
    }

    async fn put_manifest(
        &self,
        repo: &RepoName,
        digest: &Digest,
        manifest: &StoredManifest,
    ) -> StorageResult<()> {
        self.index_repository(repo).await?;
        // Written every time rather than only when missing: the fresh object is what tells a
        // concurrent collection on another replica that it is in use (see `gc::shared`).
        self.put_bytes(&self.blob_key(digest), manifest.bytes.clone())
            .await?;
        // The content is in place before the link that makes it visible.
        self.put_bytes(
            &self.revision_key(repo.as_str(), digest),
            Bytes::from(manifest.media_type.clone().into_bytes()),
        )
        .await?;
        self.manifest_cache.put(digest, &manifest.bytes);
        Ok(())
    }

    async fn get_manifest(
        &self,
        repo: &RepoName,
        digest: &Digest,
    ) -> StorageResult<Option<StoredManifest>> {
        let Some(media_type) = self
            .get_bytes(&self.revision_key(repo.as_str(), digest))
            .await?
        else {
            return Ok(None);
        };
        let media_type = String::from_utf8(media_type.to_vec())
            .map_err(|_| StorageError::Corrupt(format!("media type of {digest} in {repo}")))?;
        let bytes = match self.manifest_cache.get(digest) {
            Some(b) => b,
            None => {
                let Some(b) = self.get_bytes(&self.blob_key(digest)).await? else {
                    return Ok(None);
                };
                self.manifest_cache.put(digest, &b);
                b
            }
        };
        Ok(Some(StoredManifest { bytes, media_type }))
    }

    async fn delete_manifest(&self, repo: &RepoName, digest: &Digest) -> StorageResult<bool> {
        let link = self.revision_key(repo.as_str(), digest);
        if !self.exists(&link).await? {
            return Ok(false);
        }
        // Tags first: a tag must never point to a manifest that is gone.
        for tag in self.tag_names(repo).await? {
            let key = self.tag_key(repo, &tag);
            if let Some(target) = self.get_bytes(&key).await?
                && Self::parse_tag_object(&target, "tag")
                    .ok()
                    .map(|(d, _)| d)
                    .as_ref()
                    == Some(digest)
            {
                self.delete_if_present(&key).await?;
            }
        }
        self.delete_if_present(&link).await
    }

    async fn set_tag(
        &self,
        repo: &RepoName,
        tag: &Tag,
        digest: &Digest,
        media_type: &str,
    ) -> StorageResult<()> {
        self.put_bytes(
            &self.tag_key(repo, tag.as_str()),
            Self::tag_object(digest, media_type),
        )
        .await
    }

    async fn get_tag(&self, repo: &RepoName, tag: &Tag) -> StorageResult<Option<Digest>> {
        Ok(self.tag_target(repo, tag).await?.map(|(digest, _)| digest))
    }

    async fn get_tagged_manifest(
        &self,
        repo: &RepoName,
        tag: &Tag,
    ) -> StorageResult<Option<(Digest, StoredManifest)>> {
        let Some((digest, media_type)) = self.tag_target(repo, tag).await? else {
            return Ok(None);
        };
        // A tag is removed before the manifest it points at, and collection never removes a
        // tagged manifest: a tag that is there vouches for the revision link.
        let cached = media_type.and_then(|m| Some((self.manifest_cache.get(&digest)?, m)));
        let manifest = match cached {
            Some((bytes, media_type)) => Some(StoredManifest { bytes, media_type }),
            None => self.get_manifest(repo, &digest).await?,
        };
        Ok(manifest.map(|m| (digest, m)))
    }

    async fn delete_tag(&self, repo: &RepoName, tag: &Tag) -> StorageResult<bool> {
        self.delete_if_present(&self.tag_key(repo, tag.as_str()))
            .await
    }

    async fn list_tags(&self, repo: &RepoName) -> StorageResult<Option<Arc<Vec<String>>>> {
        let mut tags = self.tag_names(repo).await?;
        if tags.is_empty() {
            // A repository with blobs and no tags lists as empty; one with nothing, not at all.
            let key = self.key(&format!("_catalog/{repo}"));
            return Ok(self.exists(&key).await?.then(|| Arc::new(Vec::new())));
        }
        tags.sort_unstable();
        Ok(Some(Arc::new(tags)))
    }

    async fn list_repositories(&self) -> StorageResult<Vec<String>> {
        let mut names = self.list_names(&self.key("_catalog")).await?;
        names.sort_unstable();
        Ok(names)
    }

    async fn add_referrer(
        &self,
        repo: &RepoName,
        subject: &Digest,
        referrer: &Digest,
        descriptor: &[u8],
    ) -> StorageResult<()> {
        let key = self.key(&format!(
            "{}/{}-{}",
            self.relative(&self.referrers_prefix(repo, subject)),
            referrer.algorithm().name(),
            referrer.hex()
        ));
        self.put_bytes(&key, Bytes::copy_from_slice(descriptor))
            .await
    }

    async fn remove_referrer(
        &self,
        repo: &RepoName,
        subject: &Digest,
        referrer: &Digest,
    ) -> StorageResult<()> {
        let key = self.key(&format!(
            "{}/{}-{}",
            self.relative(&self.referrers_prefix(repo, subject)),
            referrer.algorithm().name(),
            referrer.hex()
        ));
        self.delete_if_present(&key).await.map(drop)
    }

    async fn list_referrers(&self, repo: &RepoName, subject: &Digest) -> StorageResult<Vec<Bytes>> {
        let prefix = self.referrers_prefix(repo, subject);
        let mut names = self.list_names(&prefix).await?;
        names.sort_unstable();
        let reads = names.into_iter().map(|name| {
            let key = self.key(&format!("{}/{name}", self.relative(&prefix)));
            async move { self.get_bytes(&key).await }
        });
        let found: Vec<Option<Bytes>> = futures_util::stream::iter(reads)
            .buffered(READ_CONCURRENCY)
            .try_collect()
            .await?;
        Ok(found.into_iter().flatten().collect())
    }
}

#[cfg(test)]
mod tests {
    use super::{S3Store, explain};
    use crate::registry::digest::{Algorithm, Digest};

    #[test]
    fn tag_objects_carry_the_media_type_and_old_ones_still_read() {
        let digest = Digest::of(Algorithm::Sha256, b"manifest");
        let media_type = "application/vnd.oci.image.index.v1+json";
        let object = S3Store::tag_object(&digest, media_type);
        let (read, kept) = S3Store::parse_tag_object(&object, "tag").unwrap();
        assert_eq!((read, kept.as_deref()), (digest.clone(), Some(media_type)));
        // A bare digest (what a tag held before the media type joined it) has none.
        let bare = digest.to_string();
        let (read, kept) = S3Store::parse_tag_object(bare.as_bytes(), "tag").unwrap();
        assert_eq!((read, kept), (digest, None));
        assert!(S3Store::parse_tag_object(b"sha256:nothex\nx", "tag").is_err());
        assert!(S3Store::parse_tag_object(&[0xff, 0xfe], "tag").is_err());
    }

    #[test]
    fn failures_are_explained_without_the_echoed_request() {
        let refused = "Generic S3 error: list: 403 Forbidden: <?xml version=\"1.0\"?><Error><Code>SignatureDoesNotMatch</Code><Message>The request signature we calculated does not match.</Message><StringToSign>AWS4-HMAC-SHA256 secret-looking</StringToSign></Error>";
        let said = explain(refused);
        assert!(said.starts_with("the secret access key is wrong"), "{said}");
        assert!(
            !said.contains("StringToSign") && !said.contains("secret-looking"),
            "{said}"
        );
        let missing = "<Error><Code>NoSuchBucket</Code><Message>The specified bucket does not exist.</Message></Error>";
        assert!(explain(missing).starts_with("the bucket does not exist"));
        let down = "Error performing GET http://127.0.0.1:9/b after 3 retries - HTTP error: error sending request";
        assert_eq!(
            explain(down),
            "the S3 endpoint does not answer (connection failed after retries)"
        );
        assert_eq!(explain("odd\nsecond line"), "odd");
    }
}
