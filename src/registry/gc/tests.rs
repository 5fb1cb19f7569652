//! The collector on a real filesystem store: what it keeps, what it deletes, and that a push
//! announced during a run is never swept.

use super::graph::{ManifestNode, RepoGraph, untagged};
use super::*;
use crate::registry::digest::Algorithm;
use crate::registry::storage::fs::FsStore;
use crate::registry::storage::{StoredManifest, Uploads};

fn repo(name: &str) -> RepoName {
    RepoName::parse(name).unwrap()
}

async fn blob(store: &FsStore, repo: &RepoName, data: &[u8]) -> Digest {
    blob_of(store, repo, data, Algorithm::Sha256).await
}

async fn blob_of(store: &FsStore, repo: &RepoName, data: &[u8], algorithm: Algorithm) -> Digest {
    let digest = Digest::of(algorithm, data);
    let id = store.create_upload(repo).await.unwrap();
    let body = futures_util::stream::iter(vec![Ok::<_, std::io::Error>(
        bytes::Bytes::copy_from_slice(data),
    )]);
    store
        .append_upload(repo, &id, 0, body, algorithm.hasher())
        .await
        .unwrap();
    store.commit_upload(repo, &id, &digest).await.unwrap();
    digest
}

async fn image(
    store: &FsStore,
    repo: &RepoName,
    config: &Digest,
    layers: &[&Digest],
    tag: Option<&str>,
) -> Digest {
    let layers: Vec<serde_json::Value> = layers
        .iter()
        .map(|d| serde_json::json!({"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": d.to_string(), "size": 1}))
        .collect();
    let body = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config.to_string(), "size": 1},
        "layers": layers,
    }))
    .unwrap();
    let digest = Digest::of(Algorithm::Sha256, &body);
    let stored = StoredManifest {
        bytes: body.into(),
        media_type: "application/vnd.oci.image.manifest.v1+json".into(),
    };
    store.put_manifest(repo, &digest, &stored).await.unwrap();
    if let Some(t) = tag {
        store
            .set_tag(
                repo,
                &crate::registry::names::Tag::parse(t).unwrap(),
                &digest,
                &stored.media_type,
            )
            .await
            .unwrap();
    }
    digest
}

fn options(dry_run: bool, untagged_after: Option<Duration>) -> GcOptions {
    GcOptions {
        dry_run,
        grace: Duration::ZERO,
        untagged_after,
        stale_uploads_after: None,
    }
}

#[tokio::test]
async fn keeps_everything_referenced_and_deletes_the_rest() {
    let dir = tempfile::tempdir().unwrap();
    let store = FsStore::new(dir.path(), false).unwrap();
    let a = repo("team/a");
    let config = blob(&store, &a, b"config").await;
    let layer = blob(&store, &a, b"layer").await;
    let orphan = blob(&store, &a, b"orphan").await;
    let tagged = image(&store, &a, &config, &[&layer], Some("v1")).await;
    let untagged_only = blob(&store, &a, b"only-untagged").await;
    let old = image(&store, &a, &config, &[&untagged_only], None).await;

    let collector = Collector::default();
    let dry = collector
        .run(store.clone(), options(true, None))
        .await
        .unwrap();
    assert_eq!((dry.blobs_deleted, dry.manifests_deleted), (1, 0));
    assert!(
        store.blob_size(&orphan).await.unwrap().is_some(),
        "a dry run deletes nothing"
    );

    let report = collector
        .run(store.clone(), options(false, None))
        .await
        .unwrap();
    assert_eq!(report.blobs_deleted, 1);
    assert_eq!(report.bytes_freed, 6);
    assert!(store.blob_size(&orphan).await.unwrap().is_none());
    assert!(
        !store.blob_linked(&a, &orphan).await.unwrap(),
        "the link goes with the blob"
    );
    for kept in [&config, &layer, &tagged, &old, &untagged_only] {
        assert!(
            store.blob_size(kept).await.unwrap().is_some(),
            "{kept} was referenced"
        );
    }

    // Untagged manifests go when asked, and then what only they referenced.
    let report = collector
        .run(store.clone(), options(false, Some(Duration::ZERO)))
        .await
        .unwrap();
    assert_eq!(report.manifests_deleted, 1);
    assert_eq!(
        report.blobs_deleted, 2,
        "the manifest's own blob and its only layer"
    );
    assert!(store.get_manifest(&a, &old).await.unwrap().is_none());
    assert!(store.blob_size(&untagged_only).await.unwrap().is_none());
    assert!(store.get_manifest(&a, &tagged).await.unwrap().is_some());
    assert!(
        collector
            .render()
            .contains("wharf_registry_gc_blobs_deleted_total 3")
    );
}

