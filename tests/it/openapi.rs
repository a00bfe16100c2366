//! `GET /openapi.json`: the registry part (every route with its methods), the schema part
//! generated from the schema cache (tables, views, functions, column schemas), its refresh
//! after DDL, and its validity as OpenAPI 3.1 checked by an independent validator
//! (@seriousme/openapi-schema-validator, tests/clients/openapi.test.mjs); and `GET /rest/v1/`,
//! PostgREST's Swagger 2.0 document of the schema as the caller's role sees it, valid per the
//! same validator's 2.0 schema.

use crate::support::TestApp;
use serde_json::{json, Value};
use std::time::Duration;

const FIXTURE: &str = "
CREATE TABLE authors (id serial PRIMARY KEY, name text NOT NULL, born int);
CREATE TABLE books (
  id serial PRIMARY KEY, title varchar(200) NOT NULL, year smallint, author_id int REFERENCES authors(id),
  tags text[] DEFAULT '{}', meta jsonb, price numeric(10,2), big bigint NOT NULL DEFAULT 0,
  isbn uuid, published timestamptz, ok boolean NOT NULL DEFAULT true,
  search tsvector GENERATED ALWAYS AS (to_tsvector('english', title)) STORED);
CREATE VIEW book_titles AS SELECT b.id, b.title FROM books b;
CREATE VIEW stats AS SELECT count(*) AS n FROM books;
CREATE TABLE \"odd {name}\" (id int PRIMARY KEY);
CREATE FUNCTION add(a int, b int DEFAULT 1) RETURNS int LANGUAGE sql IMMUTABLE AS 'SELECT a + b';
CREATE FUNCTION books_after(y int) RETURNS SETOF books LANGUAGE sql STABLE AS 'SELECT * FROM books WHERE year > y';
CREATE FUNCTION bump() RETURNS void LANGUAGE sql VOLATILE AS 'SELECT 1';
NOTIFY pgrst, 'reload schema';
";

async fn with_fixture() -> TestApp {
    let app = TestApp::spawn().await;
    app.db.client().await.batch_execute(FIXTURE).await.unwrap();
    let ok = crate::support::eventually(Duration::from_secs(10), || async {
        !app.state
            .schema
            .get()
            .functions("public", "bump")
            .is_empty()
    })
    .await;
    assert!(ok, "schema cache never saw the fixture");
    app
}

async fn doc(app: &TestApp) -> Value {
    let r = app.get("/openapi.json").send().await.unwrap();
    assert_eq!(r.status(), 200);
    r.json().await.unwrap()
}

