//! TUS resumable uploads (`/storage/v1/upload/resumable`, alias `/api/v1/storage/…`) on
//! both backends (a local directory, and S3 through the harness's moto): the protocol (create, HEAD, PATCH, DELETE, OPTIONS), offsets and errors,
//! bucket limits, RLS at creation and at the final commit, uploads of other users, resume
//! across instances and after a restart, and the janitor.

use crate::storage::check_etag;
use crate::support::{TestApp, TestDb};
use base64::Engine;
use futures_util::StreamExt;
use object_store::ObjectStore;
use reqwest::header::HeaderMap;
use reqwest::{Method, RequestBuilder, Response};
use serde_json::{json, Value};
use std::sync::Arc;
use std::time::Duration;

const S: &str = "/storage/v1";
const OFFSET_CT: &str = "application/offset+octet-stream";

/// Which byte store the deployment under test uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Be {
    Local,
    S3,
}

/// One `#[tokio::test]` per backend for each scenario.
macro_rules! on_both_backends {
    ($($name:ident),* $(,)?) => {$(
        mod $name {
            #[tokio::test]
            async fn local() {
                super::$name(super::Be::Local).await
            }
            #[tokio::test]
            async fn s3() {
                super::$name(super::Be::S3).await
            }
        }
    )*};
}

on_both_backends!(
    create_patch_head_delete,
    bucket_size_and_mime_limits,
    rls_decides_and_uploads_belong_to_their_creator,
    resumes_on_another_instance_and_after_a_restart,
    janitor_removes_expired_uploads_and_orphaned_parts,
    concurrent_writers_one_wins,
    a_broken_off_patch_counts_for_nothing,
    bodies_count_once_in_storage_bytes,
);

/// One deployment: a database and a byte store that any number of instances share.
struct Deploy {
    be: Be,
    db: TestDb,
    /// The local backend's root (kept alive for the test).
    dir: Option<tempfile::TempDir>,
    /// The S3 backend's bucket.
    bucket: Option<String>,
    /// The same bytes the instances store, seen through a client of the test's own.
    store: Arc<dyn ObjectStore>,
}

impl Deploy {
    async fn new(be: Be) -> Deploy {
        let db = crate::support::fresh_db().await;
        match be {
            Be::Local => {
                let dir = tempfile::tempdir().unwrap();
                let store =
                    object_store::local::LocalFileSystem::new_with_prefix(dir.path()).unwrap();
                Deploy {
                    be,
                    db,
                    dir: Some(dir),
                    bucket: None,
                    store: Arc::new(store),
                }
            }
            Be::S3 => {
                let s3 = crate::support::s3::server();
                let bucket = s3.new_bucket().await;
                Deploy {
                    be,
                    db,
                    dir: None,
                    store: Arc::new(s3.store(&bucket)),
                    bucket: Some(bucket),
                }
            }
        }
    }

    /// A server instance of this deployment.
    async fn instance(&self) -> TestApp {
        let path = self
            .dir
            .as_ref()
            .map(|d| d.path().to_string_lossy().into_owned());
        let bucket = self.bucket.clone();
        let be = self.be;
        TestApp::spawn_on(self.db.clone(), move |c| match be {
            Be::Local => c.storage.local_path = path.unwrap_or_default(),
            Be::S3 => crate::support::s3::server().configure(c, &bucket.unwrap_or_default()),
        })
        .await
    }

    /// Keys under `prefix` in the store.
    async fn keys(&self, prefix: &str) -> Vec<String> {
        let prefix = object_store::path::Path::from(prefix);
        let mut list = self.store.list(Some(&prefix));
        let mut out = Vec::new();
        while let Some(m) = list.next().await {
            out.push(m.unwrap().location.to_string());
        }
        out
    }
}

struct St {
    app: TestApp,
    d: Deploy,
}

async fn spawn(be: Be) -> St {
    let d = Deploy::new(be).await;
    let app = d.instance().await;
    St { app, d }
}

fn b64(s: &str) -> String {
    base64::engine::general_purpose::STANDARD.encode(s)
}

/// `Upload-Metadata` as tus-js-client writes it.
fn meta(pairs: &[(&str, &str)]) -> String {
    pairs
        .iter()
        .map(|(k, v)| format!("{k} {}", b64(v)))
        .collect::<Vec<_>>()
        .join(",")
}

fn hdr(h: &HeaderMap, name: &str) -> String {
    h.get(name)
        .map(|v| v.to_str().unwrap().to_string())
        .unwrap_or_default()
}

async fn err(r: Response) -> (u16, Value) {
    let s = r.status().as_u16();
    (s, r.json().await.unwrap_or(Value::Null))
}

