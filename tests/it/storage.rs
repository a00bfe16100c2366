//! Storage API: every route and failure path on both backends (a local directory, and S3
//! through moto's server started by the harness), RLS through `auth.uid()` and
//! `storage.foldername()`, signed URLs, Range/304, limits, atomic uploads.
//!
//! A scenario is an `async fn(Be)`; `on_both_backends!` turns it into the tests
//! `<scenario>::local` and `<scenario>::s3`.

use crate::support::{TestApp, TEST_SECRET};
use futures_util::StreamExt;
use object_store::ObjectStore;
use reqwest::{Method, RequestBuilder, Response};
use serde_json::{json, Value};
use std::sync::Arc;
use std::time::Duration;

const S: &str = "/storage/v1";

/// Which byte store the app under test uses.
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
    buckets_crud_under_rls,
    upload_download_range_etag_info,
    rls_policies_with_uid_and_foldername,
    public_buckets_and_signed_urls,
    limits_names_and_big_bodies,
    interrupted_upload_leaves_no_row_and_no_bytes,
    upsert_move_copy_list_remove_and_janitor,
    multipart_upload_and_janitor_finishes_moves,
    object_events_are_notified,
    streams_many_parts_both_ways,
    list_v2_folders_cursor_and_sort,
    storage_bytes_metrics_count_streamed_bodies,
    small_bodies_read_whole_big_ones_streamed,
    supabase_js_storage_against_fluxbase,
    every_route_answers_under_both_mounts,
    killed_mid_upload_leaves_no_row_and_the_janitor_removes_its_bytes,
);

struct St {
    app: TestApp,
    /// The local backend's root (kept alive for the test).
    dir: Option<tempfile::TempDir>,
    /// The S3 backend's bucket.
    bucket: Option<String>,
    /// The same bytes the app stores, seen through a client of the test's own.
    store: Arc<dyn ObjectStore>,
}

async fn spawn_with(be: Be, tweak: impl FnOnce(&mut fluxbase::config::Config)) -> St {
    match be {
        Be::Local => {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().to_string_lossy().into_owned();
            let store = object_store::local::LocalFileSystem::new_with_prefix(dir.path()).unwrap();
            let app = TestApp::spawn_with(|c| {
                c.storage.local_path = path;
                tweak(c);
            })
            .await;
            St {
                app,
                dir: Some(dir),
                bucket: None,
                store: Arc::new(store),
            }
        }
        Be::S3 => {
            let s3 = crate::support::s3::server();
            let bucket = s3.new_bucket().await;
            let app = TestApp::spawn_with(|c| {
                s3.configure(c, &bucket);
                tweak(c);
            })
            .await;
            St {
                app,
                dir: None,
                store: Arc::new(s3.store(&bucket)),
                bucket: Some(bucket),
            }
        }
    }
}

async fn spawn(be: Be) -> St {
    spawn_with(be, |_| {}).await
}

impl St {
    fn req(&self, m: Method, path: &str, key: Option<&str>) -> RequestBuilder {
        let r = self
            .app
            .http
            .request(m, self.app.url(&format!("{S}{path}")));
        match key {
            Some(k) => r.header("apikey", self.app.anon_key()).bearer_auth(k),
            None => r,
        }
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
            .req(Method::POST, "/bucket", Some(&self.svc()))
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
    }
    async fn put(&self, key: &str, path: &str, body: &'static [u8], ct: &str) -> Response {
        self.req(Method::POST, &format!("/object/{path}"), Some(key))
            .header("content-type", ct)
            .body(body)
            .send()
            .await
            .unwrap()
    }
    async fn rows(&self, sql: &str) -> i64 {
        let c = self.app.db.client().await;
        c.query_one(sql, &[]).await.unwrap().get(0)
    }
    /// Everything the backend holds, as keys relative to its root (`objects/<version>`,
    /// `uploads/<version>`). Local: every file under the root, a store's staging files
    /// included. S3: every object of the bucket.
    async fn keys(&self) -> Vec<String> {
        let mut v = Vec::new();
        match &self.dir {
            Some(dir) => {
                fn walk(p: &std::path::Path, out: &mut Vec<String>) {
                    if let Ok(rd) = std::fs::read_dir(p) {
                        for e in rd.flatten() {
                            let p = e.path();
                            if p.is_dir() {
                                walk(&p, out);
                            } else {
                                out.push(p.to_string_lossy().into_owned());
                            }
                        }
                    }
                }
                let mut files = Vec::new();
                walk(dir.path(), &mut files);
                let root = format!("{}/", dir.path().display());
                for f in files {
                    let rel = f.strip_prefix(&root).unwrap_or_else(|| {
                        panic!("{f} is outside the storage root {root}");
                    });
                    v.push(rel.to_string());
                }
            }
            None => {
                let mut list = self.store.list(None);
                while let Some(m) = list.next().await {
                    v.push(m.unwrap().location.to_string());
                }
            }
        }
        v.sort();
        v
    }
    /// S3 multipart uploads begun and neither completed nor aborted (ListMultipartUploads,
    /// read straight from the server): the parts of an interrupted upload. Always 0 locally.
    async fn pending_multipart_uploads(&self) -> usize {
        let Some(bucket) = &self.bucket else {
            return 0;
        };
        let s3 = crate::support::s3::server();
        let r = reqwest::get(format!("{}/{bucket}?uploads", s3.endpoint))
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        let xml = r.text().await.unwrap();
        xml.matches("<UploadId>").count()
    }
}

async fn err(r: Response) -> (u16, Value) {
    let s = r.status().as_u16();
    (s, r.json().await.unwrap())
}

/// Checks an ETag as the default config makes it for `body`: with `hashed` (the S3
/// backend, or `storage.local_etag_algorithm: md5`) the quoted hex MD5 of the bytes;
/// otherwise (the local backend's default, `mtime`) `"<lastModified ms>-<size>"` in hex.
pub(crate) fn check_etag(hashed: bool, etag: &str, body: &[u8]) {
    use md5::Digest;
    if hashed {
        assert_eq!(etag, format!("\"{}\"", hex::encode(md5::Md5::digest(body))));
        return;
    }
    let inner = etag
        .strip_prefix('"')
        .and_then(|e| e.strip_suffix('"'))
        .unwrap_or_else(|| panic!("unquoted ETag {etag}"));
    let (ms, size) = inner
        .split_once('-')
        .unwrap_or_else(|| panic!("ETag {etag} is not <ms>-<size>"));
    let ms = i64::from_str_radix(ms, 16).unwrap_or_else(|_| panic!("ETag {etag}"));
    let age = chrono::Utc::now().timestamp_millis() - ms;
    assert!((0..600_000).contains(&age), "ETag {etag}: {age} ms old");
    assert_eq!(
        u64::from_str_radix(size, 16).ok(),
        Some(body.len() as u64),
        "{etag}"
    );
}

async fn buckets_crud_under_rls(be: Be) {
    let st = spawn(be).await;
    let anon = st.app.anon_key();
    // Anon cannot create a bucket: RLS on storage.buckets, no policy.
    let r = st
        .req(Method::POST, "/bucket", Some(&anon))
        .json(&json!({"name": "x"}))
        .send()
        .await
        .unwrap();
    let (s, b) = err(r).await;
    assert_eq!(s, 400);
    assert_eq!(
        b,
        json!({"statusCode": "403", "code": "AccessDenied", "error": "Unauthorized",
               "message": "new row violates row-level security policy"})
    );
    st.bucket(
        json!({"id": "docs", "name": "docs", "public": false, "file_size_limit": "1MB",
                     "allowed_mime_types": ["text/*"]}),
    )
    .await;
    let r = st
        .req(Method::POST, "/bucket", Some(&st.svc()))
        .json(&json!({"name": "docs"}))
        .send()
        .await
        .unwrap();
    let (_, b) = err(r).await;
    assert_eq!(
        (b["statusCode"].as_str(), b["error"].as_str()),
        (Some("409"), Some("Duplicate"))
    );
    let r = st
        .req(Method::POST, "/bucket", Some(&st.svc()))
        .json(&json!({"name": "a/b"}))
        .send()
        .await
        .unwrap();
    assert_eq!(err(r).await.1["code"], "InvalidBucketName");

    let b: Value = st
        .req(Method::GET, "/bucket/docs", Some(&st.svc()))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(b["file_size_limit"], 1024 * 1024);
    assert_eq!(b["allowed_mime_types"], json!(["text/*"]));
    assert_eq!(b["public"], false);
    let l: Value = st
        .req(Method::GET, "/bucket", Some(&st.svc()))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(l.as_array().unwrap().len(), 1);
    // Anon sees no bucket, and a missing one reads as Bucket not found.
    let l: Value = st
        .req(Method::GET, "/bucket", Some(&anon))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(l, json!([]));
    let (s, b) = err(st
        .req(Method::GET, "/bucket/docs", Some(&anon))
        .send()
        .await
        .unwrap())
    .await;
    assert_eq!(
        (s, b["statusCode"].as_str(), b["error"].as_str()),
        (400, Some("404"), Some("Bucket not found"))
    );

    let r = st
        .req(Method::PUT, "/bucket/docs", Some(&st.svc()))
        .json(&json!({"public": true}))
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.json::<Value>().await.unwrap(),
        json!({"message": "Successfully updated"})
    );
    let b: Value = st
        .req(Method::GET, "/bucket/docs", Some(&st.svc()))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        (b["public"].as_bool(), b["file_size_limit"].as_i64()),
        (Some(true), Some(1024 * 1024))
    );

    assert_eq!(
        st.put(&st.svc(), "docs/a.txt", b"hello", "text/plain")
            .await
            .status(),
        200
    );
    let (_, b) = err(st
        .req(Method::DELETE, "/bucket/docs", Some(&st.svc()))
        .send()
        .await
        .unwrap())
    .await;
    assert_eq!(b["code"], "ResourceNotEmpty");
    let r = st
        .req(Method::POST, "/bucket/docs/empty", Some(&st.svc()))
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.json::<Value>().await.unwrap(),
        json!({"message": "Successfully emptied"})
    );
    let r = st
        .req(Method::DELETE, "/bucket/docs", Some(&st.svc()))
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.json::<Value>().await.unwrap(),
        json!({"message": "Successfully deleted"})
    );
    // The alias prefix serves the same handlers.
    let r = st
        .app
        .http
        .get(st.app.url("/api/v1/storage/bucket"))
        .bearer_auth(st.svc())
        .send()
        .await
        .unwrap();
    assert_eq!(r.json::<Value>().await.unwrap(), json!([]));
}

