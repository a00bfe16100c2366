//! The REST engine over HTTP against a fixture schema: reads with filters, order, ranges and
//! counts, embedding both ways, single objects, writes, upserts, RPC, RLS and errors.

use crate::support::TestApp;
use reqwest::StatusCode;
use serde_json::{json, Value};

const FIXTURE: &str = "
CREATE TABLE authors (id serial PRIMARY KEY, name text NOT NULL, born int, meta jsonb);
CREATE TABLE books (
  id serial PRIMARY KEY, title text NOT NULL, year int, author_id int REFERENCES authors(id),
  tags text[] DEFAULT '{}', search tsvector GENERATED ALWAYS AS (to_tsvector('english', title)) STORED);
CREATE TABLE people (id int PRIMARY KEY, name text, manager_id int REFERENCES people(id));
CREATE TABLE notes (id serial PRIMARY KEY, owner uuid NOT NULL, body text);
ALTER TABLE notes ENABLE ROW LEVEL SECURITY;
CREATE POLICY own ON notes USING (owner = auth.uid()) WITH CHECK (owner = auth.uid());
INSERT INTO authors (name, born, meta) VALUES
  ('Ursula', 1929, '{\"country\": \"US\", \"awards\": 6}'), ('Terry', 1948, '{\"country\": \"UK\"}'), ('Octavia', 1947, NULL);
INSERT INTO books (title, year, author_id, tags) VALUES
  ('The Dispossessed', 1974, 1, '{sf,utopia}'), ('A Wizard of Earthsea', 1968, 1, '{fantasy}'),
  ('Small Gods', 1992, 2, '{fantasy,satire}'), ('Kindred', 1979, 3, '{sf}'), ('Orphan', NULL, NULL, '{}');
INSERT INTO people VALUES (1, 'Boss', NULL), (2, 'Mid', 1), (3, 'Dev', 2);
CREATE FUNCTION add(a int, b int) RETURNS int LANGUAGE sql IMMUTABLE AS 'SELECT a + b';
CREATE FUNCTION books_after(y int) RETURNS SETOF books LANGUAGE sql STABLE AS 'SELECT * FROM books WHERE year > y';
CREATE FUNCTION bump(n int) RETURNS int LANGUAGE sql VOLATILE AS 'SELECT n + 1';
CREATE FUNCTION nothing() RETURNS void LANGUAGE sql AS 'SELECT';
CREATE FUNCTION echo(jsonb) RETURNS jsonb LANGUAGE sql IMMUTABLE AS 'SELECT $1 || jsonb_build_object(''seen'', true)';
CREATE VIEW book_years AS SELECT year, count(*) AS n FROM books GROUP BY year;
CREATE VIEW recent_books AS SELECT id, title, year FROM books WHERE year > 1970;
CREATE TABLE tags (id int PRIMARY KEY, label text);
CREATE TABLE book_tags (book_id int REFERENCES books(id), tag_id int REFERENCES tags(id), PRIMARY KEY (book_id, tag_id));
INSERT INTO tags VALUES (1, 'classic'), (2, 'award');
INSERT INTO book_tags VALUES (1, 1), (1, 2), (3, 1);
CREATE FUNCTION teapot() RETURNS text LANGUAGE plpgsql AS $$
BEGIN
  PERFORM set_config('response.status', '418', true);
  PERFORM set_config('response.headers', '[{\"X-Brew\": \"earl grey\"}]', true);
  RETURN current_setting('request.cookies', true)::json ->> 'flavour';
END $$;
NOTIFY pgrst, 'reload schema';
";

async fn app() -> TestApp {
    app_with(|_| {}).await
}

async fn app_with(tweak: impl FnOnce(&mut fluxbase::config::Config)) -> TestApp {
    let app = TestApp::spawn_with(tweak).await;
    app.db.client().await.batch_execute(FIXTURE).await.unwrap();
    // The cache reloads on the NOTIFY (and the DDL event trigger); wait for it.
    let ok = crate::support::eventually(std::time::Duration::from_secs(10), || async {
        app.state.schema.get().table("public", "books").is_some()
            && !app
                .state
                .schema
                .get()
                .functions("public", "nothing")
                .is_empty()
    })
    .await;
    assert!(ok, "schema cache never saw the fixture");
    app
}

async fn get(app: &TestApp, path: &str) -> (StatusCode, reqwest::header::HeaderMap, Value) {
    let r = app
        .get(path)
        .header("apikey", app.anon_key())
        .send()
        .await
        .unwrap();
    let (s, h) = (r.status(), r.headers().clone());
    let text = r.text().await.unwrap();
    (
        s,
        h,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

#[tokio::test]
async fn reads_filters_order_ranges_and_counts() {
    let app = app().await;
    let (s, h, b) = get(
        &app,
        "/rest/v1/books?select=title,year&year=gte.1970&order=year.desc",
    )
    .await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(
        b,
        json!([{"title": "Small Gods", "year": 1992}, {"title": "Kindred", "year": 1979}, {"title": "The Dispossessed", "year": 1974}])
    );
    assert_eq!(h["content-range"], "0-2/*");
    assert!(h["content-type"]
        .to_str()
        .unwrap()
        .starts_with("application/json"));

    let (_, _, b) = get(
        &app,
        "/rest/v1/books?select=id&or=(year.lt.1970,year.is.null)&order=id",
    )
    .await;
    assert_eq!(b, json!([{"id": 2}, {"id": 5}]));
    let (_, _, b) = get(&app, "/rest/v1/books?select=id&title=ilike.*gods*").await;
    assert_eq!(b, json!([{"id": 3}]));
    let (_, _, b) = get(
        &app,
        "/rest/v1/books?select=id&id=in.(1,3,99)&order=id.desc",
    )
    .await;
    assert_eq!(b, json!([{"id": 3}, {"id": 1}]));
    let (_, _, b) = get(&app, "/rest/v1/books?select=id&tags=cs.{fantasy}&order=id").await;
    assert_eq!(b, json!([{"id": 2}, {"id": 3}]));
    let (_, _, b) = get(&app, "/rest/v1/books?select=id&search=fts(english).gods").await;
    assert_eq!(b, json!([{"id": 3}]));
    let (_, _, b) = get(
        &app,
        "/rest/v1/books?select=id&year=not.is.null&year=lt.1975&order=id",
    )
    .await;
    assert_eq!(b, json!([{"id": 1}, {"id": 2}]));
    let (_, _, b) = get(
        &app,
        "/rest/v1/authors?select=name,country:meta->>country&meta->>country=eq.UK",
    )
    .await;
    assert_eq!(b, json!([{"name": "Terry", "country": "UK"}]));
    let (_, _, b) = get(&app, "/rest/v1/authors?select=id,born::text&id=eq.1").await;
    assert_eq!(b, json!([{"id": 1, "born": "1929"}]));

    // Ranges and exact counts.
    let r = app
        .get("/rest/v1/books?select=id&order=id&limit=2&offset=1")
        .header("apikey", app.anon_key())
        .header("Prefer", "count=exact")
        .send()
        .await
        .unwrap();
    assert_eq!(r.headers()["content-range"], "1-2/5");
    assert_eq!(r.headers()["preference-applied"], "count=exact");
    assert_eq!(
        r.json::<Value>().await.unwrap(),
        json!([{"id": 2}, {"id": 3}])
    );
    let r = app
        .get("/rest/v1/books?select=id&order=id")
        .header("apikey", app.anon_key())
        .header("Range", "0-1")
        .header("Prefer", "count=exact")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 206);
    assert_eq!(r.headers()["content-range"], "0-1/5");
    let (s, _, b) = get(&app, "/rest/v1/books?select=id&id=eq.999").await;
    assert_eq!((s.as_u16(), b), (200, json!([])));

    // HEAD: headers only.
    let r = app
        .http
        .head(app.url("/rest/v1/books"))
        .header("apikey", app.anon_key())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.text().await.unwrap(), "");
}