/// Deterministic bytes to upload.
fn bytes(n: usize, seed: u8) -> Vec<u8> {
    (0..n)
        .map(|i| (i as u32).wrapping_mul(2_654_435_761).to_le_bytes()[1] ^ seed)
        .collect()
}

impl St {
    fn req(&self, m: Method, path: &str, key: &str) -> RequestBuilder {
        req(&self.app, m, path, key)
    }
    fn svc(&self) -> String {
        self.app.service_key()
    }
    fn user(&self, id: &str) -> String {
        self.app
            .token(json!({"sub": id, "role": "authenticated", "aud": "authenticated"}))
    }
    async fn bucket(&self, body: Value) {
        let r = self
            .req(Method::POST, &format!("{S}/bucket"), &self.svc())
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
    }
    async fn count(&self, sql: &str) -> i64 {
        let c = self.app.db.client().await;
        c.query_one(sql, &[]).await.unwrap().get(0)
    }
    /// Staged parts in the store.
    async fn staged(&self) -> Vec<String> {
        self.d.keys("tus").await
    }
}

/// A request to `path`, or to the path of an absolute upload URL on this instance (the
/// instances of a deployment answer under one host name; here each has its own port).
fn req(app: &TestApp, m: Method, path: &str, key: &str) -> RequestBuilder {
    let path = match path.split_once("://") {
        Some((_, rest)) => &rest[rest.find('/').unwrap()..],
        None => path,
    };
    app.http
        .request(m, app.url(path))
        .header("apikey", app.anon_key())
        .bearer_auth(key)
        .header("tus-resumable", "1.0.0")
}

/// POST create; returns the response.
async fn create(app: &TestApp, key: &str, len: u64, metadata: &str) -> Response {
    req(app, Method::POST, &format!("{S}/upload/resumable"), key)
        .header("upload-length", len.to_string())
        .header("upload-metadata", metadata)
        .send()
        .await
        .unwrap()
}

/// POST create that must succeed; returns the upload URL.
async fn created(app: &TestApp, key: &str, len: u64, metadata: &str) -> String {
    let r = create(app, key, len, metadata).await;
    assert_eq!(r.status(), 201, "{}", r.text().await.unwrap());
    hdr(r.headers(), "location")
}

async fn patch(app: &TestApp, key: &str, url: &str, offset: u64, body: Vec<u8>) -> Response {
    req(app, Method::PATCH, url, key)
        .header("content-type", OFFSET_CT)
        .header("upload-offset", offset.to_string())
        .body(body)
        .send()
        .await
        .unwrap()
}

/// HEAD: (status, Upload-Offset).
async fn head(app: &TestApp, key: &str, url: &str) -> (u16, String) {
    let r = req(app, Method::HEAD, url, key).send().await.unwrap();
    (r.status().as_u16(), hdr(r.headers(), "upload-offset"))
}