#[tokio::test]
async fn links_go_in_every_repository_and_references_count_across_repositories() {
    let dir = tempfile::tempdir().unwrap();
    let store = FsStore::new(dir.path(), false).unwrap();
    let (a, b, c) = (repo("team/a"), repo("team/b"), repo("c"));
    // Linked into three repositories, referenced by none.
    let shared_orphan = blob(&store, &a, b"shared orphan").await;
    store.link_blob(&b, &shared_orphan).await.unwrap();
    store.link_blob(&c, &shared_orphan).await.unwrap();
    // Referenced by a manifest of `a` only, but linked into `b` too: kept, links and all.
    let config = blob(&store, &a, b"config").await;
    let layer = blob(&store, &a, b"layer").await;
    store.link_blob(&b, &layer).await.unwrap();
    image(&store, &a, &config, &[&layer], Some("v1")).await;
    // Blobs of the other algorithm go and stay the same way.
    let sha512_orphan = blob_of(&store, &c, b"sha512 orphan", Algorithm::Sha512).await;
    let sha512_layer = blob_of(&store, &c, b"sha512 layer", Algorithm::Sha512).await;
    image(&store, &c, &config, &[&sha512_layer], Some("v1")).await;

    let report = Collector::default()
        .run(store.clone(), options(false, None))
        .await
        .unwrap();
    assert_eq!((report.repositories, report.manifests), (3, 2));
    assert_eq!(report.blobs_deleted, 2, "{report:?}");
    assert_eq!(report.blobs_referenced, 5, "{report:?}");
    for gone in [&shared_orphan, &sha512_orphan] {
        assert!(store.blob_size(gone).await.unwrap().is_none(), "{gone}");
        for r in [&a, &b, &c] {
            assert!(!store.blob_linked(r, gone).await.unwrap(), "{gone} in {r}");
        }
    }
    assert!(store.blob_linked(&b, &layer).await.unwrap());
    assert!(store.blob_size(&sha512_layer).await.unwrap().is_some());
    let again = Collector::default()
        .run(store.clone(), options(false, None))
        .await
        .unwrap();
    assert_eq!(again.blobs_deleted, 0, "a second run finds nothing more");
}

#[tokio::test]
async fn grace_period_and_announced_pushes_are_respected() {
    let dir = tempfile::tempdir().unwrap();
    let store = FsStore::new(dir.path(), false).unwrap();
    let a = repo("a");
    let fresh = blob(&store, &a, b"fresh").await;
    let announced = blob(&store, &a, b"announced").await;
    let collector = Collector::default();
    let recent = collector
        .run(
            store.clone(),
            GcOptions {
                dry_run: false,
                grace: Duration::from_secs(3600),
                untagged_after: None,
                stale_uploads_after: None,
            },
        )
        .await
        .unwrap();
    assert_eq!((recent.blobs_deleted, recent.blobs_too_recent), (0, 2));
    // A push in flight keeps its blobs through any run ...
    let push = collector.begin_push([&announced]);
    let report = collector
        .run(store.clone(), options(false, None))
        .await
        .unwrap();
    assert_eq!((report.blobs_deleted, report.blobs_protected), (1, 1));
    assert!(store.blob_size(&announced).await.unwrap().is_some());
    assert!(store.blob_size(&fresh).await.unwrap().is_none());
    // ... a finished push, through runs that started before it finished ...
    drop(push);
    collector.touch([&announced]);
    // ... and a later run may collect it if nothing references it after all.
    tokio::time::sleep(Duration::from_millis(5)).await;
    let report = collector
        .run(store.clone(), options(false, None))
        .await
        .unwrap();
    assert_eq!(report.blobs_deleted, 1);
}