#[tokio::test]
async fn embedding_both_directions_inner_and_self_references() {
    let app = app().await;
    let (s, _, b) = get(
        &app,
        "/rest/v1/books?select=title,author:authors(name)&id=in.(1,5)&order=id",
    )
    .await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(
        b,
        json!([{"title": "The Dispossessed", "author": {"name": "Ursula"}}, {"title": "Orphan", "author": null}])
    );
    let (_, _, b) = get(
        &app,
        "/rest/v1/authors?select=name,books(title)&id=eq.1&books.order=year",
    )
    .await;
    assert_eq!(
        b,
        json!([{"name": "Ursula", "books": [{"title": "A Wizard of Earthsea"}, {"title": "The Dispossessed"}]}])
    );
    // Embedded filters narrow the embedding; !inner drops parents without a match.
    let (_, _, b) = get(
        &app,
        "/rest/v1/authors?select=name,books(title)&books.year=gt.1990&order=id",
    )
    .await;
    assert_eq!(b[0]["books"], json!([]));
    assert_eq!(b[1]["books"], json!([{"title": "Small Gods"}]));
    let (_, _, b) = get(
        &app,
        "/rest/v1/authors?select=name,books!inner(title)&books.year=gt.1990",
    )
    .await;
    assert_eq!(
        b,
        json!([{"name": "Terry", "books": [{"title": "Small Gods"}]}])
    );
    // Order by a to-one embedded column, spread.
    let (_, _, b) = get(
        &app,
        "/rest/v1/books?select=id,authors(name)&author_id=not.is.null&order=authors(name).desc,id",
    )
    .await;
    let ids: Vec<i64> = b
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["id"].as_i64().unwrap())
        .collect();
    assert_eq!(ids, vec![1, 2, 3, 4]);
    let (_, _, b) = get(
        &app,
        "/rest/v1/books?select=title,...authors(author_name:name)&id=eq.3",
    )
    .await;
    assert_eq!(b, json!([{"title": "Small Gods", "author_name": "Terry"}]));
    // Self-reference, by PostgREST's rules: the key column gives the to-one side (the
    // manager); the table's name, alone or with the key column as hint, the rows pointing at
    // this one (the reports).
    let (s, _, b) = get(
        &app,
        "/rest/v1/people?select=name,manager:manager_id(name)&id=eq.3",
    )
    .await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(b, json!([{"name": "Dev", "manager": {"name": "Mid"}}]));
    let (_, _, b) = get(
        &app,
        "/rest/v1/people?select=name,reports:people(name)&order=id&reports.order=id",
    )
    .await;
    assert_eq!(
        b,
        json!([
            {"name": "Boss", "reports": [{"name": "Mid"}]},
            {"name": "Mid", "reports": [{"name": "Dev"}]},
            {"name": "Dev", "reports": []}
        ])
    );
    let (_, _, b) = get(
        &app,
        "/rest/v1/people?select=name,people!manager_id(name),boss:manager_id(name)&id=eq.2",
    )
    .await;
    assert_eq!(
        b,
        json!([{"name": "Mid", "people": [{"name": "Dev"}], "boss": {"name": "Boss"}}])
    );
    // The hint must name the self-referencing key.
    let (s, _, b) = get(&app, "/rest/v1/people?select=name,people!id(name)").await;
    assert_eq!(s, 400, "{b}");
    assert_eq!(b["code"], "PGRST200");
    // No relationship.
    let (s, _, b) = get(&app, "/rest/v1/books?select=*,people(*)").await;
    assert_eq!(s, 400);
    assert_eq!(b["code"], "PGRST200");
}

/// Relationships inferred through views (renamed columns, joins, views of views, materialized
/// views, tables of a schema that is not exposed, composite keys), one-to-one through a
/// UNIQUE key, and a self-referencing one-to-one key.
#[tokio::test]
async fn relationships_through_views_and_unique_keys() {
    let app = app().await;
    app.db
        .client()
        .await
        .batch_execute(
            "
CREATE SCHEMA private;
CREATE TABLE private.countries (code text PRIMARY KEY, name text);
CREATE TABLE private.cities (id int PRIMARY KEY, name text, country_code text REFERENCES private.countries (code));
INSERT INTO private.countries VALUES ('fr', 'France'), ('jp', 'Japan'), ('nz', 'New Zealand');
INSERT INTO private.cities VALUES (1, 'Paris', 'fr'), (2, 'Lyon', 'fr'), (3, 'Kyoto', 'jp');
CREATE VIEW countries AS SELECT code AS iso, name FROM private.countries;
CREATE VIEW cities AS
  SELECT c.id, c.name, k.name AS country_name, c.country_code AS country
    FROM private.cities c JOIN private.countries k ON k.code = c.country_code;
CREATE VIEW big_cities AS SELECT s.id, s.name AS city, s.country AS land FROM (SELECT * FROM cities) s WHERE s.id < 3;
CREATE TABLE editions (book_id int, no int, isbn text, PRIMARY KEY (book_id, no));
CREATE TABLE printings (id int PRIMARY KEY, book_id int, edition_no int,
  FOREIGN KEY (book_id, edition_no) REFERENCES editions);
INSERT INTO editions VALUES (1, 1, 'isbn-1-1'), (1, 2, 'isbn-1-2');
INSERT INTO printings VALUES (10, 1, 2), (11, 1, 1);
CREATE VIEW printing_view AS SELECT id, edition_no AS edition, book_id AS book FROM printings;
CREATE TABLE author_profiles (id int PRIMARY KEY, author_id int UNIQUE REFERENCES authors (id), bio text);
INSERT INTO author_profiles VALUES (1, 1, 'Earthsea'), (2, 2, 'Discworld');
CREATE VIEW profiles AS SELECT author_id AS writer, bio FROM author_profiles;
CREATE TABLE presidents (id int PRIMARY KEY, last_name text, predecessor_id int UNIQUE REFERENCES presidents (id));
INSERT INTO presidents VALUES (1, 'Washington', NULL), (2, 'Adams', 1), (3, 'Jefferson', 2);
CREATE VIEW book_codes AS SELECT title, author_id + 0 AS author FROM books;
CREATE VIEW cte_books AS WITH b AS (SELECT id, author_id AS who FROM books) SELECT id, who AS writer FROM b;
CREATE MATERIALIZED VIEW book_snapshot AS SELECT id, title, author_id FROM books;
GRANT SELECT ON book_snapshot TO anon;
NOTIFY pgrst, 'reload schema';
",
        )
        .await
        .unwrap();
    let ok = crate::support::eventually(std::time::Duration::from_secs(10), || async {
        let s = app.state.schema.get();
        s.table("public", "book_snapshot").is_some()
    })
    .await;
    assert!(ok, "schema cache never saw the views");
    // Two views over tables of a schema that is not exposed, with renamed key columns.
    let (s, _, b) = get(&app, "/rest/v1/cities?select=name,countries(name)&order=id").await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(
        b,
        json!([
            {"name": "Paris", "countries": {"name": "France"}},
            {"name": "Lyon", "countries": {"name": "France"}},
            {"name": "Kyoto", "countries": {"name": "Japan"}}
        ])
    );
    let (_, _, b) = get(
        &app,
        "/rest/v1/countries?select=iso,cities(name)&order=iso&cities.order=id",
    )
    .await;
    assert_eq!(
        b,
        json!([
            {"iso": "fr", "cities": [{"name": "Paris"}, {"name": "Lyon"}]},
            {"iso": "jp", "cities": [{"name": "Kyoto"}]},
            {"iso": "nz", "cities": []}
        ])
    );
    // A view over a subquery of a view.
    let (s, _, b) = get(
        &app,
        "/rest/v1/big_cities?select=city,countries(name)&order=id",
    )
    .await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(
        b,
        json!([
            {"city": "Paris", "countries": {"name": "France"}},
            {"city": "Lyon", "countries": {"name": "France"}}
        ])
    );
    // A composite key, its columns renamed and reordered by the view.
    let (s, _, b) = get(
        &app,
        "/rest/v1/printing_view?select=id,editions(isbn)&order=id",
    )
    .await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(
        b,
        json!([
            {"id": 10, "editions": {"isbn": "isbn-1-2"}},
            {"id": 11, "editions": {"isbn": "isbn-1-1"}}
        ])
    );
    let (_, _, b) = get(
        &app,
        "/rest/v1/editions?select=no,printing_view(id)&order=no",
    )
    .await;
    assert_eq!(
        b,
        json!([
            {"no": 1, "printing_view": [{"id": 11}]},
            {"no": 2, "printing_view": [{"id": 10}]}
        ])
    );
    // One-to-one through a UNIQUE foreign key: an object (or null) from the referenced
    // side, directly and through a view of the referencing table.
    let (s, _, b) = get(
        &app,
        "/rest/v1/authors?select=name,author_profiles(bio),profiles(bio)&order=id",
    )
    .await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(
        b,
        json!([
            {"name": "Ursula", "author_profiles": {"bio": "Earthsea"}, "profiles": {"bio": "Earthsea"}},
            {"name": "Terry", "author_profiles": {"bio": "Discworld"}, "profiles": {"bio": "Discworld"}},
            {"name": "Octavia", "author_profiles": null, "profiles": null}
        ])
    );
    // A self-referencing one-to-one key: both sides are objects.
    let (s, _, b) = get(
        &app,
        "/rest/v1/presidents?select=last_name,predecessor:predecessor_id(last_name),successor:presidents(last_name)&order=id",
    )
    .await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(
        b,
        json!([
            {"last_name": "Washington", "predecessor": null, "successor": {"last_name": "Adams"}},
            {"last_name": "Adams", "predecessor": {"last_name": "Washington"}, "successor": {"last_name": "Jefferson"}},
            {"last_name": "Jefferson", "predecessor": {"last_name": "Adams"}, "successor": null}
        ])
    );
    // A materialized view relates like a view.
    let (s, _, b) = get(
        &app,
        "/rest/v1/book_snapshot?select=title,authors(name)&id=eq.3",
    )
    .await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(
        b,
        json!([{"title": "Small Gods", "authors": {"name": "Terry"}}])
    );
    // Through a CTE.
    let (s, _, b) = get(&app, "/rest/v1/cte_books?select=id,authors(name)&id=eq.3").await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(b, json!([{"id": 3, "authors": {"name": "Terry"}}]));
    // A key column behind an expression is no copy: no relationship.
    let (s, _, b) = get(&app, "/rest/v1/book_codes?select=title,authors(name)").await;
    assert_eq!(s, 400, "{b}");
    assert_eq!(b["code"], "PGRST200");
    // Embedding by the foreign key's column or constraint name (tables only).
    let (s, _, b) = get(
        &app,
        "/rest/v1/books?select=title,author_id(name),writer:books_author_id_fkey(name)&id=eq.3",
    )
    .await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(
        b,
        json!([{"title": "Small Gods", "author_id": {"name": "Terry"}, "writer": {"name": "Terry"}}])
    );
}