async fn create_patch_head_delete(be: Be) {
    let st = spawn(be).await;
    let app = &st.app;
    st.bucket(json!({"name": "b"})).await;
    let svc = st.svc();

    // OPTIONS: what is spoken, without credentials.
    let r = app
        .http
        .request(Method::OPTIONS, app.url(&format!("{S}/upload/resumable")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    let h = r.headers();
    assert_eq!(hdr(h, "tus-version"), "1.0.0");
    assert_eq!(hdr(h, "tus-resumable"), "1.0.0");
    let ext = hdr(h, "tus-extension");
    for e in [
        "creation",
        "creation-with-upload",
        "termination",
        "expiration",
    ] {
        assert!(ext.split(',').any(|x| x == e), "{ext}");
    }
    assert_eq!(hdr(h, "tus-max-size"), (50 * 1024 * 1024).to_string());

    // No Tus-Resumable: 412 with the versions spoken.
    let r = app
        .http
        .post(app.url(&format!("{S}/upload/resumable")))
        .bearer_auth(&svc)
        .header("upload-length", "3")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 412);
    assert_eq!(hdr(r.headers(), "tus-version"), "1.0.0");

    let m = meta(&[
        ("bucketName", "b"),
        ("objectName", "dir/f.txt"),
        ("contentType", "text/plain"),
        ("cacheControl", "3600"),
        ("metadata", r#"{"k":"v"}"#),
    ]);
    let r = create(app, &svc, 10, &m).await;
    assert_eq!(r.status(), 201, "{}", r.text().await.unwrap());
    let h = r.headers().clone();
    let url = hdr(&h, "location");
    assert!(
        url.starts_with(&format!("{}{S}/upload/resumable/", app.base)),
        "{url}"
    );
    assert_eq!(hdr(&h, "tus-resumable"), "1.0.0");
    assert!(hdr(&h, "upload-expires").ends_with(" GMT"));
    assert!(!h.contains_key("upload-offset"), "no data was sent");

    let r = req(app, Method::HEAD, &url, &svc).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(hdr(r.headers(), "upload-offset"), "0");
    assert_eq!(hdr(r.headers(), "upload-length"), "10");
    assert_eq!(hdr(r.headers(), "cache-control"), "no-store");

    // Not an offset stream: 415. Wrong offset: 409. Missing offset: 400.
    let r = req(app, Method::PATCH, &url, &svc)
        .header("content-type", "text/plain")
        .header("upload-offset", "0")
        .body("hello")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 415);
    let (s, b) = err(patch(app, &svc, &url, 3, b"hello".to_vec()).await).await;
    assert_eq!((s, b["statusCode"].as_str()), (409, Some("409")), "{b}");
    let r = req(app, Method::PATCH, &url, &svc)
        .header("content-type", OFFSET_CT)
        .body("hello")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);

    let r = patch(app, &svc, &url, 0, b"hello".to_vec()).await;
    assert_eq!(r.status(), 204);
    assert_eq!(hdr(r.headers(), "upload-offset"), "5");
    assert!(!r.headers().contains_key("tus-complete"));
    assert_eq!(head(app, &svc, &url).await, (200, "5".into()));
    // Nothing is visible before the last byte; the bytes so far are staged.
    assert_eq!(st.count("SELECT count(*) FROM storage.objects").await, 0);
    assert_eq!(st.staged().await.len(), 1);
    let r = st
        .req(Method::GET, &format!("{S}/object/b/dir/f.txt"), &svc)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400); // Storage's 400 with statusCode 404
    assert_eq!(err(r).await.1["statusCode"], "404");

    // The same offset again is a conflict; more than Upload-Length is too large.
    assert_eq!(
        patch(app, &svc, &url, 0, b"hello".to_vec()).await.status(),
        409
    );
    let (s, b) = err(patch(app, &svc, &url, 5, b"world!".to_vec()).await).await;
    assert_eq!(
        (s, b["code"].as_str()),
        (413, Some("EntityTooLarge")),
        "{b}"
    );
    assert_eq!(head(app, &svc, &url).await, (200, "5".into()));

    let r = patch(app, &svc, &url, 5, b"world".to_vec()).await;
    assert_eq!(r.status(), 204);
    assert_eq!(hdr(r.headers(), "upload-offset"), "10");
    assert_eq!(hdr(r.headers(), "tus-complete"), "1");
    let r = st
        .req(Method::GET, &format!("{S}/object/b/dir/f.txt"), &svc)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(hdr(r.headers(), "content-type"), "text/plain");
    assert_eq!(hdr(r.headers(), "cache-control"), "max-age=3600");
    check_etag(be == Be::S3, &hdr(r.headers(), "etag"), b"helloworld");
    assert_eq!(r.text().await.unwrap(), "helloworld");
    let info: Value = st
        .req(Method::GET, &format!("{S}/object/info/b/dir/f.txt"), &svc)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(info["metadata"], json!({"k": "v"}));
    assert!(st.staged().await.is_empty(), "{:?}", st.staged().await);
    // A finished upload still answers HEAD (a client that lost the last answer learns it
    // is done) but cannot be terminated.
    assert_eq!(head(app, &svc, &url).await, (200, "10".into()));
    let (s, b) = err(req(app, Method::DELETE, &url, &svc).send().await.unwrap()).await;
    assert_eq!(s, 400, "{b}");

    // The alias, with the whole body in the creation request (creation-with-upload).
    let r = req(app, Method::POST, "/api/v1/storage/upload/resumable", &svc)
        .header("upload-length", "4")
        .header(
            "upload-metadata",
            meta(&[("bucketName", "b"), ("objectName", "one.bin")]),
        )
        .header("content-type", OFFSET_CT)
        .body(b"\x00\x01\x02\x03".to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201, "{}", r.text().await.unwrap());
    assert_eq!(hdr(r.headers(), "upload-offset"), "4");
    assert!(hdr(r.headers(), "location").contains("/api/v1/storage/upload/resumable/"));
    let r = st
        .req(Method::GET, &format!("{S}/object/b/one.bin"), &svc)
        .send()
        .await
        .unwrap();
    assert_eq!(hdr(r.headers(), "content-type"), "application/octet-stream");
    assert_eq!(r.bytes().await.unwrap().as_ref(), b"\x00\x01\x02\x03");

    // An empty file is finished at creation.
    let r = create(
        app,
        &svc,
        0,
        &meta(&[("bucketName", "b"), ("objectName", "empty")]),
    )
    .await;
    assert_eq!(r.status(), 201);
    assert_eq!(hdr(r.headers(), "upload-offset"), "0");
    let r = st
        .req(Method::GET, &format!("{S}/object/b/empty"), &svc)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.bytes().await.unwrap().len(), 0);

    // Termination drops the staged bytes and the upload.
    let url = created(
        app,
        &svc,
        8,
        &meta(&[("bucketName", "b"), ("objectName", "gone.txt")]),
    )
    .await;
    assert_eq!(
        patch(app, &svc, &url, 0, b"abcd".to_vec()).await.status(),
        204
    );
    assert_eq!(st.staged().await.len(), 1);
    let r = req(app, Method::DELETE, &url, &svc).send().await.unwrap();
    assert_eq!(r.status(), 204);
    assert_eq!(hdr(r.headers(), "tus-resumable"), "1.0.0");
    assert_eq!(head(app, &svc, &url).await.0, 404);
    assert_eq!(
        patch(app, &svc, &url, 4, b"efgh".to_vec()).await.status(),
        404
    );
    assert!(st.staged().await.is_empty());
    assert_eq!(
        st.count("SELECT count(*) FROM storage.tus_uploads WHERE completed_at IS NULL")
            .await,
        0
    );
    assert_eq!(
        head(app, &svc, &format!("{S}/upload/resumable/not-a-uuid"))
            .await
            .0,
        404
    );

    // An existing name: refused without x-upsert (Supabase's 409 Duplicate), replaced with.
    let m = meta(&[("bucketName", "b"), ("objectName", "one.bin")]);
    let (s, b) = err(create(app, &svc, 2, &m).await).await;
    assert_eq!((s, b["error"].as_str()), (409, Some("Duplicate")), "{b}");
    let r = req(app, Method::POST, &format!("{S}/upload/resumable"), &svc)
        .header("upload-length", "2")
        .header("upload-metadata", &m)
        .header("x-upsert", "true")
        .header("content-type", OFFSET_CT)
        .body("ok")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201, "{}", r.text().await.unwrap());
    let r = st
        .req(Method::GET, &format!("{S}/object/b/one.bin"), &svc)
        .send()
        .await
        .unwrap();
    assert_eq!(r.text().await.unwrap(), "ok");

    // Bad creations: clear 4xx in Storage's shape.
    for (len, m, status) in [
        (5, meta(&[("bucketName", "b")]), 400),
        (5, meta(&[("bucketName", "b"), ("objectName", "../x")]), 400),
        (5, meta(&[("bucketName", "nope"), ("objectName", "x")]), 404),
        (5, "bucketName !!!".to_string(), 400),
    ] {
        let (s, b) = err(create(app, &svc, len, &m).await).await;
        assert_eq!(s, status, "{m}: {b}");
        assert_eq!(b["statusCode"], status.to_string(), "{b}");
    }
    let r = req(app, Method::POST, &format!("{S}/upload/resumable"), &svc)
        .header(
            "upload-metadata",
            meta(&[("bucketName", "b"), ("objectName", "x")]),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400, "no Upload-Length");
}