async fn upload_download_range_etag_info(be: Be) {
    let st = spawn(be).await;
    st.bucket(json!({"name": "b"})).await;
    let svc = st.svc();
    let r = st
        .req(Method::POST, "/object/b/dir/hello.txt", Some(&svc))
        .header("content-type", "text/plain")
        .header("cache-control", "max-age=60")
        .header("x-metadata", "eyJrIjoidiJ9") // {"k":"v"}
        .body("hello world")
        .send()
        .await
        .unwrap();
    let b: Value = r.json().await.unwrap();
    assert_eq!(b["Key"], "b/dir/hello.txt");
    assert!(b["Id"].as_str().unwrap().len() == 36);

    let r = st
        .req(Method::GET, "/object/b/dir/hello.txt", Some(&svc))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let h = r.headers().clone();
    assert_eq!(h["content-type"], "text/plain");
    assert_eq!(h["cache-control"], "max-age=60");
    assert_eq!(h["content-length"], "11");
    check_etag(be == Be::S3, h["etag"].to_str().unwrap(), b"hello world");
    assert!(h.contains_key("last-modified"));
    assert_eq!(r.text().await.unwrap(), "hello world");

    let r = st
        .req(
            Method::GET,
            "/object/authenticated/b/dir/hello.txt",
            Some(&svc),
        )
        .header("if-none-match", h["etag"].to_str().unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 304);
    // If-Modified-Since (without If-None-Match): the object's own Last-Modified or later
    // is 304, an earlier date 200; If-None-Match decides alone when both are sent.
    let lm = h["last-modified"].to_str().unwrap().to_string();
    let earlier = {
        let t = chrono::DateTime::parse_from_rfc2822(&lm).unwrap() - chrono::Duration::seconds(1);
        t.format("%a, %d %b %Y %H:%M:%S GMT").to_string()
    };
    for (ims, inm, want) in [
        (lm.as_str(), None, 304),
        ("Fri, 01 Jan 2100 00:00:00 GMT", None, 304),
        (earlier.as_str(), None, 200),
        ("not a date", None, 200),
        (lm.as_str(), Some("\"other\""), 200),
        (earlier.as_str(), Some(h["etag"].to_str().unwrap()), 304),
    ] {
        for route in ["/object/", "/object/authenticated/"] {
            let mut q = st
                .req(Method::GET, &format!("{route}b/dir/hello.txt"), Some(&svc))
                .header("if-modified-since", ims);
            if let Some(inm) = inm {
                q = q.header("if-none-match", inm);
            }
            let r = q.send().await.unwrap();
            assert_eq!(
                r.status(),
                want,
                "{route} If-Modified-Since {ims}, If-None-Match {inm:?}"
            );
            if want == 304 {
                assert_eq!(r.headers()["last-modified"], lm.as_str());
                assert_eq!(r.headers()["etag"], h["etag"]);
                assert!(r.bytes().await.unwrap().is_empty());
            }
        }
    }
    let r = st
        .req(Method::GET, "/object/b/dir/hello.txt", Some(&svc))
        .header("range", "bytes=6-")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 206);
    assert_eq!(r.headers()["content-range"], "bytes 6-10/11");
    assert_eq!(r.text().await.unwrap(), "world");
    let r = st
        .req(Method::GET, "/object/b/dir/hello.txt", Some(&svc))
        .header("range", "bytes=-5")
        .send()
        .await
        .unwrap();
    assert_eq!(r.text().await.unwrap(), "world");
    let r = st
        .req(Method::GET, "/object/b/dir/hello.txt", Some(&svc))
        .header("range", "bytes=50-")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 416);
    assert_eq!(r.headers()["content-range"], "bytes */11");
    let r = st
        .req(
            Method::GET,
            "/object/b/dir/hello.txt?download=report%20v1.txt",
            Some(&svc),
        )
        .send()
        .await
        .unwrap();
    assert!(r.headers()["content-disposition"]
        .to_str()
        .unwrap()
        .starts_with("attachment; filename=\"report v1.txt\""));
    let r = st
        .req(Method::HEAD, "/object/b/dir/hello.txt", Some(&svc))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-length"], "11");
    let r = st
        .req(Method::HEAD, "/object/b/dir/nope.txt", Some(&svc))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);

    let i: Value = st
        .req(Method::GET, "/object/info/b/dir/hello.txt", Some(&svc))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        (i["size"].as_i64(), i["content_type"].as_str()),
        (Some(11), Some("text/plain"))
    );
    assert_eq!(i["metadata"], json!({"k": "v"}));
    assert_eq!(i["name"], "dir/hello.txt");

    let (s, b) = err(st
        .req(Method::GET, "/object/b/dir/missing.txt", Some(&svc))
        .send()
        .await
        .unwrap())
    .await;
    assert_eq!(s, 400);
    assert_eq!(
        b,
        json!({"statusCode": "404", "code": "NoSuchKey", "error": "not_found", "message": "Object not found"})
    );
    let (_, b) = err(st.put(&svc, "nobucket/x.txt", b"x", "text/plain").await).await;
    assert_eq!(b["error"], "Bucket not found");
}