#[tokio::test]
async fn openapi_lists_every_registry_route_with_its_methods() {
    let app = TestApp::spawn().await;
    let doc = doc(&app).await;
    assert!(
        doc["openapi"].as_str().unwrap().starts_with("3.1"),
        "{}",
        doc["openapi"]
    );
    for r in fluxbase::app::registry().routes() {
        let path = fluxbase::routes::openapi_path(r.path);
        let op = &doc["paths"][&path][r.method.as_str().to_ascii_lowercase()];
        assert!(op.is_object(), "{} {} missing", r.method, r.path);
        assert_eq!(op["tags"], json!([r.tag]), "{} {}", r.method, r.path);
        assert_eq!(op["summary"], r.summary);
        // Every template parameter is declared, required, with a schema.
        for p in fluxbase::routes::path_params(r.path) {
            let declared = op["parameters"]
                .as_array()
                .into_iter()
                .flatten()
                .find(|x| x["name"] == p.as_str() && x["in"] == "path")
                .unwrap_or_else(|| panic!("{} {}: no parameter {p}", r.method, r.path));
            assert_eq!(declared["required"], true);
            assert!(declared["schema"]["type"].is_string(), "{declared}");
        }
        // Explicit success responses (no catch-all `2XX`); errors in the surface's body
        // shape.
        let responses = &op["responses"];
        let codes: Vec<&String> = responses.as_object().unwrap().keys().collect();
        assert!(
            codes.iter().any(|c| c.len() == 3
                && c.chars().all(|d| d.is_ascii_digit())
                && c.as_str() < "400"),
            "{} {path}: no success status in {codes:?}",
            r.method
        );
        assert!(responses["2XX"].is_null(), "{} {path}: bare 2XX", r.method);
        let expected = if path.starts_with("/auth/v1") || path.starts_with("/api/v1/auth") {
            "GoTrueError"
        } else if path.starts_with("/storage/v1") || path.starts_with("/api/v1/storage") {
            "StorageError"
        } else {
            "PostgrestError"
        };
        for range in ["4XX", "5XX"] {
            let err = &responses[range];
            assert!(
                err["description"].is_string(),
                "{} {path} {range}",
                r.method
            );
            if r.method == actix_web::http::Method::HEAD {
                // An answer to HEAD has no body, errors included.
                assert!(err["content"].is_null(), "HEAD {path} {range}");
            } else {
                assert_eq!(
                    err["content"]["application/json"]["schema"]["$ref"],
                    format!("#/components/schemas/{expected}"),
                    "{} {path} {range}",
                    r.method
                );
            }
        }
        // Security follows the access rule.
        let sec = op["security"].as_array().unwrap();
        match r.access {
            fluxbase::routes::Access::Public => assert_eq!(sec, &vec![json!({})]),
            fluxbase::routes::Access::Key => {
                assert!(sec.contains(&json!({"apikey": []})) && sec.contains(&json!({})))
            }
            fluxbase::routes::Access::ServiceRole => {
                assert!(sec.contains(&json!({"bearer": []})) && !sec.contains(&json!({})))
            }
        }
    }
    for s in [
        "PostgrestError",
        "GoTrueError",
        "StorageError",
        "WebhookInput",
    ] {
        assert!(doc["components"]["schemas"][s].is_object(), "{s}");
    }
    assert_eq!(
        doc["paths"]["/api/v1/webhooks"]["post"]["requestBody"]["content"]["application/json"]
            ["schema"]["$ref"],
        "#/components/schemas/WebhookInput"
    );
    assert_eq!(
        doc["paths"]["/api/v1/jobs/{id}"]["get"]["parameters"][0]["schema"]["type"],
        "integer"
    );
    // Success bodies of the platform routes, aliases included.
    let ok = |m: &str, p: &str, code: &str| {
        doc["paths"][p][m]["responses"][code]["content"]["application/json"]["schema"].clone()
    };
    for p in ["/auth/v1/token", "/api/v1/auth/token"] {
        assert_eq!(ok("post", p, "200")["$ref"], "#/components/schemas/Session");
    }
    assert_eq!(
        ok("get", "/storage/v1/bucket", "200")["items"]["$ref"],
        "#/components/schemas/Bucket"
    );
    assert_eq!(
        ok("post", "/api/v1/webhooks", "201")["$ref"],
        "#/components/schemas/WebhookCreated"
    );
    assert_eq!(
        ok("get", "/api/v1/monitoring/health", "503")["$ref"],
        "#/components/schemas/Health"
    );
    let logout = &doc["paths"]["/auth/v1/logout"]["post"]["responses"]["204"];
    assert!(logout.is_object() && logout["content"].is_null());
    let verify = &doc["paths"]["/auth/v1/verify"]["get"]["responses"]["303"];
    assert!(verify["headers"]["Location"].is_object());
    let download = &doc["paths"]["/storage/v1/object/{bucket}/{name}"]["get"]["responses"];
    assert!(download["200"]["content"]["*/*"].is_object());
    assert!(download["304"].is_object());
    for s in [
        "Session",
        "User",
        "Bucket",
        "FileObject",
        "Webhook",
        "Delivery",
        "ApiKey",
        "Job",
    ] {
        assert!(doc["components"]["schemas"][s].is_object(), "{s}");
    }
}