async fn bucket_size_and_mime_limits(be: Be) {
    let st = spawn(be).await;
    let app = &st.app;
    st.bucket(json!({"name": "img", "file_size_limit": 100, "allowed_mime_types": ["image/*"]}))
        .await;
    let svc = st.svc();
    let m = |ct: &str| {
        meta(&[
            ("bucketName", "img"),
            ("objectName", "a.png"),
            ("contentType", ct),
        ])
    };
    let (s, b) = err(create(app, &svc, 101, &m("image/png")).await).await;
    assert_eq!(s, 413, "{b}");
    assert_eq!(
        (
            b["statusCode"].as_str(),
            b["code"].as_str(),
            b["error"].as_str()
        ),
        (
            Some("413"),
            Some("EntityTooLarge"),
            Some("Payload too large")
        )
    );
    let (s, b) = err(create(app, &svc, 10, &m("text/plain")).await).await;
    assert_eq!(s, 415, "{b}");
    assert_eq!(
        (b["code"].as_str(), b["message"].as_str()),
        (
            Some("InvalidMimeType"),
            Some("mime type text/plain is not supported")
        )
    );
    // No contentType is application/octet-stream, which the bucket does not take either.
    let (s, _) = err(create(
        app,
        &svc,
        10,
        &meta(&[("bucketName", "img"), ("objectName", "a.png")]),
    )
    .await)
    .await;
    assert_eq!(s, 415);
    assert_eq!(
        st.count("SELECT count(*) FROM storage.tus_uploads").await,
        0
    );
    let url = created(app, &svc, 100, &m("image/png")).await;
    assert_eq!(patch(app, &svc, &url, 0, vec![7; 100]).await.status(), 204);
    assert_eq!(st.count("SELECT count(*) FROM storage.objects").await, 1);
}