#[test]
fn untagged_follows_index_children_and_referrers() {
    let d = |s: &str| Digest::of(Algorithm::Sha256, s.as_bytes());
    let long_ago = SystemTime::UNIX_EPOCH;
    let node = |children: Vec<Digest>, subject: Option<Digest>| ManifestNode {
        pushed: long_ago,
        references: children.iter().map(super::graph::key).collect(),
        children,
        subject,
    };
    let mut repo = RepoGraph {
        name: "r".into(),
        ..Default::default()
    };
    repo.manifests
        .insert(d("index"), node(vec![d("amd64"), d("arm64")], None));
    repo.manifests.insert(d("amd64"), node(vec![], None));
    repo.manifests.insert(d("arm64"), node(vec![], None));
    repo.manifests
        .insert(d("signature"), node(vec![], Some(d("index"))));
    repo.manifests
        .insert(d("sbom-of-signature"), node(vec![], Some(d("signature"))));
    repo.manifests.insert(d("stray"), node(vec![], None));
    repo.manifests
        .insert(d("stray-signature"), node(vec![], Some(d("stray"))));
    repo.tagged = vec![d("index")];
    let now = SystemTime::now();
    let mut doomed = untagged(&repo, Duration::from_secs(60), now);
    doomed.sort_by_key(|x| x.to_string());
    let mut want = vec![d("stray"), d("stray-signature")];
    want.sort_by_key(|x| x.to_string());
    assert_eq!(doomed, want);
    // Not old enough: nothing.
    assert!(untagged(&repo, Duration::from_secs(u64::MAX / 4), now).is_empty());
}

#[test]
fn blob_keys_are_the_sha256_itself_and_distinct_for_other_algorithms() {
    let a = Digest::of(Algorithm::Sha256, b"a");
    let b = Digest::of(Algorithm::Sha512, b"a");
    let raw: [u8; 32] = hex::decode(a.hex()).unwrap().try_into().unwrap();
    assert_eq!(super::graph::key(&a), raw);
    assert_ne!(super::graph::key(&b), super::graph::key(&a));
    assert_eq!(super::graph::key(&b), super::graph::key(&b.clone()));
}

#[tokio::test]
async fn abandoned_uploads_go_with_a_run_and_fresh_ones_stay() {
    let dir = tempfile::tempdir().unwrap();
    let store = FsStore::new(dir.path(), false).unwrap();
    let r = repo("team/app");
    store.create_upload(&r).await.unwrap();
    let collector = Collector::default();
    let keep = GcOptions {
        stale_uploads_after: Some(Duration::from_secs(3600)),
        ..options(false, None)
    };
    let report = collector.run(store.clone(), keep).await.unwrap();
    assert_eq!(
        report.uploads_purged, 0,
        "an upload younger than the limit stays"
    );
    tokio::time::sleep(Duration::from_millis(20)).await;
    let purge = GcOptions {
        stale_uploads_after: Some(Duration::from_millis(10)),
        ..options(false, None)
    };
    let report = collector.run(store.clone(), purge).await.unwrap();
    assert_eq!(report.uploads_purged, 1);
}

/// Two replicas on one storage: a manifest push announced through the storage by another
/// process (its collector knows nothing of it) keeps its references through a run.
#[tokio::test]
async fn a_push_announced_on_another_replica_is_spared() {
    let dir = tempfile::tempdir().unwrap();
    let store = FsStore::new(dir.path(), false).unwrap();
    let r = repo("replicas/app");
    let orphan = blob(&store, &r, b"pushed through the other replica").await;
    let other_replica = shared::announce(store.as_ref(), std::slice::from_ref(&orphan))
        .await
        .unwrap();
    let report = Collector::default()
        .run(store.clone(), options(false, None))
        .await
        .unwrap();
    assert_eq!((report.blobs_deleted, report.blobs_protected), (0, 1));
    assert!(store.blob_size(&orphan).await.unwrap().is_some());
    assert!(store.blob_linked(&r, &orphan).await.unwrap());
    // The push ends while no collection runs: its marker goes, and the blob with the next run.
    other_replica.finish(store.as_ref()).await;
    let report = Collector::default()
        .run(store.clone(), options(false, None))
        .await
        .unwrap();
    assert_eq!(report.blobs_deleted, 1);
    assert!(store.blob_size(&orphan).await.unwrap().is_none());
}

#[tokio::test]
async fn one_collection_at_a_time_across_replicas() {
    let dir = tempfile::tempdir().unwrap();
    let store = FsStore::new(dir.path(), false).unwrap();
    let elsewhere = shared::SharedRun::begin(store.clone()).await.unwrap();
    assert!(matches!(
        Collector::default()
            .run(store.clone(), options(true, None))
            .await,
        Err(GcError::AlreadyRunning)
    ));
    elsewhere.end().await;
    Collector::default()
        .run(store.clone(), options(true, None))
        .await
        .unwrap();
}