async fn rls_policies_with_uid_and_foldername(be: Be) {
    let st = spawn(be).await;
    st.bucket(json!({"name": "private"})).await;
    st.app
        .db
        .client()
        .await
        .batch_execute(
            "CREATE POLICY own_insert ON storage.objects FOR INSERT TO authenticated
           WITH CHECK (bucket_id = 'private' AND (storage.foldername(name))[1] = auth.uid()::text);
         CREATE POLICY own_select ON storage.objects FOR SELECT TO authenticated
           USING (bucket_id = 'private' AND (storage.foldername(name))[1] = auth.uid()::text);
         CREATE POLICY own_update ON storage.objects FOR UPDATE TO authenticated
           USING ((storage.foldername(name))[1] = auth.uid()::text);
         CREATE POLICY own_delete ON storage.objects FOR DELETE TO authenticated
           USING ((storage.foldername(name))[1] = auth.uid()::text);",
        )
        .await
        .unwrap();
    let a_id = "11111111-1111-4111-8111-111111111111";
    let b_id = "22222222-2222-4222-8222-222222222222";
    let (a, b) = (st.user(a_id), st.user(b_id));
    let r = st
        .put(
            &a,
            &format!("private/{a_id}/note.txt"),
            b"mine",
            "text/plain",
        )
        .await;
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
    let (s, body) = err(st
        .put(
            &a,
            &format!("private/{b_id}/note.txt"),
            b"not mine",
            "text/plain",
        )
        .await)
    .await;
    assert_eq!(
        (s, body["statusCode"].as_str(), body["message"].as_str()),
        (
            400,
            Some("403"),
            Some("new row violates row-level security policy")
        )
    );
    // Refused before any byte reached the store, and nothing committed.
    assert_eq!(st.rows("SELECT count(*) FROM storage.objects").await, 1);
    // The row's owner is the uploader.
    let c = st.app.db.client().await;
    let owner: String = c
        .query_one("SELECT owner_id FROM storage.objects", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(owner, a_id);

    let path = format!("/object/private/{a_id}/note.txt");
    assert_eq!(
        st.req(Method::GET, &path, Some(&a))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap(),
        "mine"
    );
    let (_, body) = err(st.req(Method::GET, &path, Some(&b)).send().await.unwrap()).await;
    assert_eq!(body["message"], "Object not found");
    let (_, body) = err(st
        .req(Method::GET, &path, Some(&st.app.anon_key()))
        .send()
        .await
        .unwrap())
    .await;
    assert_eq!(body["message"], "Object not found");
    let l: Value = st
        .req(Method::POST, "/object/list/private", Some(&b))
        .json(&json!({"prefix": a_id}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(l, json!([]));
    let r = st
        .req(
            Method::POST,
            &format!("/object/sign{}", &path[7..]),
            Some(&b),
        )
        .json(&json!({"expiresIn": 60}))
        .send()
        .await
        .unwrap();
    assert_eq!(err(r).await.1["code"], "NoSuchKey");
    // B cannot delete A's object; A can.
    let (_, body) = err(st
        .req(Method::DELETE, &path, Some(&b))
        .send()
        .await
        .unwrap())
    .await;
    assert_eq!(body["code"], "NoSuchKey");
    let r: Value = st
        .req(Method::DELETE, "/object/private", Some(&a))
        .json(&json!({"prefixes": [format!("{a_id}/note.txt")]}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(r.as_array().unwrap().len(), 1);
    assert_eq!(r[0]["name"], format!("{a_id}/note.txt"));
}

async fn public_buckets_and_signed_urls(be: Be) {
    let st = spawn(be).await;
    st.bucket(json!({"name": "pub", "public": true})).await;
    st.bucket(json!({"name": "priv"})).await;
    let svc = st.svc();
    st.put(&svc, "pub/a.txt", b"open", "text/plain").await;
    st.put(&svc, "priv/a.txt", b"secret", "text/plain").await;
    let r = st
        .req(Method::GET, "/object/public/pub/a.txt", None)
        .send()
        .await
        .unwrap();
    assert_eq!(r.text().await.unwrap(), "open");
    let i: Value = st
        .req(Method::GET, "/object/info/public/pub/a.txt", None)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(i["size"], 4);
    let (_, b) = err(st
        .req(Method::GET, "/object/public/priv/a.txt", None)
        .send()
        .await
        .unwrap())
    .await;
    assert_eq!(b["message"], "Bucket not found");

    let s: Value = st
        .req(Method::POST, "/object/sign/priv/a.txt", Some(&svc))
        .json(&json!({"expiresIn": 60}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let url = s["signedURL"].as_str().unwrap().to_string();
    assert!(url.starts_with("/object/sign/priv/a.txt?token="));
    let r = st.req(Method::GET, &url, None).send().await.unwrap();
    assert_eq!(r.text().await.unwrap(), "secret");
    // Tampered: one character of the signature changed.
    let mut bad = url.clone();
    let last = bad.pop().unwrap();
    bad.push(if last == 'A' { 'B' } else { 'A' });
    let (s, b) = err(st.req(Method::GET, &bad, None).send().await.unwrap()).await;
    assert_eq!((s, b["code"].as_str()), (400, Some("InvalidJWT")));
    // Another object's URL with this token.
    st.put(&svc, "priv/b.txt", b"other", "text/plain").await;
    let other = url.replace("a.txt", "b.txt");
    assert_eq!(
        err(st.req(Method::GET, &other, None).send().await.unwrap())
            .await
            .1["code"],
        "InvalidSignature"
    );
    // Expired (signed with the project secret, exp in the past).
    let now = chrono::Utc::now().timestamp();
    let expired = jsonwebtoken::encode(
        &jsonwebtoken::Header::default(),
        &json!({"url": "priv/a.txt", "iat": now - 100, "exp": now - 50}),
        &jsonwebtoken::EncodingKey::from_secret(TEST_SECRET.as_bytes()),
    )
    .unwrap();
    let (_, b) = err(st
        .req(
            Method::GET,
            &format!("/object/sign/priv/a.txt?token={expired}"),
            None,
        )
        .send()
        .await
        .unwrap())
    .await;
    assert_eq!(
        (b["code"].as_str(), b["message"].as_str()),
        (Some("InvalidJWT"), Some("jwt expired"))
    );

    let many: Value = st
        .req(Method::POST, "/object/sign/priv", Some(&svc))
        .json(&json!({"expiresIn": 60, "paths": ["a.txt", "zzz.txt"]}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(many[0]["signedURL"]
        .as_str()
        .unwrap()
        .starts_with("/object/sign/priv/a.txt?token="));
    assert_eq!(many[0]["error"], Value::Null);
    assert_eq!(many[1]["signedURL"], Value::Null);

    // Signed upload: signed by the service role, used without credentials.
    let s: Value = st
        .req(Method::POST, "/object/upload/sign/priv/up.txt", Some(&svc))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let token = s["token"].as_str().unwrap();
    assert_eq!(
        s["url"],
        format!("/object/upload/sign/priv/up.txt?token={token}")
    );
    let r = st
        .req(Method::PUT, s["url"].as_str().unwrap(), None)
        .header("content-type", "text/plain")
        .body("via token")
        .send()
        .await
        .unwrap();
    assert_eq!(r.json::<Value>().await.unwrap()["Key"], "priv/up.txt");
    let r = st
        .req(Method::GET, "/object/priv/up.txt", Some(&svc))
        .send()
        .await
        .unwrap();
    assert_eq!(r.text().await.unwrap(), "via token");
    // An upload token does not download, a download token does not upload.
    assert_eq!(
        err(st
            .req(
                Method::GET,
                &format!("/object/sign/priv/up.txt?token={token}"),
                None
            )
            .send()
            .await
            .unwrap())
        .await
        .1["code"],
        "InvalidSignature"
    );
    let dl = url.split("token=").nth(1).unwrap();
    let r = st
        .req(
            Method::PUT,
            &format!("/object/upload/sign/priv/a.txt?token={dl}"),
            None,
        )
        .body("x")
        .send()
        .await
        .unwrap();
    assert_eq!(err(r).await.1["code"], "InvalidSignature");
    // Anon may not even sign an upload (no INSERT policy).
    let r = st
        .req(
            Method::POST,
            "/object/upload/sign/priv/x.txt",
            Some(&st.app.anon_key()),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(err(r).await.1["statusCode"], "403");
}

async fn limits_names_and_big_bodies(be: Be) {
    let st = spawn_with(be, |c| c.server.body_limit_bytes = 1024).await;
    st.bucket(json!({"name": "small", "file_size_limit": 10, "allowed_mime_types": ["image/*"]}))
        .await;
    st.bucket(json!({"name": "big"})).await;
    let svc = st.svc();
    let (s, b) = err(st
        .put(&svc, "small/a.png", b"0123456789AB", "image/png")
        .await)
    .await;
    assert_eq!(s, 400);
    assert_eq!(
        b,
        json!({"statusCode": "413", "code": "EntityTooLarge", "error": "Payload too large",
        "message": "The object exceeded the maximum allowed size"})
    );
    // Chunked (no Content-Length): stopped while streaming.
    let chunks = futures_util::stream::iter(vec![
        Ok::<_, std::io::Error>(vec![b'x'; 8]),
        Ok(vec![b'y'; 8]),
    ]);
    let r = st
        .req(Method::POST, "/object/small/b.png", Some(&svc))
        .header("content-type", "image/png")
        .body(reqwest::Body::wrap_stream(chunks))
        .send()
        .await
        .unwrap();
    assert_eq!(err(r).await.1["statusCode"], "413");
    let (_, b) = err(st.put(&svc, "small/a.txt", b"0123", "text/plain").await).await;
    assert_eq!(
        b,
        json!({"statusCode": "415", "code": "InvalidMimeType", "error": "invalid_mime_type",
        "message": "mime type text/plain is not supported"})
    );
    assert_eq!(
        st.put(&svc, "small/a.png", b"0123", "image/png")
            .await
            .status(),
        200
    );
    // Over server.body_limit_bytes (1 KiB) but under the storage limits: accepted.
    let big: &'static [u8] = Box::leak(vec![7u8; 64 * 1024].into_boxed_slice());
    let r = st
        .put(&svc, "big/blob.bin", big, "application/octet-stream")
        .await;
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
    let got = st
        .req(Method::GET, "/object/big/blob.bin", Some(&svc))
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    assert_eq!(got.len(), 64 * 1024);
    // JSON bodies stay under the server limit.
    let r = st
        .req(Method::POST, "/object/list/big", Some(&svc))
        .header("content-type", "application/json")
        .body(format!("{{\"prefix\":\"{}\"}}", "a".repeat(2000)))
        .send()
        .await
        .unwrap();
    assert_eq!(err(r).await.1["statusCode"], "413");
    for bad in [
        "big/..%2Fetc%2Fpasswd",
        "big/a%2F..%2Fb",
        "big/.",
        "big/a%5Cb",
        "big/a%00b",
        "big//abs",
    ] {
        let (s, b) = err(st.put(&svc, bad, b"x", "text/plain").await).await;
        assert_eq!((s, b["code"].as_str()), (400, Some("InvalidKey")), "{bad}");
    }
    // Clients normalise `..` out of URLs; JSON bodies carry it verbatim.
    let r = st
        .req(Method::POST, "/object/move", Some(&svc))
        .json(
            &json!({"bucketId": "big", "sourceKey": "blob.bin", "destinationKey": "../../outside"}),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(err(r).await.1["code"], "InvalidKey");
    let r = st
        .req(Method::POST, "/object/copy", Some(&svc))
        .json(&json!({"bucketId": "big", "sourceKey": "blob.bin", "destinationKey": "/etc/passwd"}))
        .send()
        .await
        .unwrap();
    assert_eq!(err(r).await.1["code"], "InvalidKey");
    let long = format!("big/{}", "n".repeat(1025));
    let (_, b) = err(st
        .put(&svc, Box::leak(long.into_boxed_str()), b"x", "text/plain")
        .await)
    .await;
    assert_eq!(b["code"], "InvalidKey");
    // Nothing was written outside the root (keys() panics on a file outside it), only the
    // two accepted objects are stored, and no upload data is left behind.
    let keys = st.keys().await;
    assert_eq!(keys.len(), 2, "{keys:?}");
    assert!(keys.iter().all(|k| k.starts_with("objects/")), "{keys:?}");
    assert_eq!(st.pending_multipart_uploads().await, 0);
}

async fn interrupted_upload_leaves_no_row_and_no_bytes(be: Be) {
    use tokio::io::AsyncWriteExt;
    let st = spawn(be).await;
    st.bucket(json!({"name": "b"})).await;
    let addr = st.app.base.trim_start_matches("http://").to_string();
    let mut sock = tokio::net::TcpStream::connect(&addr).await.unwrap();
    let head = format!(
        "POST {S}/object/b/cut.bin HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {}\r\n\
         Content-Type: application/octet-stream\r\nContent-Length: 10000000\r\n\r\n",
        st.svc()
    );
    sock.write_all(head.as_bytes()).await.unwrap();
    sock.write_all(&vec![1u8; 300_000]).await.unwrap();
    sock.flush().await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    drop(sock);
    // No bytes, not even an unfinished S3 multipart upload (its parts would be billed).
    let clean = crate::support::eventually(Duration::from_secs(10), || async {
        st.keys().await.is_empty() && st.pending_multipart_uploads().await == 0
    })
    .await;
    assert!(
        clean,
        "left behind: {:?}, {} multipart uploads",
        st.keys().await,
        st.pending_multipart_uploads().await
    );
    assert_eq!(st.rows("SELECT count(*) FROM storage.objects").await, 0);
    let (_, b) = err(st
        .req(Method::GET, "/object/b/cut.bin", Some(&st.svc()))
        .send()
        .await
        .unwrap())
    .await;
    assert_eq!(b["code"], "NoSuchKey");
}

async fn upsert_move_copy_list_remove_and_janitor(be: Be) {
    let st = spawn(be).await;
    st.bucket(json!({"name": "b"})).await;
    st.bucket(json!({"name": "c"})).await;
    let svc = st.svc();
    for p in [
        "b/f/one.txt",
        "b/f/two.txt",
        "b/f/sub/deep.txt",
        "b/top.txt",
    ] {
        assert_eq!(st.put(&svc, p, b"v1", "text/plain").await.status(), 200);
    }
    let (_, b) = err(st.put(&svc, "b/top.txt", b"v2", "text/plain").await).await;
    assert_eq!(
        (b["statusCode"].as_str(), b["error"].as_str()),
        (Some("409"), Some("Duplicate"))
    );
    let r = st
        .req(Method::POST, "/object/b/top.txt", Some(&svc))
        .header("x-upsert", "true")
        .body("v2!")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let r = st
        .req(Method::PUT, "/object/b/top.txt", Some(&svc))
        .body("v3!!")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(
        st.req(Method::GET, "/object/b/top.txt", Some(&svc))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap(),
        "v3!!"
    );
    assert_eq!(st.rows("SELECT count(*) FROM storage.garbage").await, 2);

    let l: Value = st
        .req(Method::POST, "/object/list/b", Some(&svc))
        .json(&json!({"prefix": "f"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let names: Vec<&str> = l
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["one.txt", "sub", "two.txt"]);
    assert_eq!(l[1]["id"], Value::Null);
    assert_eq!(l[1]["metadata"], Value::Null);
    assert_eq!(l[0]["metadata"]["size"], 2);
    let l: Value = st.req(Method::POST, "/object/list/b", Some(&svc))
        .json(&json!({"prefix": "", "limit": 1, "offset": 1, "sortBy": {"column": "name", "order": "desc"}})).send().await.unwrap().json().await.unwrap();
    assert_eq!(l, json!([l[0].clone()]));
    assert_eq!(l[0]["name"], "f");
    let l: Value = st
        .req(Method::POST, "/object/list/b", Some(&svc))
        .json(&json!({"prefix": "f/", "search": "tw"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(l.as_array().unwrap().len(), 1);

    let r = st
        .req(Method::POST, "/object/move", Some(&svc))
        .json(
            &json!({"bucketId": "b", "sourceKey": "f/one.txt", "destinationKey": "moved/one.txt"}),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.json::<Value>().await.unwrap(),
        json!({"message": "Successfully moved"})
    );
    assert_eq!(
        st.req(Method::GET, "/object/b/moved/one.txt", Some(&svc))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap(),
        "v1"
    );
    let r = st
        .req(Method::POST, "/object/move", Some(&svc))
        .json(&json!({"bucketId": "b", "sourceKey": "f/two.txt", "destinationKey": "top.txt"}))
        .send()
        .await
        .unwrap();
    assert_eq!(err(r).await.1["error"], "Duplicate");
    let r = st
        .req(Method::POST, "/object/move", Some(&svc))
        .json(&json!({"bucketId": "b", "sourceKey": "nope.txt", "destinationKey": "x.txt"}))
        .send()
        .await
        .unwrap();
    assert_eq!(err(r).await.1["code"], "NoSuchKey");
    let r: Value = st.req(Method::POST, "/object/copy", Some(&svc))
        .json(&json!({"bucketId": "b", "sourceKey": "top.txt", "destinationKey": "copy.txt", "destinationBucket": "c"})).send().await.unwrap().json().await.unwrap();
    assert_eq!(r["Key"], "c/copy.txt");
    assert_eq!(
        st.req(Method::GET, "/object/c/copy.txt", Some(&svc))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap(),
        "v3!!"
    );

    let del: Value = st
        .req(Method::DELETE, "/object/b", Some(&svc))
        .json(&json!({"prefixes": ["top.txt", "missing.txt"]}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(del.as_array().unwrap().len(), 1);
    let r = st
        .req(Method::DELETE, "/object/b/f/sub/deep.txt", Some(&svc))
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.json::<Value>().await.unwrap(),
        json!({"message": "Successfully deleted"})
    );
    // The copy still reads after its source is deleted; versions are separate bytes.
    assert_eq!(
        st.req(Method::GET, "/object/c/copy.txt", Some(&svc))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap(),
        "v3!!"
    );

    // The janitor deletes the bytes of the 2 replaced and 2 deleted versions, and nothing else.
    let keys_before = st.keys().await.len();
    let be = st.app.state.storage.clone().unwrap();
    let s = fluxbase::storage::janitor::sweep(&st.app.state.pool, &be, Duration::ZERO)
        .await
        .unwrap();
    assert_eq!(s.garbage_removed, 4);
    assert_eq!(st.keys().await.len(), keys_before - 4);
    assert_eq!(st.rows("SELECT count(*) FROM storage.garbage").await, 0);
    for p in ["/object/b/moved/one.txt", "/object/c/copy.txt"] {
        assert_eq!(
            st.req(Method::GET, p, Some(&svc))
                .send()
                .await
                .unwrap()
                .status(),
            200
        );
    }
}

async fn multipart_upload_and_janitor_finishes_moves(be: Be) {
    let st = spawn(be).await;
    st.bucket(json!({"name": "b"})).await;
    let svc = st.svc();
    let body = "--XyZ\r\nContent-Disposition: form-data; name=\"cacheControl\"\r\n\r\n3600\r\n\
                --XyZ\r\nContent-Disposition: form-data; name=\"metadata\"\r\n\r\n{\"a\":1}\r\n\
                --XyZ\r\nContent-Disposition: form-data; name=\"\"; filename=\"blob\"\r\n\
                Content-Type: image/png\r\n\r\nPNGDATA\r\n--XyZ--\r\n";
    let r = st
        .req(Method::POST, "/object/b/m.png", Some(&svc))
        .header("content-type", "multipart/form-data; boundary=XyZ")
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
    let r = st
        .req(Method::GET, "/object/b/m.png", Some(&svc))
        .send()
        .await
        .unwrap();
    assert_eq!(
        (
            r.headers()["content-type"].to_str().unwrap(),
            r.headers()["cache-control"].to_str().unwrap()
        ),
        ("image/png", "max-age=3600")
    );
    assert_eq!(r.text().await.unwrap(), "PNGDATA");
    let i: Value = st
        .req(Method::GET, "/object/info/b/m.png", Some(&svc))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(i["metadata"], json!({"a": 1}));

    // A crash between commit and move: the bytes are still at their upload key. Reads fall
    // back to it, and the janitor moves them into place.
    let c = st.app.db.client().await;
    let v: String = c
        .query_one("SELECT version FROM storage.objects", &[])
        .await
        .unwrap()
        .get(0);
    let (data, upload) = (
        object_store::path::Path::from(format!("objects/{v}")),
        object_store::path::Path::from(format!("uploads/{v}")),
    );
    st.store.rename(&data, &upload).await.unwrap();
    assert_eq!(st.keys().await, [format!("uploads/{v}")]);
    assert_eq!(
        st.req(Method::GET, "/object/b/m.png", Some(&svc))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap(),
        "PNGDATA"
    );
    // And an orphan: upload data whose row never committed.
    st.store
        .put(
            &object_store::path::Path::from("uploads/00000000-0000-4000-8000-000000000000"),
            bytes::Bytes::from_static(b"orphan").into(),
        )
        .await
        .unwrap();
    let be = st.app.state.storage.clone().unwrap();
    let s = fluxbase::storage::janitor::sweep(&st.app.state.pool, &be, Duration::ZERO)
        .await
        .unwrap();
    assert_eq!((s.uploads_published, s.uploads_removed), (1, 1));
    assert_eq!(st.keys().await, [format!("objects/{v}")]);
}

impl St {
    async fn list_v2(&self, key: &str, body: Value) -> Value {
        let r = self
            .req(Method::POST, "/object/list-v2/b", Some(key))
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "{body}");
        r.json().await.unwrap()
    }

    /// Every page of a listing (folders, then objects, of each page; full names), following
    /// `nextCursor`; and how many pages it took.
    async fn list_v2_all(&self, body: Value) -> (Vec<String>, usize) {
        let (mut names, mut pages) = (Vec::new(), 0);
        let mut body = body;
        loop {
            let page = self.list_v2(&self.svc(), body.clone()).await;
            pages += 1;
            for kind in ["folders", "objects"] {
                for e in page[kind].as_array().unwrap() {
                    names.push(e["name"].as_str().unwrap().to_string());
                }
            }
            if page["hasNext"] == true {
                body["cursor"] = page["nextCursor"].clone();
                assert!(pages < 50, "endless paging");
            } else {
                assert_eq!(page.get("nextCursor"), None, "{page}");
                return (names, pages);
            }
        }
    }
}

fn object_names(page: &Value) -> Vec<&str> {
    page["objects"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o["name"].as_str().unwrap())
        .collect()
}

async fn list_v2_folders_cursor_and_sort(be: Be) {
    let st = spawn(be).await;
    st.bucket(json!({"name": "b"})).await;
    let svc = st.svc();
    // Uploaded one after another, so created_at follows this order.
    let names = [
        "f/one.txt",
        "top.txt",
        "f/sub/deep.txt",
        "g/a.txt",
        "f/sub/deeper/x.txt",
        "fz.txt",
        "f/two.txt",
    ];
    for n in names {
        let path: &'static str = Box::leak(format!("b/{n}").into_boxed_str());
        assert_eq!(
            st.put(&svc, path, b"12345", "text/plain").await.status(),
            200
        );
    }

    // Flat: every object whose name starts with the prefix, by name; no folders, no `key`.
    let page = st.list_v2(&svc, json!({"prefix": "f/"})).await;
    assert_eq!(
        object_names(&page),
        [
            "f/one.txt",
            "f/sub/deep.txt",
            "f/sub/deeper/x.txt",
            "f/two.txt"
        ]
    );
    assert_eq!(page["folders"], json!([]));
    assert_eq!(page["hasNext"], false);
    assert_eq!(page.get("nextCursor"), None);
    let one = &page["objects"][0];
    assert_eq!(one.get("key"), None);
    assert_eq!(one["metadata"]["size"], 5);
    assert_eq!(one["metadata"]["mimetype"], "text/plain");
    assert_eq!(one["id"].as_str().unwrap().len(), 36);
    for k in ["created_at", "updated_at", "last_accessed_at"] {
        assert!(one[k].is_string(), "{k}: {one}");
    }

    // With the delimiter: folders apart as {key, name}; objects carry their key too.
    let page = st
        .list_v2(&svc, json!({"prefix": "f/", "with_delimiter": true}))
        .await;
    assert_eq!(page["folders"], json!([{"key": "sub", "name": "f/sub/"}]));
    let got: Vec<(&str, &str)> = page["objects"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| (o["key"].as_str().unwrap(), o["name"].as_str().unwrap()))
        .collect();
    assert_eq!(got, [("one.txt", "f/one.txt"), ("two.txt", "f/two.txt")]);
    // A prefix that is not a folder boundary matches the names that start with it.
    let page = st
        .list_v2(&svc, json!({"prefix": "f", "with_delimiter": true}))
        .await;
    assert_eq!(page["folders"], json!([{"key": "f", "name": "f/"}]));
    assert_eq!(object_names(&page), ["fz.txt"]);
    assert_eq!(page["objects"][0]["key"], "fz.txt");

    // Paging one entry at a time: a folder is one entry, never repeated on later pages.
    let (all, pages) = st
        .list_v2_all(json!({"prefix": "", "with_delimiter": true, "limit": 1}))
        .await;
    assert_eq!(all, ["f/", "fz.txt", "g/", "top.txt"]);
    assert_eq!(pages, 4);
    let (all, _) = st
        .list_v2_all(json!({"with_delimiter": true, "limit": 1,
            "sortBy": {"column": "name", "order": "desc"}}))
        .await;
    assert_eq!(all, ["top.txt", "g/", "fz.txt", "f/"]);
    let (all, pages) = st
        .list_v2_all(json!({"limit": 3, "sortBy": {"column": "name", "order": "desc"}}))
        .await;
    let mut by_name: Vec<&str> = names.to_vec();
    by_name.sort();
    by_name.reverse();
    assert_eq!(all, by_name);
    assert_eq!(pages, 3);
    // Timestamp sorts page by (time, name): newest first, two at a time.
    let (all, pages) = st
        .list_v2_all(json!({"limit": 2, "sortBy": {"column": "created_at", "order": "desc"}}))
        .await;
    let newest_first: Vec<&str> = names.iter().rev().copied().collect();
    assert_eq!(all, newest_first);
    assert_eq!(pages, 4);
    let (all, _) = st
        .list_v2_all(json!({"limit": 3, "sortBy": {"column": "updated_at"}}))
        .await;
    assert_eq!(all, names);
    // With the delimiter, folders carry no time and sort first (ascending).
    let (all, _) = st
        .list_v2_all(json!({"with_delimiter": true, "limit": 2,
            "sortBy": {"column": "created_at", "order": "asc"}}))
        .await;
    assert_eq!(all, ["f/", "g/", "top.txt", "fz.txt"]);

    // The cursor resumes after its entry even once that entry is gone, and keeps its sort
    // whatever the next request's sortBy says.
    let page = st.list_v2(&svc, json!({"prefix": "f/", "limit": 2})).await;
    assert_eq!(page["hasNext"], true);
    assert_eq!(page["nextCursorKey"], "f/sub/deep.txt");
    let cursor = page["nextCursor"].clone();
    let r = st
        .req(Method::DELETE, "/object/b/f/sub/deep.txt", Some(&svc))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let page = st
        .list_v2(
            &svc,
            json!({"prefix": "f/", "limit": 2, "cursor": cursor,
                "sortBy": {"column": "created_at", "order": "desc"}}),
        )
        .await;
    assert_eq!(object_names(&page), ["f/sub/deeper/x.txt", "f/two.txt"]);
    assert_eq!(page["hasNext"], false);

    // RLS: anon has no SELECT policy and sees an empty bucket.
    let page = st
        .list_v2(&st.app.anon_key(), json!({"with_delimiter": true}))
        .await;
    assert_eq!(
        page,
        json!({"hasNext": false, "folders": [], "objects": []})
    );
    // Bad input: forged cursors, a limit below 1, a column list-v2 does not sort by.
    for body in [
        json!({"cursor": "not-a-cursor!"}),
        json!({"cursor": "eyJjIjoiaWQiLCJkIjpmYWxzZSwibiI6IngifQ"}), // {"c":"id",..}
        json!({"limit": 0}),
        json!({"sortBy": {"column": "last_accessed_at"}}),
    ] {
        let r = st
            .req(Method::POST, "/object/list-v2/b", Some(&svc))
            .json(&body)
            .send()
            .await
            .unwrap();
        let (s, b) = err(r).await;
        assert_eq!(
            (s, b["statusCode"].as_str()),
            (400, Some("400")),
            "{body}: {b}"
        );
    }
    let r = st
        .req(Method::POST, "/object/list-v2/b", Some(&svc))
        .json(&json!({"prefix": "a/../../x"}))
        .send()
        .await
        .unwrap();
    assert_eq!(err(r).await.1["code"], "InvalidKey");
    // Over 1000 is capped, not refused; the alias prefix serves the same handler.
    let r = st
        .app
        .http
        .post(st.app.url("/api/v1/storage/object/list-v2/b"))
        .bearer_auth(&svc)
        .json(&json!({"limit": 5000}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let page: Value = r.json().await.unwrap();
    assert_eq!(object_names(&page).len(), names.len() - 1);
}

/// Byte `i` of a generated body: no fixture file, and no two parts alike.
fn gen_byte(i: u64) -> u8 {
    ((i * 31 + i / 4099) % 251) as u8
}

fn gen_body(len: u64, chunk: u64) -> reqwest::Body {
    let chunks = (0..len.div_ceil(chunk)).map(move |c| {
        let (start, end) = (c * chunk, ((c + 1) * chunk).min(len));
        Ok::<_, std::io::Error>((start..end).map(gen_byte).collect::<Vec<u8>>())
    });
    reqwest::Body::wrap_stream(futures_util::stream::iter(chunks))
}

/// 12 MiB streamed in without a Content-Length: three S3 parts (5 + 5 + 2 MiB), read back
/// whole and across a part boundary.
async fn streams_many_parts_both_ways(be: Be) {
    const LEN: u64 = 12 * 1024 * 1024;
    let st = spawn(be).await;
    st.bucket(json!({"name": "b"})).await;
    let svc = st.svc();
    let r = st
        .req(Method::POST, "/object/b/big.bin", Some(&svc))
        .header("content-type", "application/octet-stream")
        .body(gen_body(LEN, 100_000))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
    let want: Vec<u8> = (0..LEN).map(gen_byte).collect();
    let r = st
        .req(Method::GET, "/object/b/big.bin", Some(&svc))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    check_etag(be == Be::S3, r.headers()["etag"].to_str().unwrap(), &want);
    let got = r.bytes().await.unwrap();
    assert_eq!(got.len() as u64, LEN);
    assert!(got[..] == want[..], "downloaded bytes differ");
    let (s, e) = (5 * 1024 * 1024 - 10, 5 * 1024 * 1024 + 9);
    let r = st
        .req(Method::GET, "/object/b/big.bin", Some(&svc))
        .header("range", format!("bytes={s}-{e}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 206);
    assert_eq!(
        r.headers()["content-range"],
        format!("bytes {s}-{e}/{LEN}").as_str()
    );
    assert_eq!(r.bytes().await.unwrap()[..], want[s..=e]);
    let keys = st.keys().await;
    assert_eq!(keys.len(), 1, "{keys:?}");
    assert!(keys[0].starts_with("objects/"), "{keys:?}");
}

impl St {
    /// `fluxbase_storage_bytes_total{direction}` as `/metrics` shows it (0 before any byte).
    async fn storage_bytes(&self, direction: &str) -> u64 {
        let text = self
            .app
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
}

/// Upload bodies count as written to the store (a multipart body's file part only),
/// download bodies as sent (a range counts its length; HEAD, 304 and 416 send none).
async fn storage_bytes_metrics_count_streamed_bodies(be: Be) {
    const N: u64 = 300_000;
    let st = spawn(be).await;
    st.bucket(json!({"name": "b"})).await;
    st.bucket(json!({"name": "small", "file_size_limit": 10}))
        .await;
    let svc = st.svc();
    assert_eq!(
        (st.storage_bytes("in").await, st.storage_bytes("out").await),
        (0, 0)
    );
    let r = st
        .req(Method::POST, "/object/b/gen.bin", Some(&svc))
        .header("content-type", "application/octet-stream")
        .body(gen_body(N, 64 * 1024))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let body = "--XyZ\r\nContent-Disposition: form-data; name=\"cacheControl\"\r\n\r\n3600\r\n\
                --XyZ\r\nContent-Disposition: form-data; name=\"\"; filename=\"blob\"\r\n\
                Content-Type: image/png\r\n\r\nPNGDATA\r\n--XyZ--\r\n";
    let r = st
        .req(Method::POST, "/object/b/m.png", Some(&svc))
        .header("content-type", "multipart/form-data; boundary=XyZ")
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(st.storage_bytes("in").await, N + 7);
    assert_eq!(st.storage_bytes("out").await, 0);
    // Refused before the body (declared length over the limit): nothing written.
    let (_, b) = err(st
        .put(
            &svc,
            "small/x.bin",
            b"0123456789AB",
            "application/octet-stream",
        )
        .await)
    .await;
    assert_eq!(b["statusCode"], "413");
    assert_eq!(st.storage_bytes("in").await, N + 7);

    let got = st
        .req(Method::GET, "/object/b/gen.bin", Some(&svc))
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    assert_eq!(got.len() as u64, N);
    assert_eq!(st.storage_bytes("out").await, N);
    let r = st
        .req(Method::GET, "/object/b/gen.bin", Some(&svc))
        .header("range", "bytes=1000-1099")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 206);
    assert_eq!(r.bytes().await.unwrap().len(), 100);
    let etag = {
        let r = st
            .req(Method::HEAD, "/object/b/gen.bin", Some(&svc))
            .send()
            .await
            .unwrap();
        assert_eq!(r.headers()["content-length"], N.to_string().as_str());
        r.headers()["etag"].to_str().unwrap().to_string()
    };
    let r = st
        .req(Method::GET, "/object/b/gen.bin", Some(&svc))
        .header("if-none-match", &etag)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 304);
    let r = st
        .req(Method::GET, "/object/b/gen.bin", Some(&svc))
        .header("range", "bytes=999999-")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 416);
    // A signed URL is a download like any other.
    let s: Value = st
        .req(Method::POST, "/object/sign/b/m.png", Some(&svc))
        .json(&json!({"expiresIn": 60}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let r = st
        .req(Method::GET, s["signedURL"].as_str().unwrap(), None)
        .send()
        .await
        .unwrap();
    assert_eq!(r.text().await.unwrap(), "PNGDATA");
    assert_eq!(st.storage_bytes("out").await, N + 100 + 7);
    assert_eq!(st.storage_bytes("in").await, N + 7);
}

async fn object_events_are_notified(be: Be) {
    let st = spawn(be).await;
    st.bucket(json!({"name": "b"})).await;
    let (client, mut conn) = tokio_postgres::connect(&st.app.db.url, tokio_postgres::NoTls)
        .await
        .unwrap();
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        let mut stream = futures_util::stream::poll_fn(move |cx| conn.poll_message(cx));
        use futures_util::StreamExt;
        while let Some(Ok(tokio_postgres::AsyncMessage::Notification(n))) = stream.next().await {
            let _ = tx.send(n.payload().to_string());
        }
    });
    client
        .batch_execute("LISTEN fluxbase_events")
        .await
        .unwrap();
    let svc = st.svc();
    st.put(&svc, "b/e.txt", b"1", "text/plain").await;
    // An upsert and a move are updates (a move names where the object was).
    let r = st
        .req(Method::PUT, "/object/b/e.txt", Some(&svc))
        .header("content-type", "text/plain")
        .body("22")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let r = st
        .req(Method::POST, "/object/move", Some(&svc))
        .json(&json!({"bucketId": "b", "sourceKey": "e.txt", "destinationKey": "f.txt"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    st.req(Method::DELETE, "/object/b/f.txt", Some(&svc))
        .send()
        .await
        .unwrap();
    let mut got = Vec::new();
    while got.len() < 4 {
        let p = tokio::time::timeout(Duration::from_secs(5), rx.recv())
            .await
            .unwrap()
            .unwrap();
        got.push(serde_json::from_str::<Value>(&p).unwrap());
    }
    assert_eq!(got[0]["type"], "storage.object.created");
    assert_eq!(
        (
            got[0]["bucket_id"].as_str(),
            got[0]["name"].as_str(),
            got[0]["size"].as_i64()
        ),
        (Some("b"), Some("e.txt"), Some(1))
    );
    assert_eq!(got[1]["type"], "storage.object.updated");
    assert_eq!(got[1]["size"], 2);
    assert_eq!(got[2]["type"], "storage.object.updated");
    assert_eq!(
        (got[2]["name"].as_str(), got[2]["old_name"].as_str()),
        (Some("f.txt"), Some("e.txt"))
    );
    assert_eq!(got[3]["type"], "storage.object.deleted");
    assert_eq!(got[3]["name"], "f.txt");
    // The events come from AFTER triggers on the table: a change made in SQL, not through
    // the API, is announced too.
    let c = st.app.db.client().await;
    c.batch_execute(
        "INSERT INTO storage.objects (bucket_id, name, version, metadata) \
         VALUES ('b', 'sql.txt', 'v-sql', '{\"size\": 3}')",
    )
    .await
    .unwrap();
    let p = tokio::time::timeout(Duration::from_secs(5), rx.recv())
        .await
        .unwrap()
        .unwrap();
    let e: Value = serde_json::from_str(&p).unwrap();
    assert_eq!(
        (e["type"].as_str(), e["name"].as_str()),
        (Some("storage.object.created"), Some("sql.txt"))
    );
}

#[tokio::test]
async fn foldername_filename_extension_match_supabase() {
    let st = spawn(Be::Local).await;
    let c = st.app.db.client().await;
    let r = c.query_one("SELECT storage.foldername('a/b/c.png'), storage.filename('a/b/c.png'), \
        storage.extension('a/b/c.tar.gz'), storage.foldername('top.txt'), storage.extension('noext')", &[]).await.unwrap();
    assert_eq!(r.get::<_, Vec<String>>(0), vec!["a", "b"]);
    assert_eq!(r.get::<_, String>(1), "c.png");
    assert_eq!(r.get::<_, String>(2), "gz");
    assert_eq!(r.get::<_, Vec<String>>(3), Vec::<String>::new());
    assert_eq!(r.get::<_, String>(4), "noext");
}

async fn supabase_js_storage_against_fluxbase(be: Be) {
    let st = spawn(be).await;
    crate::clients::run_node_suite(&st.app, "storage.test.mjs").await;
}

/// Downloads of up to 256 KiB are read whole (local backend), bigger ones streamed: at the
/// threshold and on either side of it, whole objects, ranges (a small range of a big
/// object too), HEAD, the public route and `?download` answer the same bytes and headers,
/// and count what they send; an object whose bytes are gone is a 404 either way.
async fn small_bodies_read_whole_big_ones_streamed(be: Be) {
    const SMALL: u64 = 256 * 1024;
    let st = spawn(be).await;
    st.bucket(json!({"name": "p", "public": true})).await;
    let svc = st.svc();
    let mut sent = 0;
    for len in [0, 1, 4096, SMALL, SMALL + 1, 3 * SMALL] {
        let path = format!("p/o{len}.bin");
        let r = st
            .req(Method::POST, &format!("/object/{path}"), Some(&svc))
            .header("content-type", "application/x-test")
            .header("cache-control", "max-age=5")
            .body(gen_body(len, 100_000))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
        let want: Vec<u8> = (0..len).map(gen_byte).collect();
        let etag = st
            .req(Method::HEAD, &format!("/object/{path}"), Some(&svc))
            .send()
            .await
            .unwrap()
            .headers()["etag"]
            .to_str()
            .unwrap()
            .to_string();
        check_etag(be == Be::S3, &etag, &want);
        for route in ["/object/", "/object/public/"] {
            let r = st
                .req(Method::GET, &format!("{route}{path}"), Some(&svc))
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 200, "{route}{path}");
            let h = r.headers().clone();
            assert_eq!(h["content-length"], len.to_string().as_str());
            assert_eq!(h["content-type"], "application/x-test");
            assert_eq!(h["cache-control"], "max-age=5");
            assert_eq!(h["etag"], etag.as_str());
            assert_eq!(h["accept-ranges"], "bytes");
            assert!(h.contains_key("last-modified"));
            assert!(r.bytes().await.unwrap()[..] == want[..], "{route}{path}");
            sent += len;
        }
        let r = st
            .req(Method::HEAD, &format!("/object/public/{path}"), None)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        assert_eq!(r.headers()["content-length"], len.to_string().as_str());
        let r = st
            .req(Method::GET, &format!("/object/public/{path}"), None)
            .header("if-none-match", &etag)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 304);
        if len == 0 {
            continue;
        }
        let (s, e) = (len / 2, (len / 2 + 99).min(len - 1));
        let r = st
            .req(
                Method::GET,
                &format!("/object/public/{path}?download"),
                None,
            )
            .header("range", format!("bytes={s}-{e}"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 206);
        assert_eq!(
            r.headers()["content-range"],
            format!("bytes {s}-{e}/{len}").as_str()
        );
        assert!(r.headers()["content-disposition"]
            .to_str()
            .unwrap()
            .starts_with(&format!("attachment; filename=\"o{len}.bin\"")));
        assert_eq!(r.bytes().await.unwrap()[..], want[s as usize..=e as usize]);
        sent += e + 1 - s;
        let r = st
            .req(Method::GET, &format!("/object/public/{path}"), None)
            .header("range", format!("bytes={len}-"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 416);
    }
    assert_eq!(st.storage_bytes("out").await, sent);

    // The bytes gone from under a row (small and big): a 404, nothing sent.
    let c = st.app.db.client().await;
    for len in [4096, 3 * SMALL] {
        let name = format!("o{len}.bin");
        let v: String = c
            .query_one(
                "SELECT version FROM storage.objects WHERE name = $1",
                &[&name],
            )
            .await
            .unwrap()
            .get(0);
        st.store
            .delete(&object_store::path::Path::from(format!("objects/{v}")))
            .await
            .unwrap();
        let (s, b) = err(st
            .req(Method::GET, &format!("/object/public/p/{name}"), None)
            .send()
            .await
            .unwrap())
        .await;
        assert_eq!((s, b["statusCode"].as_str()), (400, Some("404")), "{b}");
    }
    assert_eq!(st.storage_bytes("out").await, sent);
}

/// `storage.local_etag_algorithm`: `mtime` by default (`"<lastModified ms>-<size>"` in hex,
/// as Supabase's file backend with `STORAGE_FILE_ETAG_ALGORITHM=mtime`; a new one for every
/// upload, equal to the row's `metadata.lastModified`), `md5` on request (the bytes' MD5,
/// the same for the same bytes). Conditional GETs work with either.
#[tokio::test]
async fn local_etags_mtime_by_default_and_md5_on_request() {
    for algorithm in ["mtime", "md5"] {
        let st = spawn_with(Be::Local, |c| {
            if algorithm == "md5" {
                c.storage.local_etag_algorithm = "md5".into();
            }
        })
        .await;
        st.bucket(json!({"name": "b"})).await;
        let svc = st.svc();
        let mut etags = Vec::new();
        for name in ["one.txt", "two.txt"] {
            let r = st
                .put(&svc, &format!("b/{name}"), b"same bytes", "text/plain")
                .await;
            assert_eq!(r.status(), 200);
            let r = st
                .req(Method::GET, &format!("/object/b/{name}"), Some(&svc))
                .send()
                .await
                .unwrap();
            let etag = r.headers()["etag"].to_str().unwrap().to_string();
            check_etag(algorithm == "md5", &etag, b"same bytes");
            let c = st.app.db.client().await;
            let row = c
                .query_one(
                    "SELECT metadata->>'eTag', (extract(epoch FROM (metadata->>'lastModified')::timestamptz) * 1000)::bigint \
                     FROM storage.objects WHERE name = $1",
                    &[&name],
                )
                .await
                .unwrap();
            assert_eq!(row.get::<_, String>(0), etag);
            if algorithm == "mtime" {
                let ms: i64 = row.get(1);
                assert!(etag.starts_with(&format!("\"{ms:x}-")), "{etag} vs {ms}");
            }
            let r = st
                .req(Method::GET, &format!("/object/b/{name}"), Some(&svc))
                .header("if-none-match", &etag)
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 304);
            etags.push(etag);
            // Distinct milliseconds for the two uploads.
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        assert_eq!(etags[0] == etags[1], algorithm == "md5", "{etags:?}");
    }
    // An unknown algorithm is a configuration error.
    let mut c = fluxbase::config::Config::default();
    c.storage.local_etag_algorithm = "sha1".into();
    assert!(c
        .validate()
        .iter()
        .any(|p| p.contains("storage.local_etag_algorithm")));
}

/// `storage.objects` as Supabase has it: `last_accessed_at` nullable with `now()` as its
/// default, set on writes (insert, upsert) and not on reads; `updated_at` kept current by
/// a BEFORE UPDATE trigger, also for updates made in SQL.
#[tokio::test]
async fn objects_columns_as_supabase() {
    let st = spawn(Be::Local).await;
    st.bucket(json!({"name": "b"})).await;
    let svc = st.svc();
    let c = st.app.db.client().await;
    let col = c
        .query_one(
            "SELECT is_nullable, column_default FROM information_schema.columns \
             WHERE table_schema = 'storage' AND table_name = 'objects' AND column_name = 'last_accessed_at'",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(
        (
            col.get::<_, String>(0).as_str(),
            col.get::<_, Option<String>>(1).as_deref()
        ),
        ("YES", Some("now()"))
    );
    assert_eq!(
        st.put(&svc, "b/a.txt", b"1", "text/plain").await.status(),
        200
    );
    let stamps = || async {
        let r = c
            .query_one(
                "SELECT last_accessed_at, updated_at FROM storage.objects WHERE name = 'a.txt'",
                &[],
            )
            .await
            .unwrap();
        (
            r.get::<_, Option<chrono::DateTime<chrono::Utc>>>(0),
            r.get::<_, chrono::DateTime<chrono::Utc>>(1),
        )
    };
    let (accessed, updated) = stamps().await;
    assert!(accessed.is_some());
    tokio::time::sleep(Duration::from_millis(20)).await;
    // Reads leave both alone (Supabase does not track reads in last_accessed_at).
    for path in ["/object/b/a.txt", "/object/info/b/a.txt"] {
        let r = st.req(Method::GET, path, Some(&svc)).send().await.unwrap();
        assert_eq!(r.status(), 200);
    }
    assert_eq!(stamps().await, (accessed, updated));
    // An upsert sets both.
    let r = st
        .req(Method::PUT, "/object/b/a.txt", Some(&svc))
        .header("content-type", "text/plain")
        .body("2")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let (accessed2, updated2) = stamps().await;
    assert!(accessed2 > accessed && updated2 > updated);
    // An UPDATE in SQL moves updated_at (the trigger), even one that does not name it;
    // last_accessed_at may be NULL.
    tokio::time::sleep(Duration::from_millis(20)).await;
    c.batch_execute(
        "UPDATE storage.objects SET user_metadata = '{\"k\": 1}', last_accessed_at = NULL \
         WHERE name = 'a.txt'",
    )
    .await
    .unwrap();
    let (accessed3, updated3) = stamps().await;
    assert_eq!(accessed3, None);
    assert!(updated3 > updated2);
    let r = st
        .req(Method::POST, "/object/list/b", Some(&svc))
        .json(&json!({"prefix": ""}))
        .send()
        .await
        .unwrap();
    let l: Value = r.json().await.unwrap();
    assert_eq!(l[0]["last_accessed_at"], Value::Null, "{l}");
}

/// A server killed (`kill -9`) in the middle of an upload: no row, nothing to download,
/// and the janitor removes what the upload had stored: the local file, or on S3 the
/// unfinished multipart upload (through the marker the upload wrote). Locally it also
/// removes the store's own staging files (`<key>#<n>`) that a process killed during a copy
/// or a staged TUS part leaves, which the store never lists.
async fn killed_mid_upload_leaves_no_row_and_the_janitor_removes_its_bytes(be: Be) {
    use crate::support::{short_tempdir, ServeProcess, TEST_SECRET};
    use tokio::io::AsyncWriteExt;
    let st = spawn(be).await;
    st.bucket(json!({"name": "b"})).await;
    let storage = match (&st.dir, &st.bucket) {
        (Some(dir), _) => format!("  local_path: \"{}\"\n", dir.path().display()),
        (None, Some(bucket)) => {
            let s3 = crate::support::s3::server();
            format!(
                "  backend: s3\n  s3:\n    bucket: \"{bucket}\"\n    endpoint: \"{}\"\n    region: \"{}\"\n    force_path_style: true\n    access_key_id: \"{}\"\n    secret_access_key: \"{}\"\n",
                s3.endpoint, s3.region, s3.access_key_id, s3.secret_access_key
            )
        }
        (None, None) => unreachable!(),
    };
    let tmp = short_tempdir();
    let cfg = tmp.path().join("fluxbase.yaml");
    std::fs::write(
        &cfg,
        format!(
            "auth:\n  jwt_secret: \"{TEST_SECRET}\"\njobs:\n  enabled: false\nstorage:\n{storage}"
        ),
    )
    .unwrap();
    let mut child = ServeProcess::start(
        tmp.path(),
        "killed",
        &[
            "--database-url",
            &st.app.db.url,
            "--config",
            &cfg.to_string_lossy(),
        ],
    );
    child.wait_ready(Duration::from_secs(60)).await;
    let addr = child.base.trim_start_matches("http://").to_string();
    let mut sock = tokio::net::TcpStream::connect(&addr).await.unwrap();
    let head = format!(
        "POST {S}/object/b/killed.bin HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {}\r\n\
         Content-Type: application/octet-stream\r\nContent-Length: 20000000\r\n\r\n",
        st.svc()
    );
    sock.write_all(head.as_bytes()).await.unwrap();
    sock.write_all(&vec![7u8; 3_000_000]).await.unwrap();
    sock.flush().await.unwrap();
    // The upload has stored something when the process dies: bytes under uploads/, or an
    // S3 multipart upload in progress.
    let started = crate::support::eventually(Duration::from_secs(20), || async {
        match &st.dir {
            Some(dir) => std::fs::read_dir(dir.path().join("uploads"))
                .map(|d| d.flatten().any(|e| e.metadata().is_ok_and(|m| m.len() > 0)))
                .unwrap_or(false),
            None => {
                st.pending_multipart_uploads().await == 1
                    && st.keys().await.iter().any(|k| k.starts_with("multipart/"))
            }
        }
    })
    .await;
    assert!(started, "the upload stored nothing: {:?}", st.keys().await);
    child.signal(nix::sys::signal::Signal::SIGKILL);
    child.wait_exit(Duration::from_secs(10));
    drop(sock);

    assert_eq!(st.rows("SELECT count(*) FROM storage.objects").await, 0);
    let (_, b) = err(st
        .req(Method::GET, "/object/b/killed.bin", Some(&st.svc()))
        .send()
        .await
        .unwrap())
    .await;
    assert_eq!(b["code"], "NoSuchKey");
    let left = st.keys().await;
    let prefix = if be == Be::Local {
        "uploads/"
    } else {
        "multipart/"
    };
    assert!(left.len() == 1 && left[0].starts_with(prefix), "{left:?}");
    if let Some(dir) = &st.dir {
        // What an interrupted store copy or staged TUS part looks like.
        let root = dir.path();
        std::fs::create_dir_all(root.join("tus/0b8e4a4e-5f3c-4f0e-9a55-6f3f3b7d1c2a")).unwrap();
        for f in [
            "uploads/6f3f3b7d-5f3c-4f0e-9a55-0b8e4a4e1c2a#1",
            "tus/0b8e4a4e-5f3c-4f0e-9a55-6f3f3b7d1c2a/00000000000000000000-x#1",
        ] {
            std::fs::write(root.join(f), b"partial").unwrap();
        }
    }
    let be_ = fluxbase::storage::Backend::from_config(&st.app.state.config).unwrap();
    let s = fluxbase::storage::janitor::sweep(&st.app.state.pool, &be_, Duration::ZERO)
        .await
        .unwrap();
    let swept = (s.uploads_removed, s.staging_removed, s.multipart_aborted);
    match be {
        Be::Local => assert_eq!(swept, (1, 2, 0), "{s:?}"),
        Be::S3 => assert_eq!(swept, (0, 0, 1), "{s:?}"),
    }
    assert_eq!(st.keys().await, Vec::<String>::new());
    assert_eq!(st.pending_multipart_uploads().await, 0);
}

/// Every storage route, under both mounts (`/storage/v1` and `/api/v1/storage`), answers
/// its success status for a valid request; the routes called are checked against the
/// route table, so a route added without a call here fails this test.
async fn every_route_answers_under_both_mounts(be: Be) {
    use base64::Engine;
    use std::cell::RefCell;
    use std::collections::BTreeSet;
    let st = spawn(be).await;
    let svc = st.svc();
    let hit: RefCell<BTreeSet<String>> = RefCell::new(BTreeSet::new());
    async fn want(r: RequestBuilder, status: u16) -> Response {
        let r = r.send().await.unwrap();
        let got = r.status().as_u16();
        if got != status {
            let path = r.url().path().to_string();
            panic!("{path} → {got}: {}", r.text().await.unwrap_or_default());
        }
        r
    }
    let b64 = |v: &str| base64::engine::general_purpose::STANDARD.encode(v);
    for (i, prefix) in fluxbase::storage::PREFIXES.iter().enumerate() {
        let b = format!("r{i}");
        // A request on this mount to `path`, recorded as a call of route `pattern`.
        let call = |m: Method, pattern: &str, path: &str, key: Option<&str>| {
            hit.borrow_mut().insert(format!("{m} {prefix}{pattern}"));
            let r = st
                .app
                .http
                .request(m, st.app.url(&format!("{prefix}{path}")));
            match key {
                Some(k) => r.header("apikey", st.app.anon_key()).bearer_auth(k),
                None => r,
            }
        };
        let k = Some(svc.as_str());
        let obj = "/object/{bucket}/{name:.*}";
        want(
            call(Method::POST, "/bucket", "/bucket", k).json(&json!({"name": b, "public": true})),
            200,
        )
        .await;
        let l: Value = want(call(Method::GET, "/bucket", "/bucket", k), 200)
            .await
            .json()
            .await
            .unwrap();
        assert!(
            l.as_array().unwrap().iter().any(|x| x["id"] == b.as_str()),
            "{l}"
        );
        want(
            call(Method::GET, "/bucket/{id}", &format!("/bucket/{b}"), k),
            200,
        )
        .await;
        want(
            call(Method::PUT, "/bucket/{id}", &format!("/bucket/{b}"), k)
                .json(&json!({"public": true})),
            200,
        )
        .await;
        let a = format!("/{b}/a.txt");
        want(
            call(Method::POST, obj, &format!("/object{a}"), k)
                .header("content-type", "text/plain")
                .body("hello"),
            200,
        )
        .await;
        want(
            call(Method::PUT, obj, &format!("/object{a}"), k)
                .header("content-type", "text/plain")
                .body("hello!"),
            200,
        )
        .await;
        for (m, pattern, path, key) in [
            (Method::GET, obj, format!("/object{a}"), k),
            (Method::HEAD, obj, format!("/object{a}"), k),
            (
                Method::GET,
                "/object/authenticated/{bucket}/{name:.*}",
                format!("/object/authenticated{a}"),
                k,
            ),
            (
                Method::HEAD,
                "/object/authenticated/{bucket}/{name:.*}",
                format!("/object/authenticated{a}"),
                k,
            ),
            (
                Method::GET,
                "/object/public/{bucket}/{name:.*}",
                format!("/object/public{a}"),
                None,
            ),
            (
                Method::HEAD,
                "/object/public/{bucket}/{name:.*}",
                format!("/object/public{a}"),
                None,
            ),
        ] {
            let head = m == Method::HEAD;
            let r = want(call(m, pattern, &path, key), 200).await;
            assert_eq!(r.headers()["content-length"], "6", "{path}");
            let body = r.bytes().await.unwrap();
            assert_eq!(
                &body[..],
                if head { &b""[..] } else { &b"hello!"[..] },
                "{path}"
            );
        }
        for (pattern, path, key) in [
            (
                "/object/info/{bucket}/{name:.*}",
                format!("/object/info{a}"),
                k,
            ),
            (
                "/object/info/authenticated/{bucket}/{name:.*}",
                format!("/object/info/authenticated{a}"),
                k,
            ),
            (
                "/object/info/public/{bucket}/{name:.*}",
                format!("/object/info/public{a}"),
                None,
            ),
        ] {
            let info: Value = want(call(Method::GET, pattern, &path, key), 200)
                .await
                .json()
                .await
                .unwrap();
            assert_eq!(
                (info["name"].as_str(), info["size"].as_i64()),
                (Some("a.txt"), Some(6)),
                "{path}"
            );
        }
        let l: Value = want(
            call(
                Method::POST,
                "/object/list/{bucket}",
                &format!("/object/list/{b}"),
                k,
            )
            .json(&json!({"prefix": ""})),
            200,
        )
        .await
        .json()
        .await
        .unwrap();
        assert_eq!(l[0]["name"], "a.txt");
        let l: Value = want(
            call(
                Method::POST,
                "/object/list-v2/{bucket}",
                &format!("/object/list-v2/{b}"),
                k,
            )
            .json(&json!({})),
            200,
        )
        .await
        .json()
        .await
        .unwrap();
        assert_eq!(l["objects"][0]["name"], "a.txt");
        want(
            call(Method::POST, "/object/copy", "/object/copy", k)
                .json(&json!({"bucketId": b, "sourceKey": "a.txt", "destinationKey": "c.txt"})),
            200,
        )
        .await;
        want(
            call(Method::POST, "/object/move", "/object/move", k)
                .json(&json!({"bucketId": b, "sourceKey": "c.txt", "destinationKey": "m.txt"})),
            200,
        )
        .await;
        let signed: Value = want(
            call(
                Method::POST,
                "/object/sign/{bucket}/{name:.*}",
                &format!("/object/sign{a}"),
                k,
            )
            .json(&json!({"expiresIn": 60})),
            200,
        )
        .await
        .json()
        .await
        .unwrap();
        let url = signed["signedURL"].as_str().unwrap().to_string();
        let r = want(
            call(Method::GET, "/object/sign/{bucket}/{name:.*}", &url, None),
            200,
        )
        .await;
        assert_eq!(r.text().await.unwrap(), "hello!");
        want(
            call(Method::HEAD, "/object/sign/{bucket}/{name:.*}", &url, None),
            200,
        )
        .await;
        let many: Value = want(
            call(
                Method::POST,
                "/object/sign/{bucket}",
                &format!("/object/sign/{b}"),
                k,
            )
            .json(&json!({"expiresIn": 60, "paths": ["a.txt", "m.txt"]})),
            200,
        )
        .await
        .json()
        .await
        .unwrap();
        assert!(many[1]["signedURL"].as_str().is_some(), "{many}");
        let up: Value = want(
            call(
                Method::POST,
                "/object/upload/sign/{bucket}/{name:.*}",
                &format!("/object/upload/sign/{b}/u.txt"),
                k,
            ),
            200,
        )
        .await
        .json()
        .await
        .unwrap();
        want(
            call(
                Method::PUT,
                "/object/upload/sign/{bucket}/{name:.*}",
                up["url"].as_str().unwrap(),
                None,
            )
            .header("content-type", "text/plain")
            .body("up"),
            200,
        )
        .await;
        want(
            call(Method::DELETE, obj, &format!("/object/{b}/u.txt"), k),
            200,
        )
        .await;
        let gone: Value = want(
            call(
                Method::DELETE,
                "/object/{bucket}",
                &format!("/object/{b}"),
                k,
            )
            .json(&json!({"prefixes": ["m.txt"]})),
            200,
        )
        .await
        .json()
        .await
        .unwrap();
        assert_eq!(gone[0]["name"], "m.txt");
        // TUS.
        let tus = |m: Method, pattern: &str, path: &str| {
            call(m, pattern, path, k).header("tus-resumable", "1.0.0")
        };
        let metadata = format!("bucketName {},objectName {}", b64(&b), b64("t.txt"));
        want(
            tus(Method::OPTIONS, "/upload/resumable", "/upload/resumable"),
            204,
        )
        .await;
        let mut ids = Vec::new();
        for _ in 0..2 {
            let r = want(
                tus(Method::POST, "/upload/resumable", "/upload/resumable")
                    .header("upload-length", "2")
                    .header("upload-metadata", &metadata)
                    .header("x-upsert", "true"),
                201,
            )
            .await;
            let loc = r.headers()["location"].to_str().unwrap().to_string();
            assert!(
                loc.contains(&format!("{prefix}/upload/resumable/")),
                "{loc}"
            );
            ids.push(loc.rsplit('/').next().unwrap().to_string());
        }
        let id = "/upload/resumable/{id}";
        want(
            tus(
                Method::OPTIONS,
                id,
                &format!("/upload/resumable/{}", ids[0]),
            ),
            204,
        )
        .await;
        let r = want(
            tus(Method::HEAD, id, &format!("/upload/resumable/{}", ids[0])),
            200,
        )
        .await;
        assert_eq!(r.headers()["upload-offset"], "0");
        want(
            tus(Method::PATCH, id, &format!("/upload/resumable/{}", ids[0]))
                .header("content-type", "application/offset+octet-stream")
                .header("upload-offset", "0")
                .body("hi"),
            204,
        )
        .await;
        want(
            tus(Method::DELETE, id, &format!("/upload/resumable/{}", ids[1])),
            204,
        )
        .await;
        let r = want(
            call(Method::GET, obj, &format!("/object/{b}/t.txt"), k),
            200,
        )
        .await;
        assert_eq!(r.text().await.unwrap(), "hi");
        want(
            call(
                Method::POST,
                "/bucket/{id}/empty",
                &format!("/bucket/{b}/empty"),
                k,
            ),
            200,
        )
        .await;
        want(
            call(Method::DELETE, "/bucket/{id}", &format!("/bucket/{b}"), k),
            200,
        )
        .await;
    }
    let mut reg = fluxbase::routes::Registry::default();
    fluxbase::storage::configure(&mut reg);
    let table: BTreeSet<String> = reg
        .routes()
        .iter()
        .map(|r| format!("{} {}", r.method, r.path))
        .collect();
    assert_eq!(hit.into_inner(), table);
}