async fn rls_decides_and_uploads_belong_to_their_creator(be: Be) {
    let st = spawn(be).await;
    let app = &st.app;
    st.bucket(json!({"name": "u"})).await;
    let c = app.db.client().await;
    c.batch_execute(
        "CREATE POLICY own_folder ON storage.objects FOR INSERT TO authenticated
           WITH CHECK (bucket_id = 'u' AND (storage.foldername(name))[1] = auth.uid()::text);
         CREATE POLICY read_own ON storage.objects FOR SELECT TO authenticated
           USING (owner_id = auth.uid()::text);",
    )
    .await
    .unwrap();
    let a_id = "11111111-1111-4111-8111-111111111111";
    let b_id = "22222222-2222-4222-8222-222222222222";
    let (a, b) = (st.user(a_id), st.user(b_id));
    let mine = meta(&[
        ("bucketName", "u"),
        ("objectName", &format!("{a_id}/f.txt")),
    ]);
    let theirs = meta(&[
        ("bucketName", "u"),
        ("objectName", &format!("{b_id}/f.txt")),
    ]);

    // RLS refuses before anything is stored: another user's folder, or anon.
    let (s, body) = err(create(app, &a, 6, &theirs).await).await;
    assert_eq!(s, 403, "{body}");
    assert_eq!(
        body["message"], "new row violates row-level security policy",
        "{body}"
    );
    assert_eq!(
        err(create(app, &app.anon_key(), 6, &mine).await).await.0,
        403
    );
    assert_eq!(
        st.count("SELECT count(*) FROM storage.tus_uploads").await,
        0
    );

    let url = created(app, &a, 6, &mine).await;
    assert_eq!(patch(app, &a, &url, 0, b"abc".to_vec()).await.status(), 204);
    // Another user (or anon) may not look at, write to or terminate it.
    for key in [&b, &app.anon_key()] {
        assert_eq!(head(app, key, &url).await.0, 403);
        let (s, body) = err(patch(app, key, &url, 3, b"xyz".to_vec()).await).await;
        assert_eq!(
            (s, body["code"].as_str()),
            (403, Some("AccessDenied")),
            "{body}"
        );
        assert_eq!(
            req(app, Method::DELETE, &url, key)
                .send()
                .await
                .unwrap()
                .status(),
            403
        );
    }
    // service_role may.
    assert_eq!(head(app, &st.svc(), &url).await, (200, "3".into()));
    let r = patch(app, &a, &url, 3, b"def".to_vec()).await;
    assert_eq!(r.status(), 204, "{}", r.text().await.unwrap());
    let r = st
        .req(Method::GET, &format!("{S}/object/u/{a_id}/f.txt"), &a)
        .send()
        .await
        .unwrap();
    assert_eq!(r.text().await.unwrap(), "abcdef");
    let owner: i64 = st
        .count(&format!(
            "SELECT count(*) FROM storage.objects WHERE owner_id = '{a_id}' AND owner = '{a_id}'"
        ))
        .await;
    assert_eq!(owner, 1);

    // Every PATCH and DELETE runs the INSERT under RLS again (as Supabase's canUpload on
    // each TUS request): a policy gone meanwhile refuses the next PATCH, even one that
    // does not finish the upload, before its bytes are staged, and the upload stays where
    // it was (nothing visible, the offset unchanged).
    let second = meta(&[
        ("bucketName", "u"),
        ("objectName", &format!("{a_id}/g.txt")),
    ]);
    let url = created(app, &a, 6, &second).await;
    assert_eq!(patch(app, &a, &url, 0, b"ab".to_vec()).await.status(), 204);
    c.batch_execute("DROP POLICY own_folder ON storage.objects")
        .await
        .unwrap();
    for (offset, part) in [(2, b"cd".to_vec()), (2, b"cdef".to_vec())] {
        let (s, body) = err(patch(app, &a, &url, offset, part).await).await;
        assert_eq!(
            (s, body["code"].as_str()),
            (403, Some("AccessDenied")),
            "{body}"
        );
    }
    assert_eq!(head(app, &a, &url).await, (200, "2".into()));
    assert_eq!(
        st.count("SELECT count(*) FROM storage.objects WHERE name LIKE '%/g.txt'")
            .await,
        0
    );
    // No upload data of the refused requests stays behind (only the staged first part).
    assert!(st.d.keys("uploads").await.is_empty());
    assert_eq!(st.staged().await.len(), 1);
    // Terminating is refused too; service_role (no RLS) may.
    assert_eq!(
        req(app, Method::DELETE, &url, &a)
            .send()
            .await
            .unwrap()
            .status(),
        403
    );
    assert_eq!(
        req(app, Method::DELETE, &url, &st.svc())
            .send()
            .await
            .unwrap()
            .status(),
        204
    );
    // The policy back: the same user's next upload goes through again.
    c.batch_execute(
        "CREATE POLICY own_folder ON storage.objects FOR INSERT TO authenticated
           WITH CHECK (bucket_id = 'u' AND (storage.foldername(name))[1] = auth.uid()::text)",
    )
    .await
    .unwrap();
    let url = created(app, &a, 2, &second).await;
    assert_eq!(patch(app, &a, &url, 0, b"gh".to_vec()).await.status(), 204);
}