#[tokio::test]
async fn openapi_describes_tables_views_and_functions() {
    let app = with_fixture().await;
    let doc = doc(&app).await;
    let books = &doc["components"]["schemas"]["public.books"];
    let p = &books["properties"];
    assert_eq!(p["id"]["type"], "integer");
    assert_eq!(p["title"]["type"], "string");
    assert_eq!(p["title"]["maxLength"], 200);
    assert_eq!(p["year"]["type"], json!(["integer", "null"]));
    assert_eq!(p["year"]["maximum"], 32767);
    assert_eq!(p["tags"]["type"], json!(["array", "null"]));
    assert_eq!(p["tags"]["items"]["type"], json!(["string", "null"]));
    assert!(p["meta"].get("type").is_none(), "jsonb is any JSON value");
    assert_eq!(p["price"]["type"], json!(["number", "null"]));
    assert_eq!(p["big"]["type"], "integer");
    assert_eq!(p["big"]["format"], "int64");
    assert_eq!(p["isbn"]["format"], "uuid");
    assert_eq!(p["published"]["format"], "date-time");
    assert_eq!(p["published"]["type"], json!(["string", "null"]));
    assert_eq!(p["ok"]["type"], "boolean");
    assert_eq!(p["search"]["readOnly"], true);

    let item = &doc["paths"]["/rest/v1/books"];
    let names: Vec<&str> = item["get"]["parameters"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    for n in [
        "select", "order", "limit", "offset", "id", "title", "year", "meta",
    ] {
        assert!(names.contains(&n), "{n} not in {names:?}");
    }
    assert_eq!(
        item["get"]["responses"]["200"]["content"]["application/json"]["schema"]["items"]["$ref"],
        "#/components/schemas/public.books"
    );
    let post = &item["post"]["requestBody"]["content"]["application/json"]["schema"];
    assert_eq!(post["anyOf"][0]["allOf"][1]["required"], json!(["title"]));
    for m in ["post", "patch", "delete"] {
        assert!(item[m].is_object(), "books {m}");
    }
    // A view that cannot be written has only GET; an auto-updatable one has writes.
    assert!(doc["paths"]["/rest/v1/stats"]["get"].is_object());
    assert!(doc["paths"]["/rest/v1/stats"]["post"].is_null());
    assert!(doc["paths"]["/rest/v1/book_titles"]["patch"].is_object());
    // Names are percent-encoded: a `{` never turns into a template.
    assert!(doc["paths"]["/rest/v1/odd%20%7Bname%7D"]["get"].is_object());
    assert!(doc["components"]["schemas"]["public.odd__name_"].is_object());

    // RPC: POST with an object of the arguments; GET only for non-volatile functions.
    let add = &doc["paths"]["/rest/v1/rpc/add"];
    let body = &add["post"]["requestBody"]["content"]["application/json"]["schema"];
    assert_eq!(body["properties"]["a"]["type"], json!(["integer", "null"]));
    assert_eq!(body["required"], json!(["a"]));
    assert_eq!(add["get"]["parameters"][0]["name"], "a");
    assert_eq!(add["get"]["parameters"][0]["required"], true);
    assert_eq!(add["get"]["parameters"][1]["required"], false);
    let after = &doc["paths"]["/rest/v1/rpc/books_after"];
    assert_eq!(
        after["post"]["responses"]["200"]["content"]["application/json"]["schema"],
        json!({"type": "array", "items": {"$ref": "#/components/schemas/public.books"}})
    );
    let bump = &doc["paths"]["/rest/v1/rpc/bump"];
    assert!(bump["post"].is_object() && bump["get"].is_null());

    // The generated paths answer as documented.
    let r = app
        .get("/rest/v1/rpc/add?a=2&b=3")
        .header("apikey", app.anon_key())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.json::<Value>().await.unwrap(), json!(5));
}

#[tokio::test]
async fn openapi_follows_schema_reloads() {
    let app = with_fixture().await;
    let before = doc(&app).await;
    assert!(before["paths"]["/rest/v1/later"].is_null());
    // Same cache generation, same bytes (the rendering is cached).
    assert_eq!(doc(&app).await, before);
    app.db
        .client()
        .await
        .batch_execute(
            "CREATE TABLE later (id uuid PRIMARY KEY, at timestamptz NOT NULL);
             NOTIFY pgrst, 'reload schema';",
        )
        .await
        .unwrap();
    let ok = crate::support::eventually(Duration::from_secs(10), || async {
        app.state.schema.get().table("public", "later").is_some()
    })
    .await;
    assert!(ok, "schema cache never saw `later`");
    let after = doc(&app).await;
    assert!(after["paths"]["/rest/v1/later"]["post"].is_object());
    assert_eq!(
        after["components"]["schemas"]["public.later"]["properties"]["at"]["format"],
        "date-time"
    );
}