#[tokio::test]
async fn single_objects_errors_and_unknown_names() {
    let app = app().await;
    let r = app
        .get("/rest/v1/authors?id=eq.2&select=name")
        .header("apikey", app.anon_key())
        .header("Accept", "application/vnd.pgrst.object+json")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("application/vnd.pgrst.object+json"));
    assert_eq!(r.json::<Value>().await.unwrap(), json!({"name": "Terry"}));
    let r = app
        .get("/rest/v1/authors?select=name")
        .header("apikey", app.anon_key())
        .header("Accept", "application/vnd.pgrst.object+json")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 406);
    let b: Value = r.json().await.unwrap();
    assert_eq!(b["code"], "PGRST116");
    assert_eq!(b["details"], "The result contains 3 rows");

    let (s, _, b) = get(&app, "/rest/v1/nope").await;
    assert_eq!((s.as_u16(), b["code"].as_str()), (404, Some("PGRST205")));
    let (s, _, b) = get(&app, "/rest/v1/books?select=nope").await;
    assert_eq!((s.as_u16(), b["code"].as_str()), (400, Some("42703")));
    let (s, _, b) = get(&app, "/rest/v1/books?year=eq.notanumber").await;
    assert_eq!(
        (s.as_u16(), b["code"].as_str()),
        (400, Some("22P02")),
        "{b}"
    );
    let (s, _, b) = get(&app, "/rest/v1/books?year=like").await;
    assert_eq!(
        (s.as_u16(), b["code"].as_str()),
        (400, Some("PGRST100")),
        "{b}"
    );
    let (s, _, b) = get(&app, "/rest/v1/books?year=zz.1").await;
    assert_eq!(
        (s.as_u16(), b["code"].as_str()),
        (400, Some("PGRST100")),
        "unknown operators are errors: {b}"
    );
    // Bad JWT: 401 with the PostgREST body.
    let r = app
        .get("/rest/v1/books")
        .bearer_auth("not-a-jwt")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    assert!(r.headers().contains_key("www-authenticate"));
}