async fn resumes_on_another_instance_and_after_a_restart(be: Be) {
    let d = Deploy::new(be).await;
    let db = d.db.clone();
    let one = d.instance().await;
    let svc = one.service_key();
    let r = req(&one, Method::POST, &format!("{S}/bucket"), &svc)
        .json(&json!({"name": "big"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    // Chunks of tus-js-client's size as Supabase documents it (6 MiB), then odd sizes.
    let data = bytes(6 * 1024 * 1024 + 1_234_567, 0x5a);
    let (c1, c2) = (6 * 1024 * 1024, 6 * 1024 * 1024 + 1_000_000);
    let m = meta(&[
        ("bucketName", "big"),
        ("objectName", "video.bin"),
        ("contentType", "video/mp4"),
    ]);
    let url = created(&one, &svc, data.len() as u64, &m).await;
    let r = patch(&one, &svc, &url, 0, data[..c1].to_vec()).await;
    assert_eq!(r.status(), 204);

    // A second instance on the same database and store picks the upload up.
    let two = d.instance().await;
    assert_eq!(head(&two, &svc, &url).await, (200, c1.to_string()));
    let r = patch(&two, &svc, &url, c1 as u64, data[c1..c2].to_vec()).await;
    assert_eq!(r.status(), 204);
    assert_eq!(hdr(r.headers(), "upload-offset"), c2.to_string());
    assert_eq!(head(&one, &svc, &url).await, (200, c2.to_string()));

    // Both stop; a restarted server resumes where they left off.
    drop(one);
    drop(two);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let three = d.instance().await;
    let count = |sql: &'static str| {
        let db = db.clone();
        async move {
            let c = db.client().await;
            c.query_one(sql, &[]).await.unwrap().get::<_, i64>(0)
        }
    };
    assert_eq!(count("SELECT count(*) FROM storage.objects").await, 0);
    assert_eq!(head(&three, &svc, &url).await, (200, c2.to_string()));
    let r = patch(&three, &svc, &url, c2 as u64, data[c2..].to_vec()).await;
    assert_eq!(r.status(), 204, "{}", r.text().await.unwrap());
    assert_eq!(hdr(r.headers(), "tus-complete"), "1");
    let r = req(
        &three,
        Method::GET,
        &format!("{S}/object/big/video.bin"),
        &svc,
    )
    .send()
    .await
    .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(hdr(r.headers(), "content-type"), "video/mp4");
    check_etag(be == Be::S3, &hdr(r.headers(), "etag"), &data);
    let got = r.bytes().await.unwrap();
    assert_eq!(got.len(), data.len());
    assert!(got.as_ref() == data.as_slice(), "bytes differ");
    assert!(d.keys("tus").await.is_empty());
    assert!(d.keys("uploads").await.is_empty());
}

async fn janitor_removes_expired_uploads_and_orphaned_parts(be: Be) {
    let st = spawn(be).await;
    let app = &st.app;
    st.bucket(json!({"name": "b"})).await;
    let svc = st.svc();
    let m = meta(&[("bucketName", "b"), ("objectName", "slow.bin")]);
    let url = created(app, &svc, 10, &m).await;
    assert_eq!(patch(app, &svc, &url, 0, vec![1; 4]).await.status(), 204);
    let live = created(
        app,
        &svc,
        10,
        &meta(&[("bucketName", "b"), ("objectName", "live.bin")]),
    )
    .await;
    assert_eq!(patch(app, &svc, &live, 0, vec![2; 4]).await.status(), 204);
    assert_eq!(st.staged().await.len(), 2);

    let c = app.db.client().await;
    let id = url.rsplit('/').next().unwrap().to_string();
    c.execute(
        "UPDATE storage.tus_uploads SET expires_at = now() - interval '1 second' WHERE id::text = $1",
        &[&id],
    )
    .await
    .unwrap();
    // Expired: 410 Gone, for HEAD and PATCH alike.
    assert_eq!(head(app, &svc, &url).await.0, 410);
    assert_eq!(patch(app, &svc, &url, 4, vec![1; 6]).await.status(), 410);

    // A part no upload row points at (its upload was terminated while it was written).
    st.d.store
        .put(
            &object_store::path::Path::from(
                "tus/00000000-0000-4000-8000-000000000000/00000000000000000000-x",
            ),
            b"orphan".to_vec().into(),
        )
        .await
        .unwrap();

    let be = app.state.storage.clone().unwrap();
    let s = fluxbase::storage::janitor::sweep(&app.state.pool, &be, Duration::ZERO)
        .await
        .unwrap();
    assert_eq!((s.tus_expired, s.tus_parts_removed), (1, 2), "{s:?}");
    assert_eq!(st.staged().await.len(), 1, "the live upload keeps its part");
    assert_eq!(
        st.count("SELECT count(*) FROM storage.tus_uploads").await,
        1
    );
    assert_eq!(head(app, &svc, &url).await.0, 404);
    // The live upload is untouched and finishes.
    assert_eq!(head(app, &svc, &live).await, (200, "4".into()));
    assert_eq!(patch(app, &svc, &live, 4, vec![2; 6]).await.status(), 204);
    let r = st
        .req(Method::GET, &format!("{S}/object/b/live.bin"), &svc)
        .send()
        .await
        .unwrap();
    assert_eq!(r.bytes().await.unwrap().as_ref(), &[2u8; 10]);
}

async fn concurrent_writers_one_wins(be: Be) {
    let st = spawn(be).await;
    let app = &st.app;
    st.bucket(json!({"name": "b"})).await;
    let svc = st.svc();
    let m = meta(&[("bucketName", "b"), ("objectName", "race.bin")]);
    // Two PATCHes at the same offset: exactly one counts, the other is told 409.
    let url = created(app, &svc, 8, &m).await;
    let (a, b) = tokio::join!(
        patch(app, &svc, &url, 0, vec![b'a'; 4]),
        patch(app, &svc, &url, 0, vec![b'b'; 4])
    );
    let mut s = [a.status().as_u16(), b.status().as_u16()];
    s.sort();
    assert_eq!(s, [204, 409]);
    let first = if a.status() == 204 { b'a' } else { b'b' };
    assert_eq!(head(app, &svc, &url).await, (200, "4".into()));
    // Two last PATCHes: one object, from the one that counted.
    let (a, b) = tokio::join!(
        patch(app, &svc, &url, 4, vec![b'c'; 4]),
        patch(app, &svc, &url, 4, vec![b'd'; 4])
    );
    let mut s = [a.status().as_u16(), b.status().as_u16()];
    s.sort();
    assert_eq!(s, [204, 409]);
    let last = if a.status() == 204 { b'c' } else { b'd' };
    let r = st
        .req(Method::GET, &format!("{S}/object/b/race.bin"), &svc)
        .send()
        .await
        .unwrap();
    let mut want = vec![first; 4];
    want.extend([last; 4]);
    assert_eq!(r.bytes().await.unwrap().as_ref(), want.as_slice());
    assert_eq!(st.count("SELECT count(*) FROM storage.objects").await, 1);
    assert!(st.staged().await.is_empty(), "{:?}", st.staged().await);
    assert!(st.d.keys("uploads").await.is_empty());
}

/// Sends a PATCH that declares `declared` bytes, sends `sent` of them and hangs up.
async fn broken_patch(
    app: &TestApp,
    key: &str,
    url: &str,
    offset: u64,
    declared: usize,
    sent: usize,
) {
    use tokio::io::AsyncWriteExt;
    let path = url
        .split_once("://")
        .map(|(_, r)| &r[r.find('/').unwrap()..])
        .unwrap();
    let addr = app.base.trim_start_matches("http://");
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let head = format!(
        "PATCH {path} HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {key}\r\n\
         apikey: {}\r\nTus-Resumable: 1.0.0\r\nContent-Type: {OFFSET_CT}\r\n\
         Upload-Offset: {offset}\r\nContent-Length: {declared}\r\n\r\n",
        app.anon_key()
    );
    s.write_all(head.as_bytes()).await.unwrap();
    s.write_all(&vec![b'x'; sent]).await.unwrap();
    s.flush().await.unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    drop(s);
}

async fn a_broken_off_patch_counts_for_nothing(be: Be) {
    let st = spawn(be).await;
    let app = &st.app;
    st.bucket(json!({"name": "b"})).await;
    let svc = st.svc();
    let len = 3 * 1024 * 1024;
    let url = created(
        app,
        &svc,
        len as u64,
        &meta(&[("bucketName", "b"), ("objectName", "cut.bin")]),
    )
    .await;
    // A middle part (staged) and a last part (assembled directly), each cut off.
    broken_patch(app, &svc, &url, 0, 1024 * 1024, 300_000).await;
    broken_patch(app, &svc, &url, 0, len, 2 * 1024 * 1024).await;
    let settled = crate::support::eventually(Duration::from_secs(10), || async {
        st.staged().await.is_empty() && st.d.keys("uploads").await.is_empty()
    })
    .await;
    assert!(settled, "{:?}", st.staged().await);
    assert_eq!(head(app, &svc, &url).await, (200, "0".into()));
    assert_eq!(st.count("SELECT count(*) FROM storage.objects").await, 0);
    // The client resends from offset 0 and finishes.
    let data = bytes(len, 3);
    let r = patch(app, &svc, &url, 0, data.clone()).await;
    assert_eq!(r.status(), 204);
    let r = st
        .req(Method::GET, &format!("{S}/object/b/cut.bin"), &svc)
        .send()
        .await
        .unwrap();
    assert!(r.bytes().await.unwrap().as_ref() == data.as_slice());
}

/// `fluxbase_storage_bytes_total{direction}` as `/metrics` shows it (0 before any byte).
async fn storage_bytes(app: &TestApp, direction: &str) -> u64 {
    let text = app
        .get("/metrics")
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let series = format!("fluxbase_storage_bytes_total{{direction=\"{direction}\"}} ");
    text.lines()
        .find_map(|l| l.strip_prefix(&series))
        .map(|v| v.trim().parse().unwrap())
        .unwrap_or(0)
}

/// TUS bodies count in `fluxbase_storage_bytes_total{direction="in"}` once, as they reach
/// the store: a staged PATCH as it arrives, the last PATCH as it streams into the object
/// (the staged parts read back to assemble it are not counted again), a PATCH without a
/// Content-Length that happens to complete the upload, and a creation-with-upload body.
/// A PATCH refused before its body (wrong offset) counts nothing.
async fn bodies_count_once_in_storage_bytes(be: Be) {
    let st = spawn(be).await;
    let app = &st.app;
    st.bucket(json!({"name": "b"})).await;
    let svc = st.svc();
    assert_eq!(storage_bytes(app, "in").await, 0);
    let (first, rest) = (3 * 1024 * 1024, 2 * 1024 * 1024 + 100);
    let len = (first + rest) as u64;
    let url = created(
        app,
        &svc,
        len,
        &meta(&[("bucketName", "b"), ("objectName", "big.bin")]),
    )
    .await;
    let data = bytes(first + rest, 7);
    let r = patch(app, &svc, &url, 0, data[..first].to_vec()).await;
    assert_eq!(r.status(), 204);
    assert_eq!(storage_bytes(app, "in").await, first as u64);
    let r = patch(app, &svc, &url, 0, data[..first].to_vec()).await;
    assert_eq!(r.status(), 409);
    assert_eq!(storage_bytes(app, "in").await, first as u64);
    let r = patch(app, &svc, &url, first as u64, data[first..].to_vec()).await;
    assert_eq!(r.status(), 204);
    assert_eq!(hdr(r.headers(), "tus-complete"), "1");
    assert_eq!(storage_bytes(app, "in").await, len);
    let r = st
        .req(Method::GET, &format!("{S}/object/b/big.bin"), &svc)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    check_etag(be == Be::S3, &hdr(r.headers(), "etag"), &data);
    assert!(r.bytes().await.unwrap().as_ref() == data.as_slice());
    assert_eq!(storage_bytes(app, "out").await, len);

    // No Content-Length: the body is staged, then the object is assembled from the part.
    let url = created(
        app,
        &svc,
        10,
        &meta(&[("bucketName", "b"), ("objectName", "chunked.bin")]),
    )
    .await;
    let chunks = vec![
        Ok::<_, std::io::Error>(b"01234".to_vec()),
        Ok(b"56789".to_vec()),
    ];
    let r = req(app, Method::PATCH, &url, &svc)
        .header("content-type", OFFSET_CT)
        .header("upload-offset", "0")
        .body(reqwest::Body::wrap_stream(futures_util::stream::iter(
            chunks,
        )))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    assert_eq!(hdr(r.headers(), "tus-complete"), "1");
    assert_eq!(storage_bytes(app, "in").await, len + 10);

    // creation-with-upload.
    let r = req(app, Method::POST, &format!("{S}/upload/resumable"), &svc)
        .header("upload-length", "4")
        .header(
            "upload-metadata",
            meta(&[("bucketName", "b"), ("objectName", "one.bin")]),
        )
        .header("content-type", OFFSET_CT)
        .body(b"abcd".to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201, "{}", r.text().await.unwrap());
    assert_eq!(storage_bytes(app, "in").await, len + 14);
    let r = st
        .req(Method::GET, &format!("{S}/object/b/chunked.bin"), &svc)
        .send()
        .await
        .unwrap();
    assert_eq!(r.text().await.unwrap(), "0123456789");
    assert_eq!(st.count("SELECT count(*) FROM storage.objects").await, 3);
}
