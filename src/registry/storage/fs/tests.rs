use super::*;
use crate::registry::digest::Algorithm;
use crate::registry::storage::Uploads;
use futures_util::StreamExt;
use std::time::Duration;

const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";

fn repo(name: &str) -> RepoName {
    RepoName::parse(name).unwrap()
}

fn tag(name: &str) -> Tag {
    Tag::parse(name).unwrap()
}

async fn upload(store: &FsStore, repo: &RepoName, data: &[u8]) -> Digest {
    let id = store.create_upload(repo).await.unwrap();
    let body = futures_util::stream::iter(vec![Ok(Bytes::copy_from_slice(data))]);
    let (len, hasher) = store
        .append_upload(repo, &id, 0, body, Algorithm::Sha256.hasher())
        .await
        .unwrap();
    assert_eq!(len, data.len() as u64);
    let digest = hasher.finish();
    store.commit_upload(repo, &id, &digest).await.unwrap();
    digest
}

#[tokio::test]
async fn tag_lists_follow_writes_from_this_and_other_processes() {
    let dir = tempfile::tempdir().unwrap();
    let a = FsStore::new(dir.path(), false).unwrap();
    let b = FsStore::new(dir.path(), false).unwrap(); // another replica on the same storage
    let r = repo("team/app");
    assert_eq!(
        a.list_tags(&r).await.unwrap(),
        None,
        "no such repository yet"
    );
    let d = upload(&a, &r, b"manifest-ish").await;
    assert_eq!(
        a.list_tags(&r).await.unwrap(),
        Some(Arc::new(vec![])),
        "a repository with a blob and no tags"
    );
    a.set_tag(&r, &tag("v1"), &d, OCI_MANIFEST).await.unwrap();
    assert_eq!(
        *a.list_tags(&r).await.unwrap().unwrap(),
        vec!["v1".to_string()]
    );
    // Let the directory's timestamp settle so that the listing is cached, then change it
    // through the other store: the cache must notice.
    tokio::time::sleep(super::tag_lists::RACY_WINDOW * 2).await;
    assert_eq!(a.list_tags(&r).await.unwrap().unwrap().len(), 1);
    assert!(
        a.tag_lists
            .get(
                &r,
                std::fs::metadata(a.tags_dir(&r)).unwrap().modified().ok()
            )
            .is_some()
    );
    b.set_tag(&r, &tag("v2"), &d, OCI_MANIFEST).await.unwrap();
    assert_eq!(
        *a.list_tags(&r).await.unwrap().unwrap(),
        vec!["v1".to_string(), "v2".to_string()]
    );
    b.delete_tag(&r, &tag("v1")).await.unwrap();
    assert_eq!(
        *a.list_tags(&r).await.unwrap().unwrap(),
        vec!["v2".to_string()]
    );
}

/// Regression: a file published by rename must never be seen empty or partial, even when it
/// is read the instant the write returns (tags, links and upload owners all rely on it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn published_files_are_complete_the_moment_they_are_visible() {
    let dir = tempfile::tempdir().unwrap();
    let store = FsStore::new(dir.path(), false).unwrap();
    let r = repo("race");
    for i in 0..500u32 {
        let digest = Digest::of(Algorithm::Sha256, &i.to_le_bytes());
        store
            .set_tag(&r, &tag("t"), &digest, OCI_MANIFEST)
            .await
            .unwrap();
        assert_eq!(store.get_tag(&r, &tag("t")).await.unwrap(), Some(digest));
        let id = store.create_upload(&r).await.unwrap();
        assert_eq!(store.upload_len(&r, &id).await.unwrap(), 0);
    }
}

#[tokio::test]
async fn offsets_uploads_and_purge() {
    let dir = tempfile::tempdir().unwrap();
    let store = FsStore::new(dir.path(), true).unwrap();
    let r = repo("a");
    let id = store.create_upload(&r).await.unwrap();
    let chunk = |b: &'static [u8]| futures_util::stream::iter(vec![Ok(Bytes::from_static(b))]);
    let (len, hasher) = store
        .append_upload(&r, &id, 0, chunk(b"abc"), Algorithm::Sha256.hasher())
        .await
        .unwrap();
    assert_eq!(len, 3);
    assert!(matches!(
        store
            .append_upload(&r, &id, 5, chunk(b"x"), Algorithm::Sha256.hasher())
            .await,
        Err(StorageError::OffsetMismatch {
            expected: 5,
            actual: 3
        })
    ));
    // An upload id is bound to its repository.
    assert!(matches!(
        store.upload_len(&repo("b"), &id).await,
        Err(StorageError::NotFound)
    ));
    assert!(matches!(
        store.upload_len(&r, "../../etc").await,
        Err(StorageError::NotFound)
    ));
    let (_, hasher) = store
        .append_upload(&r, &id, 3, chunk(b"def"), hasher)
        .await
        .unwrap();
    assert_eq!(hasher.finish(), Digest::of(Algorithm::Sha256, b"abcdef"));
    assert_eq!(
        store
            .purge_uploads(Duration::from_secs(3600))
            .await
            .unwrap(),
        0
    );
    assert_eq!(store.purge_uploads(Duration::ZERO).await.unwrap(), 1);
    assert!(matches!(
        store.upload_len(&r, &id).await,
        Err(StorageError::NotFound)
    ));
}

#[tokio::test]
async fn large_bodies_go_through_the_pipeline_unchanged() {
    let dir = tempfile::tempdir().unwrap();
    let store = FsStore::new(dir.path(), false).unwrap();
    let r = repo("big");
    let data: Vec<u8> = (0..(5 << 20) + 12345)
        .map(|i: u32| (i % 251) as u8)
        .collect();
    let id = store.create_upload(&r).await.unwrap();
    let chunks: Vec<io::Result<Bytes>> = data
        .chunks(100_003)
        .map(|c| Ok(Bytes::copy_from_slice(c)))
        .collect();
    let (len, hasher) = store
        .append_upload(
            &r,
            &id,
            0,
            futures_util::stream::iter(chunks),
            Algorithm::Sha512.hasher(),
        )
        .await
        .unwrap();
    assert_eq!(len, data.len() as u64);
    let digest = hasher.finish();
    assert_eq!(digest, Digest::of(Algorithm::Sha512, &data));
    store.commit_upload(&r, &id, &digest).await.unwrap();
    let mut body = store.read_blob(&digest, Some((7, 5 << 20))).await.unwrap();
    let mut read = Vec::new();
    while let Some(c) = body.stream.next().await {
        read.extend_from_slice(&c.unwrap());
    }
    assert_eq!(read, &data[7..5 << 20]);
}

#[tokio::test]
async fn interrupted_body_keeps_exactly_what_arrived() {
    let dir = tempfile::tempdir().unwrap();
    let store = FsStore::new(dir.path(), false).unwrap();
    let r = repo("cut");
    let id = store.create_upload(&r).await.unwrap();
    let big = Bytes::from(vec![1u8; 3 << 20]);
    let body = futures_util::stream::iter(vec![
        Ok(big.clone()),
        Err(io::Error::other("client went away")),
    ]);
    assert!(
        store
            .append_upload(&r, &id, 0, body, Algorithm::Sha256.hasher())
            .await
            .is_err()
    );
    assert_eq!(store.upload_len(&r, &id).await.unwrap(), big.len() as u64);
}