/// What the PostgREST-shaped tests add to the fixture: comments, an enum, a domain, a
/// table anon may not touch, one it may only read, and a function only some may execute.
const PRIVILEGES: &str = "
COMMENT ON SCHEMA public IS 'Library API
Books and their authors.';
CREATE TYPE mood AS ENUM ('happy', 'sad');
CREATE DOMAIN short_text AS varchar(12);
COMMENT ON TABLE authors IS 'People who write';
COMMENT ON COLUMN authors.name IS 'Full name';
CREATE TABLE reviews (id bigint GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
  book_id int NOT NULL REFERENCES books(id), feeling mood DEFAULT 'happy', note short_text,
  body text DEFAULT 'none', stars numeric DEFAULT 3, at timestamptz DEFAULT now(),
  flags boolean[]);
CREATE TABLE secrets (id int PRIMARY KEY, v text);
REVOKE ALL ON secrets FROM anon;
REVOKE INSERT, UPDATE, DELETE ON authors FROM anon;
REVOKE EXECUTE ON FUNCTION bump() FROM anon, PUBLIC;
COMMENT ON FUNCTION add(int, int) IS 'Adds
two numbers';
CREATE FUNCTION greet(VARIADIC names text[]) RETURNS text LANGUAGE sql STABLE
  AS $$ SELECT array_to_string(names, ' ') $$;
CREATE FUNCTION echo(jsonb) RETURNS jsonb LANGUAGE sql STABLE AS 'SELECT $1';
NOTIFY pgrst, 'reload schema';
";

async fn with_privileges() -> TestApp {
    let app = with_fixture().await;
    app.db
        .client()
        .await
        .batch_execute(PRIVILEGES)
        .await
        .unwrap();
    let ok = crate::support::eventually(Duration::from_secs(10), || async {
        app.state.schema.get().table("public", "secrets").is_some()
    })
    .await;
    assert!(ok, "schema cache never saw `secrets`");
    app
}

/// `GET /rest/v1/` with this key (no key at all: anon).
async fn rest_doc(app: &TestApp, key: Option<&str>) -> Value {
    let mut r = app.get("/rest/v1/");
    if let Some(k) = key {
        r = r
            .header("apikey", k)
            .header("authorization", format!("Bearer {k}"));
    }
    let r = r.send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(
        r.headers()["content-type"],
        "application/openapi+json; charset=utf-8"
    );
    r.json().await.unwrap()
}