#[tokio::test]
async fn writes_upserts_and_tx_rollback() {
    let app = app().await;
    let key = app.service_key();
    let post = |path: &str| app.http.post(app.url(path)).header("apikey", key.clone());
    // return=representation with a select.
    let r = post("/rest/v1/authors?select=id,name")
        .header("Prefer", "return=representation")
        .json(&json!({"name": "Iain", "born": 1954}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    assert_eq!(
        r.json::<Value>().await.unwrap(),
        json!([{"id": 4, "name": "Iain"}])
    );
    // Bulk, minimal.
    let r = post("/rest/v1/authors")
        .json(&json!([{"name": "A"}, {"name": "B"}]))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    assert_eq!(r.text().await.unwrap(), "");
    // Unknown column.
    let r = post("/rest/v1/authors")
        .json(&json!({"nom": "x"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    assert_eq!(r.json::<Value>().await.unwrap()["code"], "PGRST204");
    // Constraint violations map like PostgREST.
    let r = post("/rest/v1/authors")
        .json(&json!({"id": 1, "name": "dup"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 409);
    assert_eq!(r.json::<Value>().await.unwrap()["code"], "23505");
    let r = post("/rest/v1/authors")
        .json(&json!({"born": 1}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    assert_eq!(r.json::<Value>().await.unwrap()["code"], "23502");
    // Upsert (merge) and ignore.
    let r = post("/rest/v1/authors")
        .header("Prefer", "resolution=merge-duplicates,return=representation")
        .json(&json!([{"id": 1, "name": "Ursula K.", "born": 1929}, {"id": 50, "name": "New", "born": 2000}]))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let b: Value = r.json().await.unwrap();
    assert_eq!(b.as_array().unwrap().len(), 2);
    let r = post("/rest/v1/authors")
        .header(
            "Prefer",
            "resolution=ignore-duplicates,return=representation",
        )
        .json(&json!({"id": 1, "name": "ignored"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.json::<Value>().await.unwrap(), json!([]));
    let (_, _, b) = get(&app, "/rest/v1/authors?select=name&id=eq.1").await;
    assert_eq!(b, json!([{"name": "Ursula K."}]));
    // PUT upsert.
    let r = app
        .http
        .put(app.url("/rest/v1/authors?id=eq.60"))
        .header("apikey", key.clone())
        .json(&json!({"id": 60, "name": "Put"}))
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success(), "{}", r.status());
    // PATCH with filters; representation.
    let r = app
        .http
        .patch(app.url("/rest/v1/books?year=lt.1970&select=id,year"))
        .header("apikey", key.clone())
        .header("Prefer", "return=representation")
        .json(&json!({"year": 1969}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(
        r.json::<Value>().await.unwrap(),
        json!([{"id": 2, "year": 1969}])
    );
    // DELETE minimal: 204.
    let r = app
        .http
        .delete(app.url("/rest/v1/books?id=eq.5"))
        .header("apikey", key.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    let (_, _, b) = get(&app, "/rest/v1/books?select=id&id=eq.5").await;
    assert_eq!(b, json!([]));
    // tx=rollback: the answer comes, the change does not stay.
    let r = app
        .http
        .delete(app.url("/rest/v1/books?id=eq.4"))
        .header("apikey", key.clone())
        .header("Prefer", "tx=rollback, return=representation")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(
        r.json::<Value>().await.unwrap().as_array().unwrap().len(),
        1
    );
    let (_, _, b) = get(&app, "/rest/v1/books?select=id&id=eq.4").await;
    assert_eq!(b, json!([{"id": 4}]));
    // max-affected with handling=strict.
    let r = app
        .http
        .delete(app.url("/rest/v1/books?id=in.(2,4)"))
        .header("apikey", key.clone())
        .header("Prefer", "handling=strict, max-affected=1")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    assert_eq!(r.json::<Value>().await.unwrap()["code"], "PGRST124");
    let (_, _, b) = get(&app, "/rest/v1/books?select=id").await;
    assert_eq!(b.as_array().unwrap().len(), 4, "nothing was deleted");
}

#[tokio::test]
async fn rpc_calls() {
    let app = app().await;
    let (s, _, b) = get(&app, "/rest/v1/rpc/add?a=1&b=2").await;
    assert_eq!((s.as_u16(), b), (200, json!(3)));
    let r = app
        .http
        .post(app.url("/rest/v1/rpc/add"))
        .header("apikey", app.anon_key())
        .json(&json!({"a": 40, "b": 2}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.json::<Value>().await.unwrap(), json!(42));
    let (_, _, b) = get(
        &app,
        "/rest/v1/rpc/books_after?y=1975&select=title&order=year",
    )
    .await;
    assert_eq!(b, json!([{"title": "Kindred"}, {"title": "Small Gods"}]));
    let (_, _, b) = get(
        &app,
        "/api/v1/rpc/books_after?y=1990&select=title,authors(name)",
    )
    .await;
    assert_eq!(
        b,
        json!([{"title": "Small Gods", "authors": {"name": "Terry"}}])
    );
    // Volatile functions are refused on GET.
    let (s, _, b) = get(&app, "/rest/v1/rpc/bump?n=1").await;
    assert_eq!((s.as_u16(), b["code"].as_str()), (405, Some("PGRST101")));
    let r = app
        .http
        .post(app.url("/rest/v1/rpc/bump"))
        .header("apikey", app.anon_key())
        .json(&json!({"n": 1}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.json::<Value>().await.unwrap(), json!(2));
    let r = app
        .http
        .post(app.url("/rest/v1/rpc/nothing"))
        .header("apikey", app.anon_key())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    let (s, _, b) = get(&app, "/rest/v1/rpc/add?a=1").await;
    assert_eq!((s.as_u16(), b["code"].as_str()), (404, Some("PGRST202")));
    // A single unnamed json/jsonb argument receives the whole body.
    let r = app
        .http
        .post(app.url("/rest/v1/rpc/echo"))
        .header("apikey", app.anon_key())
        .json(&json!({"x": [1, 2]}))
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.json::<Value>().await.unwrap(),
        json!({"x": [1, 2], "seen": true})
    );
}

#[tokio::test]
async fn rls_decides_rows_per_caller_and_aliases_work() {
    let app = app().await;
    let alice = "11111111-1111-4111-8111-111111111111";
    let bob = "22222222-2222-4222-8222-222222222222";
    let token = |sub: &str| app.token(json!({"role": "authenticated", "sub": sub}));
    let r = app
        .http
        .post(app.url("/rest/v1/notes"))
        .header("apikey", app.anon_key())
        .bearer_auth(token(alice))
        .json(&json!({"owner": alice, "body": "alice's"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    // Writing a row for someone else violates the policy: 403 as PostgREST answers 42501.
    let r = app
        .http
        .post(app.url("/rest/v1/notes"))
        .bearer_auth(token(alice))
        .json(&json!({"owner": bob, "body": "forged"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    assert_eq!(r.json::<Value>().await.unwrap()["code"], "42501");
    let r = app
        .get("/rest/v1/notes?select=body")
        .bearer_auth(token(alice))
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.json::<Value>().await.unwrap(),
        json!([{"body": "alice's"}])
    );
    let r = app
        .get("/rest/v1/notes?select=body")
        .bearer_auth(token(bob))
        .send()
        .await
        .unwrap();
    assert_eq!(r.json::<Value>().await.unwrap(), json!([]));
    let (_, _, b) = get(&app, "/rest/v1/notes").await;
    assert_eq!(b, json!([]), "anon sees nothing");
    // The /api/v1/tables alias is the same handler.
    let r = app
        .get("/api/v1/tables/public/authors?select=name&id=eq.3")
        .header("apikey", app.anon_key())
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.json::<Value>().await.unwrap(),
        json!([{"name": "Octavia"}])
    );
    // The root describes the schema.
    let (s, _, b) = get(&app, "/rest/v1/").await;
    assert_eq!(s, 200);
    assert!(b["paths"]["/books"]["get"].is_object(), "{b}");
    assert!(b["definitions"]["authors"]["properties"]["name"].is_object());
}

#[tokio::test]
async fn ddl_reloads_the_schema_cache() {
    let app = app().await;
    app.db
        .client()
        .await
        .batch_execute("CREATE TABLE later (id int); INSERT INTO later VALUES (7);")
        .await
        .unwrap();
    let ok = crate::support::eventually(std::time::Duration::from_secs(10), || async {
        app.get("/rest/v1/later")
            .header("apikey", app.anon_key())
            .send()
            .await
            .unwrap()
            .status()
            == 200
    })
    .await;
    assert!(ok, "the event trigger's NOTIFY did not reload the cache");
    let (_, _, b) = get(&app, "/rest/v1/later").await;
    assert_eq!(b, json!([{"id": 7}]));
}

/// `NOTIFY pgrst, 'reload schema'` (or an empty payload) sent by hand reloads the cache, the
/// only path when the database user cannot create event triggers; other payloads do not.
/// The DDL event triggers are disabled first, so only the hand-sent NOTIFY can reload.
#[tokio::test]
async fn notify_pgrst_by_hand_reloads_the_schema_cache() {
    let app = app().await;
    let db = app.db.client().await;
    db.batch_execute(
        "DO $$ DECLARE t text; BEGIN
           FOR t IN SELECT evtname FROM pg_event_trigger WHERE evtname LIKE 'fluxbase_ddl_%' LOOP
             EXECUTE format('ALTER EVENT TRIGGER %I DISABLE', t);
           END LOOP;
         END $$;
         CREATE TABLE by_hand (id int); INSERT INTO by_hand VALUES (1);",
    )
    .await
    .unwrap();
    let status = |path: &'static str| {
        let app = &app;
        async move {
            app.get(path)
                .header("apikey", app.anon_key())
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        }
    };
    // Nothing reloads on its own, nor on another payload.
    db.batch_execute("NOTIFY pgrst, 'reload config'")
        .await
        .unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(600)).await;
    assert_eq!(status("/rest/v1/by_hand").await, 404);
    // An empty payload reloads.
    db.batch_execute("NOTIFY pgrst").await.unwrap();
    let ok = crate::support::eventually(std::time::Duration::from_secs(10), || async {
        status("/rest/v1/by_hand").await == 200
    })
    .await;
    assert!(ok, "NOTIFY pgrst (empty payload) did not reload the cache");
    // So does 'reload schema'.
    db.batch_execute("CREATE TABLE by_hand_too (id int)")
        .await
        .unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(600)).await;
    assert_eq!(status("/rest/v1/by_hand_too").await, 404);
    db.batch_execute("NOTIFY pgrst, 'reload schema'")
        .await
        .unwrap();
    let ok = crate::support::eventually(std::time::Duration::from_secs(10), || async {
        status("/rest/v1/by_hand_too").await == 200
    })
    .await;
    assert!(ok, "NOTIFY pgrst, 'reload schema' did not reload the cache");
    let (_, _, b) = get(&app, "/rest/v1/by_hand").await;
    assert_eq!(b, json!([{"id": 1}]));
}

#[tokio::test]
async fn aggregates_many_to_many_csv_and_response_settings() {
    let app = app().await;
    let (s, _, b) = get(
        &app,
        "/rest/v1/books?select=author_id,count(),year.max()&author_id=not.is.null&order=author_id",
    )
    .await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(
        b,
        json!([
            {"author_id": 1, "count": 2, "max": 1974},
            {"author_id": 2, "count": 1, "max": 1992},
            {"author_id": 3, "count": 1, "max": 1979}
        ])
    );
    let (_, _, b) = get(&app, "/rest/v1/books?select=total:count()").await;
    assert_eq!(b, json!([{"total": 5}]));

    // Many-to-many through the junction table.
    let (s, _, b) = get(
        &app,
        "/rest/v1/books?select=title,tags(label)&id=in.(1,2)&order=id",
    )
    .await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(b[0]["tags"].as_array().unwrap().len(), 2);
    assert_eq!(b[1]["tags"], json!([]));
    let (_, _, b) = get(&app, "/rest/v1/tags?select=label,books(title)&id=eq.2").await;
    assert_eq!(
        b,
        json!([{"label": "award", "books": [{"title": "The Dispossessed"}]}])
    );

    // CSV out.
    let r = app
        .get("/rest/v1/authors?select=id,name,meta->>country&order=id")
        .header("apikey", app.anon_key())
        .header("Accept", "text/csv")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/csv"));
    assert_eq!(
        r.text().await.unwrap(),
        "id,name,country\n1,Ursula,US\n2,Terry,UK\n3,Octavia,"
    );
    // CSV in.
    let r = app
        .http
        .post(app.url("/rest/v1/authors"))
        .header("apikey", app.service_key())
        .header("Content-Type", "text/csv")
        .header("Prefer", "return=representation")
        .body("name,born\n\"Le Guin, U.\",1929\nBanks,1954")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let rows: Value = r.json().await.unwrap();
    assert_eq!(rows[0]["name"], "Le Guin, U.");
    assert_eq!(rows[1]["born"], 1954);

    // Functions choose status and headers; cookies reach SQL.
    let r = app
        .http
        .post(app.url("/rest/v1/rpc/teapot"))
        .header("apikey", app.anon_key())
        .header("Cookie", "flavour=bergamot; other=1")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 418);
    assert_eq!(r.headers()["x-brew"], "earl grey");
    assert_eq!(r.json::<Value>().await.unwrap(), json!("bergamot"));
}

#[tokio::test]
async fn views_read_and_write_as_postgres_allows() {
    let app = app().await;
    let (s, _, b) = get(&app, "/rest/v1/book_years?select=year,n&year=eq.1974").await;
    assert_eq!((s.as_u16(), b), (200, json!([{"year": 1974, "n": 1}])));
    // A view that is not auto-updatable refuses writes before any SQL runs.
    let r = app
        .http
        .post(app.url("/rest/v1/book_years"))
        .header("apikey", app.service_key())
        .json(&json!({"year": 2000}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 405);
    assert_eq!(r.json::<Value>().await.unwrap()["code"], "FB008");
    // An auto-updatable view accepts them.
    let r = app
        .http
        .post(app.url("/rest/v1/recent_books"))
        .header("apikey", app.service_key())
        .header("Prefer", "return=representation")
        .json(&json!({"title": "Via a view", "year": 2001}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    assert_eq!(r.json::<Value>().await.unwrap()[0]["title"], "Via a view");
}

#[tokio::test]
async fn options_lists_the_allowed_methods() {
    let app = app().await;
    let allow = |path: &'static str| {
        let req = app
            .http
            .request(reqwest::Method::OPTIONS, app.url(path))
            .header("apikey", app.anon_key());
        async move {
            let r = req.send().await.unwrap();
            assert_eq!(r.status(), 200);
            r.headers()["allow"].to_str().unwrap().to_string()
        }
    };
    assert_eq!(
        allow("/rest/v1/books").await,
        "OPTIONS,GET,HEAD,POST,PUT,PATCH,DELETE"
    );
    assert_eq!(allow("/rest/v1/book_years").await, "OPTIONS,GET,HEAD");
    assert_eq!(allow("/rest/v1/rpc/add").await, "OPTIONS,GET,HEAD,POST");
}

/// `POST []` inserts nothing (PostgREST), while `POST {}` inserts a row of defaults.
#[tokio::test]
async fn posting_an_empty_array_inserts_nothing() {
    let app = app().await;
    let count = || async {
        app.db
            .client()
            .await
            .query_one("SELECT count(*) FROM people", &[])
            .await
            .unwrap()
            .get::<_, i64>(0)
    };
    let before = count().await;
    let res = app
        .http
        .post(app.url("/rest/v1/people"))
        .bearer_auth(app.service_key())
        .header("Prefer", "return=representation")
        .header("content-type", "application/json")
        .body(" [ ] ")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 201);
    assert_eq!(res.json::<Value>().await.unwrap(), json!([]));
    assert_eq!(count().await, before);
}

#[tokio::test]
async fn missing_default_fills_absent_keys_per_row() {
    let app = app().await;
    let key = app.service_key();
    // Rows with different keys need `columns=` (else PGRST102, as PostgREST answers).
    let post = |body: Value, prefer: &str| {
        app.http
            .post(app.url("/rest/v1/books?columns=id,title,tags&select=id,title,tags"))
            .header("apikey", key.clone())
            .header("Prefer", prefer.to_string())
            .json(&body)
    };
    // Without the preference an absent key is NULL (PostgREST's default behaviour).
    let r = post(
        json!([{"id": 50, "title": "X", "tags": ["a"]}, {"id": 51, "title": "Y"}]),
        "return=representation",
    )
    .send()
    .await
    .unwrap();
    let status = r.status();
    let rows: Value = r.json().await.unwrap();
    assert_eq!(status, 201, "{rows}");
    assert_eq!(rows[1]["tags"], Value::Null, "{rows}");
    // With it, the column default, per row: a serial id draws from its sequence for each
    // row that lacks one; an explicit null stays null.
    let r = post(
        json!([{"id": 100, "title": "P", "tags": ["b"]}, {"title": "Q"}, {"title": "R"},
               {"title": "S", "tags": null}]),
        "return=representation, missing=default",
    )
    .send()
    .await
    .unwrap();
    assert_eq!(r.status(), 201);
    assert!(r
        .headers()
        .get("preference-applied")
        .unwrap()
        .to_str()
        .unwrap()
        .contains("missing=default"));
    let rows: Value = r.json().await.unwrap();
    let rows = rows.as_array().unwrap();
    assert_eq!(rows.len(), 4);
    assert_eq!(rows[0]["id"], 100);
    assert_eq!(rows[0]["tags"], json!(["b"]));
    let (q, r_) = (
        rows[1]["id"].as_i64().unwrap(),
        rows[2]["id"].as_i64().unwrap(),
    );
    assert!(q > 0 && r_ > 0 && q != r_, "{rows:?}");
    assert_eq!(rows[1]["tags"], json!([]));
    assert_eq!(rows[2]["tags"], json!([]));
    assert_eq!(rows[3]["tags"], Value::Null);
    // Upserts take the same path.
    let r = post(
        json!([{"id": 100, "title": "P2"}, {"title": "T"}]),
        "return=representation, missing=default, resolution=merge-duplicates",
    )
    .send()
    .await
    .unwrap();
    assert_eq!(r.status(), 201);
    let rows: Value = r.json().await.unwrap();
    assert_eq!(rows[0]["title"], "P2");
    assert_eq!(rows[0]["tags"], json!([]), "the default replaces on merge");
    // A single object (read as one record, not wrapped in an array) takes the same path.
    let r = post(
        json!({"title": "U"}),
        "return=representation, missing=default",
    )
    .send()
    .await
    .unwrap();
    assert_eq!(r.status(), 201);
    let rows: Value = r.json().await.unwrap();
    assert_eq!(rows.as_array().map(Vec::len), Some(1), "{rows}");
    assert!(rows[0]["id"].as_i64().unwrap() > 0, "{rows}");
    assert_eq!(rows[0]["tags"], json!([]), "{rows}");
    let r = post(json!({"id": 52, "title": "V"}), "return=representation")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let rows: Value = r.json().await.unwrap();
    assert_eq!(rows[0]["title"], "V", "{rows}");
    assert_eq!(
        rows[0]["tags"],
        Value::Null,
        "an absent key of `columns=` is NULL without the preference"
    );
}

/// `Plan Rows` of the top node, as Postgres's own EXPLAIN gives it for `query`.
async fn planner_rows(app: &TestApp, query: &str) -> i64 {
    let plan: Value = app
        .db
        .client()
        .await
        .query_one(&format!("EXPLAIN (FORMAT JSON) {query}"), &[])
        .await
        .unwrap()
        .get(0);
    plan[0]["Plan"]["Plan Rows"].as_f64().unwrap() as i64
}

fn total(h: &reqwest::header::HeaderMap) -> i64 {
    let cr = h["content-range"].to_str().unwrap();
    cr.rsplit('/').next().unwrap().parse().unwrap()
}

#[tokio::test]
async fn planned_and_estimated_counts_come_from_the_planner() {
    let app = app().await;
    let db = app.db.client().await;
    // Enough rows that the planner's guess and the truth differ for a range filter.
    db.batch_execute(
        "INSERT INTO books (title, year) SELECT 'b' || g, 1900 + g % 120 FROM generate_series(1, 3000) g;
         ANALYZE books;",
    )
    .await
    .unwrap();
    let count = |prefer: &'static str, path: &'static str| {
        let app = &app;
        async move {
            let r = app
                .get(path)
                .header("apikey", app.anon_key())
                .header("Prefer", prefer)
                .header("Range", "0-1")
                .send()
                .await
                .unwrap();
            assert!(r.status().is_success(), "{}", r.status());
            let applied = r.headers()["preference-applied"]
                .to_str()
                .unwrap()
                .to_string();
            assert!(applied.contains(prefer), "{applied}");
            total(r.headers())
        }
    };
    let exact: i64 = db
        .query_one(
            "SELECT count(*) FROM books WHERE year > 1990 AND title LIKE '%7'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    let planned = planner_rows(
        &app,
        "SELECT 1 FROM public.books WHERE year > 1990 AND title LIKE '%7'",
    )
    .await;
    assert_ne!(planned, exact, "the data must tell planned from exact");
    assert_eq!(
        count("count=exact", "/rest/v1/books?year=gt.1990&title=like.*7").await,
        exact
    );
    assert_eq!(
        count("count=planned", "/rest/v1/books?year=gt.1990&title=like.*7").await,
        planned
    );
    // Unlimited rest.max_rows: estimated is exact.
    assert_eq!(
        count(
            "count=estimated",
            "/rest/v1/books?year=gt.1990&title=like.*7"
        )
        .await,
        exact
    );
    // With rest.max_rows, estimated is exact up to it and the planner's beyond.
    let capped = TestApp::spawn_on(app.db.clone(), |c| c.rest.max_rows = 50).await;
    let count_capped = |prefer: &'static str, path: &'static str| {
        let app = &capped;
        async move {
            let r = app
                .get(path)
                .header("apikey", app.anon_key())
                .header("Prefer", prefer)
                .send()
                .await
                .unwrap();
            assert!(r.status().is_success(), "{}", r.status());
            total(r.headers())
        }
    };
    assert_eq!(
        count_capped(
            "count=estimated",
            "/rest/v1/books?year=gt.1990&title=like.*7"
        )
        .await,
        planned
    );
    assert_eq!(
        count_capped("count=estimated", "/rest/v1/books?title=eq.Kindred").await,
        1
    );
}

#[tokio::test]
async fn headers_only_inserts_answer_with_location() {
    let app = app().await;
    let key = app.service_key();
    let post = |path: &str, prefer: &str, body: Value| {
        app.http
            .post(app.url(path))
            .header("apikey", key.clone())
            .header("Prefer", prefer.to_string())
            .json(&body)
    };
    let r = post(
        "/rest/v1/authors",
        "return=headers-only",
        json!({"name": "Le Guin"}),
    )
    .send()
    .await
    .unwrap();
    assert_eq!(r.status(), 201);
    let id: i64 = app
        .db
        .client()
        .await
        .query_one("SELECT id FROM authors WHERE name = 'Le Guin'", &[])
        .await
        .unwrap()
        .get::<_, i32>(0)
        .into();
    assert_eq!(
        r.headers()["location"],
        format!("/authors?id=eq.{id}").as_str()
    );
    assert_eq!(r.text().await.unwrap(), "");
    // A composite key lists every column.
    let r = post(
        "/rest/v1/book_tags",
        "return=headers-only",
        json!({"book_id": 2, "tag_id": 2}),
    )
    .send()
    .await
    .unwrap();
    assert_eq!(r.status(), 201);
    assert_eq!(
        r.headers()["location"],
        "/book_tags?book_id=eq.2&tag_id=eq.2"
    );
    let r = post(
        "/rest/v1/tags",
        "return=headers-only",
        json!({"id": 9, "label": "a b"}),
    )
    .send()
    .await
    .unwrap();
    assert_eq!(r.headers()["location"], "/tags?id=eq.9");
    // Other return preferences carry no Location.
    let r = post(
        "/rest/v1/tags",
        "return=minimal",
        json!({"id": 10, "label": "x"}),
    )
    .send()
    .await
    .unwrap();
    assert_eq!(r.status(), 201);
    assert!(r.headers().get("location").is_none());
}

#[tokio::test]
async fn rest_anon_role_decides_requests_without_any_token() {
    let db = crate::support::fresh_db().await;
    db.client()
        .await
        .batch_execute(
            "CREATE FUNCTION whoami() RETURNS text LANGUAGE sql STABLE AS 'SELECT current_user::text';
             GRANT EXECUTE ON FUNCTION whoami() TO anon, authenticated;
             NOTIFY pgrst, 'reload schema';",
        )
        .await
        .unwrap();
    let call = |app: &TestApp, key: Option<String>| {
        let mut r = app.http.get(app.url("/rest/v1/rpc/whoami"));
        if let Some(k) = key {
            r = r.header("apikey", k);
        }
        r.send()
    };
    // Default: `anon`.
    let app = TestApp::spawn_on(db.clone(), |_| {}).await;
    let r = call(&app, None).await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.json::<Value>().await.unwrap(), "anon");
    // Another allowed role.
    let app = TestApp::spawn_on(db.clone(), |c| c.rest.anon_role = "authenticated".into()).await;
    let r = call(&app, None).await.unwrap();
    assert_eq!(r.json::<Value>().await.unwrap(), "authenticated");
    // Empty: refused, as PostgREST without db-anon-role; a token still decides.
    let app = TestApp::spawn_on(db.clone(), |c| c.rest.anon_role = String::new()).await;
    let r = call(&app, None).await.unwrap();
    assert_eq!(r.status(), 401);
    assert_eq!(r.json::<Value>().await.unwrap()["code"], "PGRST302");
    let r = call(&app, Some(app.anon_key())).await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.json::<Value>().await.unwrap(), "anon");
    // A role no token could name is a configuration error.
    let mut cfg = fluxbase::config::Config::default();
    cfg.rest.anon_role = "postgres".into();
    assert!(cfg.validate().join("\n").contains("`rest.anon_role`"));
}

#[tokio::test]
async fn computed_columns_and_relationships() {
    let app = app().await;
    app.db
        .client()
        .await
        .batch_execute(
            "
CREATE FUNCTION shout(books) RETURNS text LANGUAGE sql STABLE AS 'SELECT upper($1.title)';
CREATE FUNCTION decade(recent_books) RETURNS int LANGUAGE sql STABLE AS 'SELECT $1.year / 10 * 10';
CREATE FUNCTION info(books) RETURNS jsonb LANGUAGE sql STABLE
  AS 'SELECT jsonb_build_object(''title'', $1.title, ''tags'', $1.tags)';
CREATE FUNCTION two_args(books, int) RETURNS int LANGUAGE sql STABLE AS 'SELECT $2';
-- Overrides the foreign key relationship books -> authors: an orphan book gets author 3.
CREATE FUNCTION authors(books) RETURNS SETOF authors ROWS 1 LANGUAGE sql STABLE
  AS 'SELECT * FROM authors WHERE id = coalesce($1.author_id, 3)';
CREATE FUNCTION any_book(authors) RETURNS SETOF books ROWS 1 LANGUAGE sql STABLE
  AS 'SELECT * FROM books WHERE author_id = $1.id';
CREATE FUNCTION colleagues(people) RETURNS SETOF people LANGUAGE sql STABLE
  AS 'SELECT * FROM people WHERE manager_id IS NOT DISTINCT FROM $1.manager_id AND id <> $1.id';
NOTIFY pgrst, 'reload schema';
",
        )
        .await
        .unwrap();
    let ok = crate::support::eventually(std::time::Duration::from_secs(10), || async {
        let s = app.state.schema.get();
        s.table("public", "people")
            .is_some_and(|t| s.computed_relationship(t, "colleagues").is_some())
    })
    .await;
    assert!(ok, "schema cache never saw the functions");

    // A computed column of a view, in select, filter and order; not part of `*`.
    let (s, _, b) = get(
        &app,
        "/rest/v1/recent_books?select=title,decade&decade=gte.1970&order=decade.desc,id",
    )
    .await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(
        b,
        json!([
            {"title": "Small Gods", "decade": 1990},
            {"title": "The Dispossessed", "decade": 1970},
            {"title": "Kindred", "decade": 1970}
        ])
    );
    let (_, _, b) = get(&app, "/rest/v1/books?id=eq.1").await;
    assert!(b[0].get("shout").is_none(), "{b}");
    // JSON paths into a computed column, and aggregates of one.
    let (s, _, b) = get(
        &app,
        "/rest/v1/books?select=info->>title,first_tag:info->tags->0&info->tags->>0=eq.fantasy&order=id",
    )
    .await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(
        b,
        json!([
            {"title": "A Wizard of Earthsea", "first_tag": "fantasy"},
            {"title": "Small Gods", "first_tag": "fantasy"}
        ])
    );
    let (s, _, b) = get(
        &app,
        "/rest/v1/books?select=shout.max(),author_id&author_id=eq.1",
    )
    .await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(b, json!([{"max": "THE DISPOSSESSED", "author_id": 1}]));
    // Only one-argument functions: a second argument makes no computed column.
    let (s, _, b) = get(&app, "/rest/v1/books?select=two_args").await;
    assert_eq!(s, 400, "{b}");
    assert_eq!(b["code"], "42703");
    // Values stay parameters.
    let (s, _, b) = get(
        &app,
        "/rest/v1/books?select=id&shout=eq.x%27)%3B%20DROP%20TABLE%20books%3B%20--",
    )
    .await;
    assert_eq!((s.as_u16(), b), (200, json!([])));
    // On the rows of a function returning a table type.
    let (s, _, b) = get(
        &app,
        "/rest/v1/rpc/books_after?y=1975&select=shout,authors(name)&order=id",
    )
    .await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(
        b,
        json!([
            {"shout": "SMALL GODS", "authors": {"name": "Terry"}},
            {"shout": "KINDRED", "authors": {"name": "Octavia"}}
        ])
    );

    // The function overrides the foreign key relationship of the same name, hint or not
    // (as PostgREST); the key's column still reaches the foreign key.
    let (_, _, b) = get(&app, "/rest/v1/books?select=title,authors(name)&id=eq.5").await;
    assert_eq!(
        b,
        json!([{"title": "Orphan", "authors": {"name": "Octavia"}}])
    );
    let (_, _, b) = get(
        &app,
        "/rest/v1/books?select=title,authors!books_author_id_fkey(name)&id=eq.5",
    )
    .await;
    assert_eq!(
        b,
        json!([{"title": "Orphan", "authors": {"name": "Octavia"}}])
    );
    let (_, _, b) = get(&app, "/rest/v1/books?select=title,author_id(name)&id=eq.5").await;
    assert_eq!(b, json!([{"title": "Orphan", "author_id": null}]));
    // A to-many computed relationship between rows of one table, with `is.null` filtering.
    let (s, _, b) = get(
        &app,
        "/rest/v1/people?select=name,colleagues(name)&colleagues=is.null&order=id",
    )
    .await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(
        b,
        json!([
            {"name": "Boss", "colleagues": []},
            {"name": "Mid", "colleagues": []},
            {"name": "Dev", "colleagues": []}
        ])
    );

    // Writes: the representation computes from the written rows; filters of the write too.
    let key = app.service_key();
    let r = app
        .http
        .patch(app.url("/rest/v1/books?shout=eq.ORPHAN&select=title,shout,authors(name)"))
        .header("apikey", key.clone())
        .header("Prefer", "return=representation")
        .json(&json!({"title": "Adopted"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(
        r.json::<Value>().await.unwrap(),
        json!([{"title": "Adopted", "shout": "ADOPTED", "authors": {"name": "Octavia"}}])
    );
    let r = app
        .http
        .post(app.url("/rest/v1/books?select=id,shout"))
        .header("apikey", key.clone())
        .header("Prefer", "return=representation")
        .json(&json!({"id": 99, "title": "New one"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    assert_eq!(
        r.json::<Value>().await.unwrap(),
        json!([{"id": 99, "shout": "NEW ONE"}])
    );

    // A to-one function that returns several rows is an error (400, as PostgREST maps
    // SQLSTATE 21000), not a silent pick.
    let (s, _, b) = get(&app, "/rest/v1/authors?select=any_book(title)&id=eq.1").await;
    assert_eq!(s, 400, "{b}");
    assert_eq!(b["code"], "21000");
}

/// GET with an `Accept` header: status, `Content-Type` and the body text.
async fn get_as(app: &TestApp, path: &str, accept: &str) -> (StatusCode, String, String) {
    let r = app
        .get(path)
        .header("apikey", app.anon_key())
        .header("Accept", accept)
        .send()
        .await
        .unwrap();
    let s = r.status();
    let ct = r
        .headers()
        .get("content-type")
        .map(|v| v.to_str().unwrap().to_string())
        .unwrap_or_default();
    (s, ct, r.text().await.unwrap())
}

#[tokio::test]
async fn spreads_lift_columns_stars_embeds_and_aggregates() {
    let app = app().await;
    let cases: Vec<(&str, Value)> = vec![
        // To-one: aliases, `*` (every column of the related row), nested embeds and nested
        // spreads are lifted into the parent object.
        (
            "/rest/v1/books?select=title,...authors(author:name)&id=eq.3",
            json!([{"title": "Small Gods", "author": "Terry"}]),
        ),
        (
            "/rest/v1/books?select=title,...authors(*)&id=eq.3",
            json!([{"title": "Small Gods", "id": 2, "name": "Terry", "born": 1948, "meta": {"country": "UK"}}]),
        ),
        (
            "/rest/v1/book_tags?select=tag_id,...books(title,authors(name))&book_id=eq.3",
            json!([{"tag_id": 1, "title": "Small Gods", "authors": {"name": "Terry"}}]),
        ),
        (
            "/rest/v1/book_tags?select=tag_id,...books(title,...authors(author:name))&book_id=eq.3",
            json!([{"tag_id": 1, "title": "Small Gods", "author": "Terry"}]),
        ),
        // No related row: the spread columns are null.
        (
            "/rest/v1/books?select=title,...authors(name)&id=eq.5",
            json!([{"title": "Orphan", "name": null}]),
        ),
        // To-many (one-to-many and many-to-many): each column becomes the array of the related
        // rows' values, correlated and in the embed's order; `[]` without related rows.
        (
            "/rest/v1/authors?select=name,...books(titles:title,years:year)&id=eq.1&books.order=year",
            json!([{"name": "Ursula", "titles": ["A Wizard of Earthsea", "The Dispossessed"], "years": [1968, 1974]}]),
        ),
        (
            "/rest/v1/authors?select=name,...books(titles:title)&id=eq.1&books.order=year.desc&books.limit=1",
            json!([{"name": "Ursula", "titles": ["The Dispossessed"]}]),
        ),
        (
            "/rest/v1/books?select=title,...tags(labels:label)&id=eq.1&tags.order=id",
            json!([{"title": "The Dispossessed", "labels": ["classic", "award"]}]),
        ),
        (
            "/rest/v1/books?select=title,...tags(labels:label)&id=eq.2",
            json!([{"title": "A Wizard of Earthsea", "labels": []}]),
        ),
        // Nested in a to-many spread: a to-many spread gives arrays of arrays, an embed an
        // array of its objects.
        (
            "/rest/v1/authors?select=name,...books(title,...tags(label))&id=eq.1&books.order=year&books.tags.order=id",
            json!([{"name": "Ursula", "title": ["A Wizard of Earthsea", "The Dispossessed"], "label": [[], ["classic", "award"]]}]),
        ),
        (
            "/rest/v1/tags?select=label,...books(title,authors(name))&id=eq.1&books.order=id",
            json!([{"label": "classic", "title": ["The Dispossessed", "Small Gods"], "authors": [{"name": "Ursula"}, {"name": "Terry"}]}]),
        ),
        // Aggregates in a to-one spread are lifted to the parent (grouped by its columns).
        (
            "/rest/v1/books?select=...authors(born.min(),born.max())",
            json!([{"min": 1929, "max": 1948}]),
        ),
        (
            "/rest/v1/book_tags?select=tag_id,...books(total:year.sum())&order=tag_id",
            json!([{"tag_id": 1, "total": 3966}, {"tag_id": 2, "total": 1974}]),
        ),
        (
            "/rest/v1/books?select=...authors(count())",
            json!([{"count": 4}]),
        ),
    ];
    for (path, want) in cases {
        let (s, _, b) = get(&app, path).await;
        assert_eq!(s, StatusCode::OK, "{path}: {b}");
        assert_eq!(b, want, "{path}");
    }
    // …but not in a to-many spread, as PostgREST 13 refuses them.
    for path in [
        "/rest/v1/authors?select=name,...books(count())",
        "/rest/v1/authors?select=name,...books(year.sum())",
        "/rest/v1/tags?select=label,...books(...authors(born.max()))",
    ] {
        let (s, _, b) = get(&app, path).await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{path}: {b}");
        assert_eq!(
            b,
            json!({"code": "PGRST127", "message": "Feature not implemented",
                   "details": "Aggregates are not implemented for one-to-many or many-to-many spreads.",
                   "hint": null}),
            "{path}"
        );
    }
    // Spreads in the representation of a write.
    let r = app
        .http
        .post(app.url("/rest/v1/books?select=title,...authors(author:name)"))
        .header("apikey", app.service_key())
        .header("Prefer", "return=representation")
        .json(&json!({"title": "Night Watch", "author_id": 2}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    assert_eq!(
        r.json::<Value>().await.unwrap(),
        json!([{"title": "Night Watch", "author": "Terry"}])
    );
}

#[tokio::test]
async fn aggregates_beside_embeds_group_by_the_embed() {
    let app = app().await;
    let (s, _, b) = get(
        &app,
        "/rest/v1/authors?select=name,books(title),count()&id=eq.1&books.order=title",
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{b}");
    assert_eq!(
        b,
        json!([{"name": "Ursula", "books": [{"title": "A Wizard of Earthsea"}, {"title": "The Dispossessed"}], "count": 1}])
    );
    // The embed is a grouping key: the books per author (and the one without).
    let (s, _, b) = get(&app, "/rest/v1/books?select=count(),author:authors(name)").await;
    assert_eq!(s, StatusCode::OK, "{b}");
    let mut rows = b.as_array().unwrap().clone();
    rows.sort_by_key(|r| r["author"].to_string());
    assert_eq!(
        rows,
        vec![
            json!({"count": 1, "author": null}),
            json!({"count": 1, "author": {"name": "Octavia"}}),
            json!({"count": 1, "author": {"name": "Terry"}}),
            json!({"count": 2, "author": {"name": "Ursula"}}),
        ]
    );
    // Grouped by the value of the embed, as PostgREST does: two authors named alike are
    // one group.
    app.db
        .client()
        .await
        .batch_execute(
            "INSERT INTO authors (id, name) VALUES (10, 'Terry');
             INSERT INTO books (title, author_id) VALUES ('Mort', 10);",
        )
        .await
        .unwrap();
    let (s, _, b) = get(
        &app,
        "/rest/v1/books?select=n:count(),authors(name)&authors.name=eq.Terry&authors=not.is.null",
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{b}");
    assert_eq!(b, json!([{"n": 2, "authors": {"name": "Terry"}}]));
    // A spread's columns group too.
    let (s, _, b) = get(
        &app,
        "/rest/v1/books?select=year.max(),...authors(name)&authors=not.is.null",
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{b}");
    let mut rows = b.as_array().unwrap().clone();
    rows.sort_by_key(|r| r["name"].to_string());
    assert_eq!(
        rows,
        vec![
            json!({"max": 1979, "name": "Octavia"}),
            json!({"max": 1992, "name": "Terry"}),
            json!({"max": 1974, "name": "Ursula"}),
        ]
    );
    // `*` beside an aggregate: every column is a grouping key.
    let (s, _, b) = get(&app, "/rest/v1/tags?select=*,count()&order=id").await;
    assert_eq!(s, StatusCode::OK, "{b}");
    assert_eq!(
        b,
        json!([{"id": 1, "label": "classic", "count": 1}, {"id": 2, "label": "award", "count": 1}])
    );
}

#[tokio::test]
async fn plans_need_plan_enabled() {
    let app = app().await;
    let (s, _, b) = get_as(&app, "/rest/v1/books", "application/vnd.pgrst.plan+json").await;
    assert_eq!(s, StatusCode::NOT_ACCEPTABLE, "{b}");
    assert!(b.contains("PGRST107"), "{b}");
}

async fn plans_explain_the_statement(wire: bool) {
    let app = app_with(|c| {
        c.rest.plan_enabled = true;
        c.database.wire = wire;
    })
    .await;
    // A plan answered 200 with its `Content-Type`, as PostgREST gives them.
    let explained = |path: &'static str, accept: &'static str, ct: &'static str| {
        let app = &app;
        async move {
            let (s, got_ct, b) = get_as(app, path, accept).await;
            assert_eq!(
                (s, got_ct.as_str()),
                (StatusCode::OK, ct),
                "{path} {accept}: {b}"
            );
            b
        }
    };
    // JSON: Postgres's EXPLAIN document of the statement the read runs.
    let b = explained(
        "/rest/v1/books?select=title,...authors(name)&id=gt.1",
        "application/vnd.pgrst.plan+json",
        "application/vnd.pgrst.plan+json; for=\"application/json\"; charset=utf-8",
    )
    .await;
    let plan: Value = serde_json::from_str(&b).unwrap();
    assert_eq!(plan[0]["Plan"]["Node Type"], "Aggregate", "{b}");
    assert!(plan[0].get("Execution Time").is_none(), "{b}");
    // Text is the default; `for` names the media type whose statement is explained.
    let b = explained(
        "/rest/v1/books",
        "application/vnd.pgrst.plan",
        "application/vnd.pgrst.plan+text; for=\"application/json\"; charset=utf-8",
    )
    .await;
    assert!(b.starts_with("Aggregate"), "{b}");
    assert!(b.contains("Seq Scan on books"), "{b}");
    let b = explained(
        "/rest/v1/books?id=eq.1",
        "application/vnd.pgrst.plan+text; for=\"application/vnd.pgrst.object+json\"; options=analyze|verbose",
        "application/vnd.pgrst.plan+text; for=\"application/vnd.pgrst.object+json\"; charset=utf-8",
    )
    .await;
    for part in ["actual time=", "Output:", "Execution Time"] {
        assert!(b.contains(part), "{part}: {b}");
    }
    // A media type the request cannot be answered with is still 406.
    let (s, _, b) = get_as(
        &app,
        "/rest/v1/books",
        "application/vnd.pgrst.plan+json; for=\"image/png\"",
    )
    .await;
    assert_eq!(s, StatusCode::NOT_ACCEPTABLE, "{b}");
    // Functions.
    let r = app
        .http
        .post(app.url("/rest/v1/rpc/add"))
        .header("apikey", app.anon_key())
        .header("Accept", "application/vnd.pgrst.plan+json")
        .json(&json!({"a": 1, "b": 2}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let plan: Value = r.json().await.unwrap();
    assert!(plan[0]["Plan"]["Node Type"].is_string(), "{plan}");
    // Writes, analyzed: the statement really runs, and is rolled back.
    fn modify_node(plan: &Value) -> Option<&Value> {
        if plan["Node Type"] == "ModifyTable" {
            return Some(plan);
        }
        plan.get("Plans")?.as_array()?.iter().find_map(modify_node)
    }
    for (method, path, body, rows) in [
        (
            "POST",
            "/rest/v1/authors",
            Some(json!({"name": "Ghost"})),
            1,
        ),
        (
            "PATCH",
            "/rest/v1/books?id=eq.5",
            Some(json!({"title": "Renamed"})),
            1,
        ),
        ("DELETE", "/rest/v1/book_tags?book_id=eq.1", None, 2),
    ] {
        let mut rb = app
            .http
            .request(
                reqwest::Method::from_bytes(method.as_bytes()).unwrap(),
                app.url(path),
            )
            .header("apikey", app.service_key())
            .header("Prefer", "return=representation")
            .header(
                "Accept",
                "application/vnd.pgrst.plan+json; options=analyze|buffers",
            );
        if let Some(b) = body {
            rb = rb.json(&b);
        }
        let r = rb.send().await.unwrap();
        assert_eq!(r.status(), StatusCode::OK, "{method} {path}");
        let plan: Value = r.json().await.unwrap();
        assert!(plan[0].get("Execution Time").is_some(), "{plan}");
        let m = modify_node(&plan[0]["Plan"]).unwrap_or_else(|| panic!("{plan}"));
        assert_eq!(m["Actual Rows"], json!(rows), "{method} {path}: {plan}");
    }
    // Nothing of the analyzed writes persists: no Ghost, book 5 keeps its title, book 1
    // keeps its two tags.
    let row = app
        .db
        .client()
        .await
        .query_one(
            "SELECT (SELECT count(*) FROM authors WHERE name = 'Ghost'),
                    (SELECT title FROM books WHERE id = 5),
                    (SELECT count(*) FROM book_tags WHERE book_id = 1)",
            &[],
        )
        .await
        .unwrap();
    let kept: (i64, String, i64) = (row.get(0), row.get(1), row.get(2));
    assert_eq!(kept, (0, "Orphan".to_string(), 2));
    // An anonymous write is explained as anon: its privileges still apply.
    let r = app
        .http
        .post(app.url("/rest/v1/notes"))
        .header("apikey", app.anon_key())
        .header("Accept", "application/vnd.pgrst.plan+json; options=analyze")
        .json(&json!({"owner": "00000000-0000-4000-8000-000000000001", "body": "x"}))
        .send()
        .await
        .unwrap();
    assert!(r.status().is_client_error(), "{}", r.status());
}

#[tokio::test]
async fn plans_explain_the_statement_on_the_wire_client() {
    plans_explain_the_statement(true).await;
}

#[tokio::test]
async fn plans_explain_the_statement_on_tokio_postgres() {
    plans_explain_the_statement(false).await;
}