#[tokio::test]
async fn rest_root_is_postgrests_swagger_document() {
    let app = with_privileges().await;
    let doc = rest_doc(&app, Some(&app.service_key())).await;
    assert_eq!(doc["swagger"], "2.0");
    // Title and description from the schema comment.
    assert_eq!(doc["info"]["title"], "Library API");
    assert_eq!(doc["info"]["description"], "Books and their authors.");
    assert_eq!(doc["info"]["version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(doc["basePath"], "/rest/v1");
    assert_eq!(doc["schemes"], json!(["http"]));
    assert_eq!(
        doc["host"],
        app.base.trim_start_matches("http://").trim_end_matches('/')
    );
    let media = json!([
        "application/json",
        "application/vnd.pgrst.object+json;nulls=stripped",
        "application/vnd.pgrst.object+json",
        "text/csv"
    ]);
    assert_eq!(doc["consumes"], media);
    assert_eq!(doc["produces"], media);
    assert_eq!(
        doc["securityDefinitions"]["JWT"],
        json!({"type": "apiKey", "in": "header", "name": "Authorization",
               "description": "Add the token prepending \"Bearer \" (without quotes) to it"})
    );
    assert_eq!(doc["security"], json!([{"JWT": []}]));

    // Definitions: PostgREST's types, formats, notes, defaults, lengths and enums.
    let books = &doc["definitions"]["books"];
    assert_eq!(books["type"], "object");
    assert_eq!(books["required"], json!(["id", "title", "big", "ok"]));
    let p = &books["properties"];
    assert_eq!(
        p["id"],
        json!({"type": "integer", "format": "integer",
               "description": "Note:\nThis is a Primary Key.<pk/>"})
    );
    assert_eq!(
        p["title"],
        json!({"type": "string", "format": "character varying", "maxLength": 200})
    );
    assert_eq!(
        p["author_id"]["description"],
        "Note:\nThis is a Foreign Key to `authors.id`.<fk table='authors' column='id'/>"
    );
    assert_eq!(
        p["tags"],
        json!({"type": "array", "items": {"type": "string"}, "format": "text[]"})
    );
    assert_eq!(p["meta"], json!({"format": "jsonb"}));
    assert_eq!(p["price"], json!({"type": "number", "format": "numeric"}));
    assert_eq!(
        p["big"],
        json!({"type": "integer", "format": "bigint", "default": 0})
    );
    assert_eq!(p["ok"]["default"], true);
    assert_eq!(p["isbn"], json!({"type": "string", "format": "uuid"}));
    assert_eq!(p["published"]["format"], "timestamp with time zone");
    let authors = &doc["definitions"]["authors"];
    assert_eq!(authors["description"], "People who write");
    assert_eq!(authors["properties"]["name"]["description"], "Full name");
    let r = &doc["definitions"]["reviews"]["properties"];
    assert_eq!(
        r["feeling"],
        json!({"type": "string", "format": "public.mood", "enum": ["happy", "sad"],
               "default": "happy"})
    );
    // A domain over a built-in type is that type.
    assert_eq!(
        r["note"],
        json!({"type": "string", "format": "character varying", "maxLength": 12})
    );
    assert_eq!(r["body"]["default"], "none");
    assert_eq!(r["stars"]["default"], 3);
    assert_eq!(r["at"]["default"], "now()");
    assert_eq!(
        r["flags"],
        json!({"type": "array", "items": {"type": "boolean"}, "format": "boolean[]"})
    );
    // A view's column copying its base table's primary key is the view's primary key, as
    // PostgREST infers it (`<pk/>` note); a view over an aggregate has none.
    assert_eq!(
        doc["definitions"]["book_titles"]["properties"]["id"],
        json!({"type": "integer", "format": "integer",
               "description": "Note:\nThis is a Primary Key.<pk/>"})
    );
    assert_eq!(
        doc["definitions"]["stats"]["properties"]["n"]["description"],
        Value::Null
    );

    // Shared parameters, and each relation's row filters.
    let params = &doc["parameters"];
    assert_eq!(
        params["rowFilter.books.year"],
        json!({"name": "year", "required": false, "in": "query", "type": "string",
               "format": "smallint"})
    );
    assert_eq!(params["rowFilter.authors.name"]["description"], "Full name");
    assert_eq!(
        params["body.books"],
        json!({"name": "books", "description": "books", "required": false, "in": "body",
               "schema": {"$ref": "#/definitions/books"}})
    );
    assert_eq!(params["preferCount"]["enum"], json!(["count=none"]));
    assert_eq!(
        params["preferParams"]["enum"],
        json!(["params=single-object"])
    );
    assert_eq!(
        params["preferReturn"]["enum"],
        json!(["return=representation", "return=minimal", "return=none"])
    );
    assert_eq!(params["preferPost"]["enum"].as_array().unwrap().len(), 5);
    assert_eq!(params["rangeUnit"]["default"], "items");
    for k in ["select", "order", "range", "offset", "limit", "on_conflict"] {
        assert!(params[k].is_object(), "{k}");
    }

    // Paths: the root, each relation's methods, each callable function.
    assert_eq!(doc["paths"]["/"]["get"]["tags"], json!(["Introspection"]));
    let books = &doc["paths"]["/books"];
    let refs = |op: &Value| -> Vec<String> {
        op["parameters"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["$ref"].as_str().unwrap().to_string())
            .collect()
    };
    let get = refs(&books["get"]);
    assert_eq!(get.len(), 12 + 7, "{get:?}");
    assert_eq!(get[0], "#/parameters/rowFilter.books.id");
    assert_eq!(
        &get[12..],
        [
            "#/parameters/select",
            "#/parameters/order",
            "#/parameters/range",
            "#/parameters/rangeUnit",
            "#/parameters/offset",
            "#/parameters/limit",
            "#/parameters/preferCount"
        ]
    );
    assert_eq!(
        books["get"]["responses"]["200"]["schema"],
        json!({"type": "array", "items": {"$ref": "#/definitions/books"}})
    );
    assert_eq!(
        books["get"]["responses"]["206"]["description"],
        "Partial Content"
    );
    assert_eq!(
        refs(&books["post"]),
        [
            "#/parameters/body.books",
            "#/parameters/select",
            "#/parameters/preferPost"
        ]
    );
    assert_eq!(books["post"]["responses"]["201"]["description"], "Created");
    assert_eq!(refs(&books["patch"]).len(), 12 + 2);
    assert_eq!(refs(&books["delete"]).len(), 12 + 1);
    assert_eq!(
        books["delete"]["responses"]["204"]["description"],
        "No Content"
    );
    assert_eq!(
        doc["paths"]["/authors"]["get"]["summary"],
        "People who write"
    );
    // A view that cannot be written has only GET.
    assert!(doc["paths"]["/stats"]["get"].is_object());
    assert!(doc["paths"]["/stats"]["post"].is_null());
    assert!(doc["paths"]["/book_titles"]["patch"].is_object());
    assert!(doc["paths"]["/odd%20%7Bname%7D"]["get"].is_object());

    // RPC: POST with the arguments as a body; GET (query parameters) unless volatile.
    let add = &doc["paths"]["/rpc/add"];
    assert_eq!(add["post"]["tags"], json!(["(rpc) add"]));
    assert_eq!(add["post"]["summary"], "Adds");
    assert_eq!(add["post"]["description"], "two numbers");
    assert_eq!(
        add["post"]["parameters"],
        json!([
            {"name": "args", "required": true, "in": "body", "schema": {
                "type": "object", "description": "Adds\ntwo numbers", "required": ["a"],
                "properties": {"a": {"type": "integer", "format": "integer"},
                               "b": {"type": "integer", "format": "integer"}}}},
            {"$ref": "#/parameters/preferParams"}
        ])
    );
    assert_eq!(
        add["get"]["parameters"],
        json!([
            {"name": "a", "required": true, "in": "query", "type": "integer", "format": "integer"},
            {"name": "b", "required": false, "in": "query", "type": "integer", "format": "integer"}
        ])
    );
    assert_eq!(
        doc["paths"]["/rpc/greet"]["get"]["parameters"][0],
        json!({"name": "names", "required": true, "in": "query", "type": "array",
               "collectionFormat": "multi", "items": {"type": "string", "format": "text"}})
    );
    let bump = &doc["paths"]["/rpc/bump"];
    assert!(bump["post"].is_object() && bump["get"].is_null());
    // One unnamed body-typed argument: the whole body, POST only.
    let echo = &doc["paths"]["/rpc/echo"];
    assert_eq!(
        echo["post"]["parameters"],
        json!([{"name": "args", "required": true, "in": "body", "schema": {"format": "jsonb"}}])
    );
    assert!(echo["get"].is_null());
    // Every reference resolves.
    let mut refs = vec![];
    fn walk(v: &Value, out: &mut Vec<String>) {
        match v {
            Value::Object(m) => {
                if let Some(Value::String(r)) = m.get("$ref") {
                    out.push(r.clone());
                }
                m.values().for_each(|x| walk(x, out));
            }
            Value::Array(a) => a.iter().for_each(|x| walk(x, out)),
            _ => {}
        }
    }
    walk(&doc, &mut refs);
    for r in refs {
        let pointer = r.trim_start_matches('#').replace("%20", " ");
        let pointer = pointer.replace("%7B", "{").replace("%7D", "}");
        assert!(doc.pointer(&pointer).is_some(), "dangling {r}");
    }
}

#[tokio::test]
async fn rest_root_follows_the_callers_privileges() {
    let app = with_privileges().await;
    // anon (no token): no `secrets`, `authors` read-only, no `bump`.
    for doc in [
        rest_doc(&app, None).await,
        rest_doc(&app, Some(&app.anon_key())).await,
    ] {
        assert!(doc["paths"]["/secrets"].is_null());
        assert!(doc["definitions"]["secrets"].is_null());
        assert!(doc["parameters"]["rowFilter.secrets.id"].is_null());
        let authors = doc["paths"]["/authors"].as_object().unwrap();
        assert_eq!(authors.keys().collect::<Vec<_>>(), ["get"]);
        assert!(doc["paths"]["/books"]["delete"].is_object());
        assert!(doc["paths"]["/rpc/bump"].is_null());
        assert!(doc["paths"]["/rpc/add"]["post"].is_object());
    }
    // An authenticated user's token: its role's privileges.
    let user = app.token(json!({"sub": "00000000-0000-0000-0000-000000000001",
                                "role": "authenticated"}));
    let doc = rest_doc(&app, Some(&user)).await;
    assert!(doc["paths"]["/secrets"]["post"].is_object());
    assert!(doc["paths"]["/authors"]["delete"].is_object());
    assert!(doc["paths"]["/rpc/bump"]["post"].is_object());
    // A column privilege alone is enough to appear, with only what it allows.
    app.db
        .client()
        .await
        .batch_execute("GRANT SELECT (id) ON secrets TO anon")
        .await
        .unwrap();
    let doc = rest_doc(&app, None).await;
    let secrets = doc["paths"]["/secrets"].as_object().unwrap();
    assert_eq!(secrets.keys().collect::<Vec<_>>(), ["get"]);
    // Without USAGE on the schema nothing is described but the root.
    app.db
        .client()
        .await
        .batch_execute("REVOKE USAGE ON SCHEMA public FROM anon, PUBLIC")
        .await
        .unwrap();
    let doc = rest_doc(&app, None).await;
    assert_eq!(
        doc["paths"].as_object().unwrap().len(),
        1,
        "{}",
        doc["paths"]
    );
    assert_eq!(doc["definitions"], json!({}));
}

#[tokio::test]
async fn rest_root_host_and_base_path_follow_public_url() {
    let app =
        TestApp::spawn_with(|c| c.server.public_url = "https://api.example.com:8443/base/".into())
            .await;
    // Without a schema comment (Postgres before 15 ships `standard public schema`, which
    // would be the title, as in PostgREST): Fluxbase's own title.
    app.db
        .client()
        .await
        .batch_execute("COMMENT ON SCHEMA public IS NULL")
        .await
        .unwrap();
    let doc = rest_doc(&app, None).await;
    assert_eq!(doc["host"], "api.example.com:8443");
    assert_eq!(doc["basePath"], "/base/rest/v1");
    assert_eq!(doc["schemes"], json!(["https"]));
    assert_eq!(doc["info"]["title"], "Fluxbase REST API");
    // HEAD: the headers, no body.
    let r = app.http.head(app.url("/rest/v1/")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(
        r.headers()["content-type"],
        "application/openapi+json; charset=utf-8"
    );
    assert!(r.bytes().await.unwrap().is_empty());
}

/// `Accept-Profile` picks the schema described, as for any read.
#[tokio::test]
async fn rest_root_describes_the_profile_schema() {
    let app = TestApp::spawn_with(|c| c.rest.schemas = vec!["public".into(), "api".into()]).await;
    app.db
        .client()
        .await
        .batch_execute(
            "CREATE TABLE in_public (id int PRIMARY KEY);
             CREATE SCHEMA api; COMMENT ON SCHEMA api IS 'The api schema';
             GRANT USAGE ON SCHEMA api TO anon;
             CREATE TABLE api.widgets (id int PRIMARY KEY, label text);
             GRANT SELECT ON api.widgets TO anon;
             CREATE FUNCTION api.ping() RETURNS text LANGUAGE sql STABLE AS $$ SELECT 'pong' $$;
             NOTIFY pgrst, 'reload schema';",
        )
        .await
        .unwrap();
    let ok = crate::support::eventually(Duration::from_secs(10), || async {
        app.state.schema.get().table("api", "widgets").is_some()
    })
    .await;
    assert!(ok, "schema cache never saw api.widgets");
    let r = app
        .get("/rest/v1/")
        .header("accept-profile", "api")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let doc: Value = r.json().await.unwrap();
    assert_eq!(doc["info"]["title"], "The api schema");
    let paths: Vec<&String> = doc["paths"].as_object().unwrap().keys().collect();
    assert_eq!(paths, ["/", "/rpc/ping", "/widgets"]);
    assert_eq!(
        doc["paths"]["/widgets"]
            .as_object()
            .unwrap()
            .keys()
            .collect::<Vec<_>>(),
        ["get"]
    );
    let doc = rest_doc(&app, None).await;
    assert!(doc["paths"]["/in_public"]["get"].is_object());
    assert!(doc["paths"]["/widgets"].is_null());
}

/// PostgREST's document stays a bounded amount of work for a schema of 1,000 tables.
#[tokio::test]
async fn rest_root_scales_to_a_thousand_tables() {
    let app = TestApp::spawn().await;
    app.db
        .client()
        .await
        .batch_execute(
            "DO $$ BEGIN FOR i IN 1..1000 LOOP
               EXECUTE format('CREATE TABLE t%s (id serial PRIMARY KEY, name text NOT NULL,
                 n int DEFAULT 0, at timestamptz, parent int REFERENCES t%s(id))', i, i);
               EXECUTE format('COMMENT ON COLUMN t%s.name IS %L', i, 'name ' || i);
             END LOOP; END $$;
             NOTIFY pgrst, 'reload schema';",
        )
        .await
        .unwrap();
    let ok = crate::support::eventually(Duration::from_secs(30), || async {
        app.state.schema.get().table("public", "t1000").is_some()
    })
    .await;
    assert!(ok, "schema cache never saw t1000");
    let started = std::time::Instant::now();
    let doc = rest_doc(&app, None).await;
    let took = started.elapsed();
    eprintln!("GET /rest/v1/ with 1,000 tables: {took:?}");
    assert_eq!(doc["definitions"].as_object().unwrap().len(), 1000);
    assert_eq!(
        doc["definitions"]["t777"]["properties"]["name"]["description"],
        "name 777"
    );
    assert!(doc["paths"]["/t1000"]["delete"].is_object());
    // Generous for a debug build on a shared 2-core machine; measured ≈ (see docs).
    assert!(took < Duration::from_secs(10), "took {took:?}");
}

/// Real responses of the platform routes validate against the schemas the document
/// declares for their operation and status (Ajv, tests/clients/openapi.responses.test.mjs).
#[tokio::test]
async fn platform_responses_match_the_document() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().to_string_lossy().into_owned();
    let app = TestApp::spawn_with(|c| {
        c.storage.local_path = path;
        c.auth.mailer_autoconfirm = true;
        c.auth.bcrypt_cost = 4;
        c.rate_limits.enabled = false;
    })
    .await;
    app.db
        .client()
        .await
        .batch_execute(
            "CREATE TABLE authors (id serial PRIMARY KEY, name text NOT NULL);
             NOTIFY pgrst, 'reload schema';",
        )
        .await
        .unwrap();
    crate::clients::run_node_suite(&app, "openapi.responses.test.mjs").await;
}

#[tokio::test]
async fn openapi_is_valid_per_an_independent_validator() {
    let app = with_fixture().await;
    crate::clients::run_node_suite(&app, "openapi.test.mjs").await;
}

/// Regressions found by `make fuzz-api` (scripts/fuzz-api.sh): each answered 500.
#[tokio::test]
async fn fuzz_findings_stay_fixed() {
    let app = with_fixture().await;
    app.db
        .client()
        .await
        .batch_execute("INSERT INTO authors (name) VALUES ('Ursula')")
        .await
        .unwrap();
    // PATCH with no column to set (`{}`, `[]`, `[{}]`), with and without filters: the
    // no-op statement was sent with the body (and filter values) bound but unused.
    for body in ["{}", "[]", "[{}]"] {
        for q in ["", "?id=eq.1"] {
            let r = app
                .http
                .patch(app.url(&format!("/rest/v1/authors{q}")))
                .header("apikey", app.service_key())
                .header("content-type", "application/json")
                .header("prefer", "return=representation")
                .body(body)
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 200, "PATCH {body} {q}");
            assert_eq!(
                r.json::<Value>().await.unwrap(),
                json!([]),
                "PATCH {body} {q}"
            );
        }
    }
    // A page number whose offset overflows i64 (`(page - 1) * per_page` panicked in
    // debug builds, wrapped to a negative OFFSET in release): an empty page.
    let r = app
        .get("/auth/v1/admin/users?page=9223372036854775807&per_page=1000")
        .header("apikey", app.service_key())
        .header("authorization", format!("Bearer {}", app.service_key()))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.json::<Value>().await.unwrap()["users"], json!([]));
    let name: String = app
        .db
        .client()
        .await
        .query_one("SELECT name FROM authors WHERE id = 1", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(name, "Ursula");
}
