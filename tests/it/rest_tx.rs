//! The REST request transaction when a write commits in the same pipelined round trip as
//! its statement: a failure anywhere (the statement, or the COMMIT itself through a deferred
//! constraint) leaves nothing written, and the pooled connection comes back clean for the
//! next caller (its role and claims are never inherited).

use crate::support::TestApp;
use reqwest::StatusCode;
use serde_json::{json, Value};

const FIXTURE: &str = "
CREATE TABLE dq (id int PRIMARY KEY, k int NOT NULL,
  CONSTRAINT dq_k UNIQUE (k) DEFERRABLE INITIALLY DEFERRED);
CREATE TABLE mine (id serial PRIMARY KEY, owner uuid NOT NULL DEFAULT auth.uid(), body text);
ALTER TABLE mine ENABLE ROW LEVEL SECURITY;
CREATE POLICY own ON mine USING (owner = auth.uid()) WITH CHECK (owner = auth.uid());
GRANT ALL ON dq, mine TO anon, authenticated;
GRANT USAGE ON SEQUENCE mine_id_seq TO authenticated;
CREATE FUNCTION whoami() RETURNS text LANGUAGE sql STABLE
  AS $$ SELECT current_user || ':' || coalesce(auth.uid()::text, '-') $$;
-- A STABLE function that calls a volatile one that writes: Postgres lets it, so only the
-- read-only transaction of a GET stops the write.
CREATE FUNCTION write_inner() RETURNS int LANGUAGE plpgsql VOLATILE
  AS $$ BEGIN INSERT INTO dq VALUES (99, 99); RETURN 1; END $$;
CREATE FUNCTION sneaky_write() RETURNS int LANGUAGE plpgsql STABLE
  AS $$ BEGIN RETURN write_inner(); END $$;
-- A trigger that sets the response status and a header (PostgREST's response settings).
CREATE TABLE trig (id int PRIMARY KEY, v text);
GRANT ALL ON trig TO anon, authenticated;
CREATE FUNCTION trig_says() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  PERFORM set_config('response.status', '202', true);
  PERFORM set_config('response.headers', json_build_array(json_build_object('X-Trig', TG_OP))::text, true);
  RETURN NEW;
END $$;
CREATE TRIGGER trig_says BEFORE INSERT OR UPDATE ON trig FOR EACH ROW EXECUTE FUNCTION trig_says();
-- Changes the role for the whole session, as careless SQL might (`SET ROLE NONE`).
CREATE FUNCTION drop_role() RETURNS text LANGUAGE plpgsql VOLATILE
  AS $$ BEGIN PERFORM set_config('role', 'none', false); RETURN current_user; END $$;
-- The same from GETs (a STABLE function may call set_config): a read leaves the session's
-- role changed, to the login role or to another API role.
CREATE FUNCTION drop_role_read() RETURNS text LANGUAGE plpgsql STABLE
  AS $$ BEGIN PERFORM set_config('role', 'none', false); RETURN current_user; END $$;
CREATE FUNCTION become_anon() RETURNS text LANGUAGE plpgsql STABLE
  AS $$ BEGIN PERFORM set_config('role', 'anon', false); RETURN current_user; END $$;
CREATE TABLE staff_only (id int PRIMARY KEY);
INSERT INTO staff_only VALUES (1);
REVOKE ALL ON staff_only FROM anon, authenticated;
GRANT SELECT ON staff_only TO service_role;
NOTIFY pgrst, 'reload schema';
";

async fn app() -> TestApp {
    app_with(true).await
}

async fn app_with(wire: bool) -> TestApp {
    // One pooled connection, so every request below reuses the one the previous used.
    let app = TestApp::spawn_with(|c| {
        c.database.pool_size = 1;
        c.database.wire = wire;
    })
    .await;
    app.db.client().await.batch_execute(FIXTURE).await.unwrap();
    let ok = crate::support::eventually(std::time::Duration::from_secs(10), || async {
        let s = app.state.schema.get();
        s.table("public", "dq").is_some() && !s.functions("public", "whoami").is_empty()
    })
    .await;
    assert!(ok, "schema cache never saw the fixture");
    app
}

async fn count(app: &TestApp, table: &str) -> i64 {
    let c = app.db.client().await;
    c.query_one(&format!("SELECT count(*) FROM {table}"), &[])
        .await
        .unwrap()
        .get(0)
}

async fn post(
    app: &TestApp,
    path: &str,
    key: &str,
    prefer: &str,
    body: Value,
) -> (StatusCode, Value) {
    let r = reqwest::Client::new()
        .post(app.url(path))
        .header("apikey", key)
        .bearer_auth(key)
        .header("Prefer", prefer)
        .json(&body)
        .send()
        .await
        .unwrap();
    let status = r.status();
    let text = r.text().await.unwrap();
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

#[tokio::test]
async fn a_failing_commit_or_statement_writes_nothing_and_leaves_the_connection_clean() {
    failing_writes_leave_nothing(app().await).await;
}

/// The same outcomes on the four-statement path (`database.wire: false`).
#[tokio::test]
async fn without_the_wire_client_failing_writes_leave_nothing_either() {
    failing_writes_leave_nothing(app_with(false).await).await;
}

async fn failing_writes_leave_nothing(app: TestApp) {
    let service = app.service_key();
    let anon = app.anon_key();

    // The duplicate is only seen at COMMIT (deferred constraint): 409 with Postgres' code,
    // nothing written, for both return preferences.
    for prefer in ["return=minimal", "return=representation"] {
        let (s, b) = post(
            &app,
            "/rest/v1/dq",
            &service,
            prefer,
            json!([{"id": 1, "k": 7}, {"id": 2, "k": 7}]),
        )
        .await;
        assert_eq!(s, StatusCode::CONFLICT, "{prefer}: {b}");
        assert_eq!(b["code"], "23505", "{b}");
        assert_eq!(count(&app, "dq").await, 0, "{prefer}: nothing committed");
    }

    // A statement failing on its second row: 400, the first row not kept either.
    let (s, b) = post(
        &app,
        "/rest/v1/dq",
        &service,
        "return=minimal",
        json!([{"id": 1, "k": 1}, {"id": 2, "k": null}]),
    )
    .await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{b}");
    assert_eq!(b["code"], "23502", "{b}");
    assert_eq!(count(&app, "dq").await, 0);

    // The same single connection then serves a good write and an anonymous read: the
    // failed transactions left no role, claims or open transaction behind.
    let (s, b) = post(
        &app,
        "/rest/v1/dq",
        &service,
        "return=minimal",
        json!({"id": 3, "k": 3}),
    )
    .await;
    assert_eq!(s, StatusCode::CREATED, "{b}");
    assert_eq!(count(&app, "dq").await, 1);
    let r = app
        .get("/rest/v1/rpc/whoami")
        .header("apikey", &anon)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.json::<Value>().await.unwrap(), json!("anon:-"));

    // RLS WITH CHECK on a pipelined write: another user's row is refused and not written;
    // the caller's own row is written with the caller's identity.
    let uid = "6f0c1f5e-3d52-4c1c-9a57-2f4f5a3b0c11";
    let user = app.token(json!({"sub": uid, "role": "authenticated", "exp": 4_000_000_000u64}));
    let (s, b) = post(
        &app,
        "/rest/v1/mine",
        &user,
        "return=minimal",
        json!({"owner": "00000000-0000-0000-0000-000000000001", "body": "x"}),
    )
    .await;
    assert_eq!(s, StatusCode::FORBIDDEN, "{b}");
    assert_eq!(b["code"], "42501", "{b}");
    assert_eq!(count(&app, "mine").await, 0);
    let (s, b) = post(
        &app,
        "/rest/v1/mine",
        &user,
        "return=representation",
        json!({"body": "y"}),
    )
    .await;
    assert_eq!(s, StatusCode::CREATED, "{b}");
    assert_eq!(b[0]["owner"], uid, "{b}");
    assert_eq!(count(&app, "mine").await, 1);

    // A single-object write that matches two rows still decides after the result: 406 and
    // rolled back.
    let r = reqwest::Client::new()
        .post(app.url("/rest/v1/dq"))
        .header("apikey", &service)
        .bearer_auth(&service)
        .header("Prefer", "return=representation")
        .header("Accept", "application/vnd.pgrst.object+json")
        .json(&json!([{"id": 10, "k": 10}, {"id": 11, "k": 11}]))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NOT_ACCEPTABLE);
    assert_eq!(count(&app, "dq").await, 1, "the 406 write was rolled back");
}

#[tokio::test]
async fn reads_run_read_only_and_survive_terminated_connections() {
    reads_read_only_and_terminations(app().await).await;
}

#[tokio::test]
async fn without_the_wire_client_reads_run_read_only_and_survive_terminations() {
    reads_read_only_and_terminations(app_with(false).await).await;
}

async fn reads_read_only_and_terminations(app: TestApp) {
    let service = app.service_key();

    // A GET runs in a read-only transaction even though no BEGIN READ ONLY is sent (the
    // setup statement makes the implicit transaction read-only): a stable function that
    // calls a writing one cannot write through it.
    let r = app
        .get("/rest/v1/rpc/sneaky_write")
        .header("apikey", &service)
        .bearer_auth(&service)
        .send()
        .await
        .unwrap();
    let status = r.status();
    let b: Value = r.json().await.unwrap();
    assert_eq!(b["code"], "25006", "{status} {b}");
    assert_eq!(count(&app, "dq").await, 0, "nothing written by a GET");
    // The same function through POST (a read-write transaction) does write.
    let (s, b) = post(&app, "/rest/v1/rpc/sneaky_write", &service, "", json!({})).await;
    assert_eq!(s, StatusCode::OK, "{b}");
    assert_eq!(count(&app, "dq").await, 1);

    // The server's connections are terminated under it (a failover, an admin's
    // pg_terminate_backend): the idle pooled connection is noticed dead at checkout and
    // replaced, so requests keep succeeding.
    for round in 0..3 {
        let c = app.db.client().await;
        let killed: i64 = c
            .query_one(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity
                 WHERE datname = current_database() AND pid <> pg_backend_pid()
                   AND backend_type = 'client backend'",
                &[],
            )
            .await
            .unwrap()
            .get(0);
        assert!(
            killed > 0,
            "round {round}: no server connection to terminate"
        );
        // Let the terminations arrive before the next checkout (not a timing assertion).
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
        let r = app
            .get("/rest/v1/rpc/whoami")
            .header("apikey", app.anon_key())
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::OK, "round {round}");
        assert_eq!(r.json::<Value>().await.unwrap(), json!("anon:-"));
    }
}

#[tokio::test]
async fn a_role_left_on_the_connection_is_never_inherited() {
    role_never_inherited(app().await).await;
}

#[tokio::test]
async fn without_the_wire_client_a_role_left_behind_is_never_inherited() {
    role_never_inherited(app_with(false).await).await;
}

/// The wire client keeps the last role on its connection for the session and replaces it
/// when the next request's differs; whatever a request leaves behind (another role, no role
/// at all after a function's `SET ROLE NONE`, a failed transaction), the next request on the
/// single pooled connection runs as its own role.
async fn role_never_inherited(app: TestApp) {
    let service = app.service_key();
    let anon = app.anon_key();
    let uid = "00000000-0000-0000-0000-00000000000a";
    let user = app.token(json!({"sub": uid, "role": "authenticated", "exp": 4_000_000_000u64}));
    let whoami = |key: String| {
        let app = &app;
        async move {
            let r = app
                .get("/rest/v1/rpc/whoami")
                .header("apikey", &key)
                .bearer_auth(&key)
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), StatusCode::OK);
            r.json::<Value>().await.unwrap()
        }
    };
    assert_eq!(whoami(service.clone()).await, json!("service_role:-"));
    assert_eq!(whoami(anon.clone()).await, json!("anon:-"));
    assert_eq!(
        whoami(user.clone()).await,
        json!(format!("authenticated:{uid}"))
    );
    assert_eq!(
        whoami(user.clone()).await,
        json!(format!("authenticated:{uid}"))
    );
    assert_eq!(whoami(anon.clone()).await, json!("anon:-"));

    // A function drops the role for the session: the connection now runs as the superuser it
    // logged in as. The next request still runs as its own role.
    let (s, b) = post(&app, "/rest/v1/rpc/drop_role", &anon, "", json!({})).await;
    assert_eq!(s, StatusCode::OK, "{b}");
    assert_ne!(b, json!("anon"), "the function did drop the role");
    assert_eq!(whoami(anon.clone()).await, json!("anon:-"));
    let (s, _) = post(&app, "/rest/v1/rpc/drop_role", &user, "", json!({})).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(
        whoami(user.clone()).await,
        json!(format!("authenticated:{uid}"))
    );

    // A failed request as service_role (its role change rolled back with it), then anon.
    let (s, _) = post(
        &app,
        "/rest/v1/dq",
        &service,
        "return=minimal",
        json!([{"id": 1, "k": 1}, {"id": 1, "k": 2}]),
    )
    .await;
    assert_eq!(s, StatusCode::CONFLICT);
    assert_eq!(whoami(anon.clone()).await, json!("anon:-"));
    // Reads and writes as anon after a service_role request see anon's privileges: RLS on
    // `mine` hides the row a user wrote.
    let (s, b) = post(
        &app,
        "/rest/v1/mine",
        &user,
        "return=minimal",
        json!({"body": "u"}),
    )
    .await;
    assert_eq!(s, StatusCode::CREATED, "{b}");
    assert_eq!(whoami(service.clone()).await, json!("service_role:-"));
    let r = app
        .get("/rest/v1/mine?select=body")
        .header("apikey", &anon)
        .send()
        .await
        .unwrap();
    assert_eq!(r.json::<Value>().await.unwrap(), json!([]));
}

#[tokio::test]
async fn a_role_changed_by_a_read_is_never_inherited() {
    role_changed_by_read(app().await).await;
}

#[tokio::test]
async fn without_the_wire_client_a_role_changed_by_a_read_is_never_inherited() {
    role_changed_by_read(app_with(false).await).await;
}

/// The wire client runs a read and its setup as one statement when it believes it knows the
/// connection's role; a read that changed the role for the session breaks that belief. The
/// next read must neither be refused for privileges the changed role lacks nor be answered
/// with privileges the request's role lacks.
async fn role_changed_by_read(app: TestApp) {
    let service = app.service_key();
    let anon = app.anon_key();
    let get = |path: &'static str, key: String| {
        let app = &app;
        async move {
            let r = app
                .get(path)
                .header("apikey", &key)
                .bearer_auth(&key)
                .send()
                .await
                .unwrap();
            let status = r.status();
            (status, r.json::<Value>().await.unwrap())
        }
    };
    assert_eq!(
        get("/rest/v1/staff_only", service.clone()).await,
        (StatusCode::OK, json!([{"id": 1}]))
    );
    // service_role's session now runs as anon, which may not read staff_only.
    assert_eq!(
        get("/rest/v1/rpc/become_anon", service.clone()).await,
        (StatusCode::OK, json!("anon"))
    );
    assert_eq!(
        get("/rest/v1/staff_only", service.clone()).await,
        (StatusCode::OK, json!([{"id": 1}]))
    );
    // anon's session now runs as the login role, which may read everything.
    let (s, b) = get("/rest/v1/rpc/drop_role_read", anon.clone()).await;
    assert_eq!(s, StatusCode::OK, "{b}");
    assert_ne!(b, json!("anon"), "the function did drop the role");
    let (s, b) = get("/rest/v1/staff_only", anon.clone()).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED, "{b}");
    assert_eq!(b["code"], json!("42501"), "{b}");
    assert_eq!(
        get("/rest/v1/rpc/whoami", anon.clone()).await,
        (StatusCode::OK, json!("anon:-"))
    );
    let (s, _) = get("/rest/v1/rpc/drop_role_read", anon.clone()).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(
        get("/rest/v1/rpc/whoami", anon.clone()).await,
        (StatusCode::OK, json!("anon:-"))
    );
}

/// A function reading a request setting by a name it builds at run time, so that reading it
/// does not make the database name it.
const DYNAMIC_SETTING: &str = "
CREATE FUNCTION dyn_setting(name text) RETURNS text LANGUAGE sql STABLE
  AS $$ SELECT current_setting('request.' || name, true) $$;
NOTIFY pgrst, 'reload schema';
";

async fn dyn_setting(app: &TestApp, name: &str) -> Value {
    let anon = app.anon_key();
    let r = app
        .get(&format!("/rest/v1/rpc/dyn_setting?name={name}"))
        .header("apikey", &anon)
        .header("cookie", "sid=abc")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    r.json::<Value>().await.unwrap()
}

async fn wait_for_function(app: &TestApp, name: &str) {
    let ok = crate::support::eventually(std::time::Duration::from_secs(10), || async {
        !app.state.schema.get().functions("public", name).is_empty()
    })
    .await;
    assert!(ok, "schema cache never saw {name}");
}

/// `request.method`, `request.path`, `request.headers` and `request.cookies` are published
/// only when some SQL of the database names them (each costs Postgres a `set_config` per
/// request); `rest.request_settings_always` publishes them whatever the SQL. On both the
/// wire client and tokio-postgres, reads and writes.
#[tokio::test]
async fn optional_request_settings_are_published_when_sql_names_them() {
    for wire in [true, false] {
        let app = app_with(wire).await;
        app.db
            .client()
            .await
            .batch_execute(DYNAMIC_SETTING)
            .await
            .unwrap();
        wait_for_function(&app, "dyn_setting").await;
        for name in ["method", "path", "headers", "cookies"] {
            assert_eq!(
                dyn_setting(&app, name).await,
                Value::Null,
                "{name} (wire: {wire})"
            );
        }
        let claims: Value =
            serde_json::from_str(dyn_setting(&app, "jwt.claims").await.as_str().unwrap()).unwrap();
        assert_eq!(claims["role"], json!("anon"), "claims are always published");

        // A policy naming two of them, and a function naming another.
        app.db
            .client()
            .await
            .batch_execute(
                "CREATE POLICY by_header ON mine USING (current_setting('request.headers', true)                  IS NOT NULL OR current_setting('Request.Cookies', true) IS NOT NULL);
                 CREATE FUNCTION where_am_i() RETURNS text LANGUAGE plpgsql STABLE
                   AS $$ BEGIN RETURN current_setting('request.path', true); END $$;
                 NOTIFY pgrst, 'reload schema';",
            )
            .await
            .unwrap();
        wait_for_function(&app, "where_am_i").await;
        assert_eq!(dyn_setting(&app, "method").await, Value::Null);
        assert_eq!(dyn_setting(&app, "path").await, json!("/rpc/dyn_setting"));
        let headers: Value =
            serde_json::from_str(dyn_setting(&app, "headers").await.as_str().unwrap()).unwrap();
        assert_eq!(headers["cookie"], json!("sid=abc"), "{headers}");
        assert_eq!(
            dyn_setting(&app, "cookies").await,
            json!(r#"{"sid":"abc"}"#)
        );
        // A write publishes the same ones.
        let (s, b) = post(
            &app,
            "/rest/v1/rpc/dyn_setting",
            &app.anon_key(),
            "",
            json!({"name": "path"}),
        )
        .await;
        assert_eq!((s, b), (StatusCode::OK, json!("/rpc/dyn_setting")));
    }
    let app = TestApp::spawn_with(|c| c.rest.request_settings_always = true).await;
    app.db
        .client()
        .await
        .batch_execute(DYNAMIC_SETTING)
        .await
        .unwrap();
    wait_for_function(&app, "dyn_setting").await;
    assert_eq!(dyn_setting(&app, "method").await, json!("GET"));
    assert_eq!(dyn_setting(&app, "path").await, json!("/rpc/dyn_setting"));
    assert_eq!(
        dyn_setting(&app, "cookies").await,
        json!(r#"{"sid":"abc"}"#)
    );
}

/// Sets `response.status` under a name built at run time, which the scan of the database's
/// SQL cannot see: from a function (reads) and from a trigger (a plain `return=minimal`
/// insert, whose settings are read by a statement of their own).
const DYNAMIC_RESPONSE: &str = "
CREATE FUNCTION dyn_status(code text) RETURNS int LANGUAGE plpgsql STABLE
  AS $$ BEGIN PERFORM set_config('response.' || 'status', code, true); RETURN 1; END $$;
CREATE TABLE dyn_rows (id int PRIMARY KEY);
CREATE FUNCTION dyn_rows_status() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN PERFORM set_config('response.' || 'status', '202', true); RETURN NEW; END $$;
CREATE TRIGGER dyn_rows_status BEFORE INSERT ON dyn_rows
  FOR EACH ROW EXECUTE FUNCTION dyn_rows_status();
GRANT ALL ON dyn_rows TO anon;
NOTIFY pgrst, 'reload schema';
";

/// The statuses a read (`GET /rpc/dyn_status?code=201`) and a plain insert into `dyn_rows`
/// answer with.
async fn dyn_statuses(app: &TestApp, id: i32) -> (StatusCode, StatusCode) {
    let anon = app.anon_key();
    let r = app
        .get("/rest/v1/rpc/dyn_status?code=201")
        .header("apikey", &anon)
        .send()
        .await
        .unwrap();
    let read = r.status();
    assert_eq!(r.json::<Value>().await.unwrap(), json!(1));
    let (write, _) = post(
        app,
        "/rest/v1/dyn_rows",
        &anon,
        "return=minimal",
        json!({ "id": id }),
    )
    .await;
    (read, write)
}

/// `response.status`/`response.headers` are read back only when some SQL of the database
/// names them (or `rest.request_settings_always`): a database whose SQL never does can't
/// set them, and the reads cost Postgres two `current_setting` calls per request, a whole
/// statement after a plain write. A name built at run time is the documented blind spot.
#[tokio::test]
async fn response_settings_are_read_when_sql_names_them() {
    for wire in [true, false] {
        let app = TestApp::spawn_with(|c| c.database.wire = wire).await;
        let db = app.db.client().await;
        db.batch_execute(DYNAMIC_RESPONSE).await.unwrap();
        wait_for_function(&app, "dyn_status").await;
        assert!(app.state.schema.get().response_settings_unnamed);
        assert_eq!(
            dyn_statuses(&app, 1).await,
            (StatusCode::OK, StatusCode::CREATED),
            "nothing names the settings: not read (wire: {wire})"
        );
        db.batch_execute(
            "CREATE FUNCTION teapot() RETURNS int LANGUAGE sql
               AS $$ SELECT set_config('response.status', '418', true)::int $$;
             NOTIFY pgrst, 'reload schema';",
        )
        .await
        .unwrap();
        wait_for_function(&app, "teapot").await;
        assert!(!app.state.schema.get().response_settings_unnamed);
        assert_eq!(
            dyn_statuses(&app, 2).await,
            (StatusCode::CREATED, StatusCode::ACCEPTED),
            "a function names them: read (wire: {wire})"
        );
        let c = db
            .query_one("SELECT count(*) FROM dyn_rows", &[])
            .await
            .unwrap();
        assert_eq!(c.get::<_, i64>(0), 2, "both inserts committed");
    }
    let app = TestApp::spawn_with(|c| c.rest.request_settings_always = true).await;
    app.db
        .client()
        .await
        .batch_execute(DYNAMIC_RESPONSE)
        .await
        .unwrap();
    wait_for_function(&app, "dyn_status").await;
    assert_eq!(
        dyn_statuses(&app, 1).await,
        (StatusCode::CREATED, StatusCode::ACCEPTED),
        "rest.request_settings_always reads them whatever the SQL"
    );
}

/// Query-string arguments are bound one by one and cast to their types; JSON bodies go
/// through `json_to_record`. Both must give a function the same values and the same errors.
#[tokio::test]
async fn query_string_arguments_arrive_as_json_body_strings_do() {
    let app = app().await;
    app.db
        .client()
        .await
        .batch_execute(
            "CREATE DOMAIN posint AS int CHECK (VALUE > 0);
             CREATE FUNCTION echo_args(a int, b text, c int[], d posint DEFAULT 1, e date DEFAULT NULL)
               RETURNS json LANGUAGE sql STABLE
               AS $$ SELECT json_build_object('a', a, 'b', b, 'c', c, 'd', d, 'e', e) $$;
             NOTIFY pgrst, 'reload schema';",
        )
        .await
        .unwrap();
    wait_for_function(&app, "echo_args").await;
    let key = app.anon_key();
    let get = |q: &'static str| {
        let app = &app;
        let key = key.clone();
        async move {
            let r = app
                .get(&format!("/rest/v1/rpc/echo_args?{q}"))
                .header("apikey", &key)
                .send()
                .await
                .unwrap();
            (r.status(), r.json::<Value>().await.unwrap())
        }
    };
    let cases = [
        (
            "a=1&b=x%20y&c=%7B1,2%7D&d=3&e=2024-01-02",
            json!({"a": "1", "b": "x y", "c": "{1,2}", "d": "3", "e": "2024-01-02"}),
        ),
        ("a=7&b=&c=%7B%7D", json!({"a": "7", "b": "", "c": "{}"})),
        ("a=x&b=b&c=%7B%7D", json!({"a": "x", "b": "b", "c": "{}"})),
        (
            "a=1&b=b&c=%7B%7D&d=0",
            json!({"a": "1", "b": "b", "c": "{}", "d": "0"}),
        ),
    ];
    let mut statuses = Vec::new();
    for (q, body) in cases {
        let (gs, gb) = get(q).await;
        let (ps, pb) = post(&app, "/rest/v1/rpc/echo_args", &key, "", body).await;
        assert_eq!((gs, &gb), (ps, &pb), "{q}");
        statuses.push((gs.as_u16(), gb.get("code").cloned()));
    }
    assert_eq!(
        statuses,
        vec![
            (200, None),
            (200, None),
            (400, Some(json!("22P02"))),
            (400, Some(json!("23514"))),
        ]
    );
    let (_, b) = get("a=1&b=x%20y&c=%7B1,2%7D&d=3&e=2024-01-02").await;
    assert_eq!(
        b,
        json!({"a": 1, "b": "x y", "c": [1, 2], "d": 3, "e": "2024-01-02"})
    );
}

/// Writes answering only their row count run as the plain DML on the wire client (its
/// command tag counts the rows; a trailing read gets the response settings). They must
/// answer exactly as the CTE statement of the four-statement path does.
#[tokio::test]
async fn plain_writes_answer_as_the_cte_statement_does() {
    let wire = app().await;
    let classic = app_with(false).await;
    async fn run(app: &TestApp) -> Vec<String> {
        let key = app.service_key();
        let mut seen = Vec::new();
        let reqs: Vec<(reqwest::Method, &str, &str, Option<Value>)> = vec![
            (
                reqwest::Method::POST,
                "/rest/v1/dq",
                "return=minimal",
                Some(json!([{"id": 1, "k": 1}, {"id": 2, "k": 2}, {"id": 3, "k": 3}])),
            ),
            (
                reqwest::Method::POST,
                "/rest/v1/dq",
                "",
                Some(json!({"id": 4, "k": 4})),
            ),
            (
                reqwest::Method::POST,
                "/rest/v1/dq",
                "return=minimal",
                Some(json!([])),
            ),
            (
                reqwest::Method::POST,
                "/rest/v1/dq?on_conflict=id",
                "return=minimal,resolution=ignore-duplicates",
                Some(json!([{"id": 1, "k": 9}, {"id": 5, "k": 5}])),
            ),
            (
                reqwest::Method::PATCH,
                "/rest/v1/dq?id=eq.2",
                "return=minimal",
                Some(json!({"k": 20})),
            ),
            (
                reqwest::Method::PATCH,
                "/rest/v1/dq?id=gte.2",
                "return=minimal,count=exact",
                Some(json!({"id": 2})),
            ),
            (
                reqwest::Method::PATCH,
                "/rest/v1/dq?id=eq.99",
                "",
                Some(json!({"k": 1})),
            ),
            (
                reqwest::Method::DELETE,
                "/rest/v1/dq?id=gt.3",
                "return=minimal",
                None,
            ),
            (
                reqwest::Method::POST,
                "/rest/v1/trig",
                "return=minimal",
                Some(json!({"id": 1, "v": "a"})),
            ),
            (
                reqwest::Method::PATCH,
                "/rest/v1/trig?id=eq.1",
                "",
                Some(json!({"v": "b"})),
            ),
            (
                reqwest::Method::POST,
                "/rest/v1/dq",
                "return=minimal",
                Some(json!({"id": 1, "k": 1})),
            ),
        ];
        for (method, path, prefer, body) in reqs {
            let mut r = app
                .http
                .request(method.clone(), app.url(path))
                .header("apikey", &key)
                .bearer_auth(&key);
            if !prefer.is_empty() {
                r = r.header("Prefer", prefer);
            }
            if let Some(b) = body {
                r = r.json(&b);
            }
            let r = r.send().await.unwrap();
            let h = |n: &str| {
                r.headers()
                    .get(n)
                    .map(|v| v.to_str().unwrap().to_string())
                    .unwrap_or_default()
            };
            let line = format!(
                "{method} {path} [{prefer}] -> {} range={} applied={} trig={}",
                r.status(),
                h("content-range"),
                h("preference-applied"),
                h("x-trig"),
            );
            let body = r.text().await.unwrap();
            // Error bodies are compared by code only (messages may name the statement).
            let body = match serde_json::from_str::<Value>(&body) {
                Ok(v) if v.get("code").is_some() => format!("code={}", v["code"]),
                _ => body,
            };
            seen.push(format!("{line} body={body}"));
        }
        let c = app.db.client().await;
        let rows: Vec<(i32, i32)> = c
            .query("SELECT id, k FROM dq ORDER BY id", &[])
            .await
            .unwrap()
            .iter()
            .map(|r| (r.get(0), r.get(1)))
            .collect();
        seen.push(format!("dq={rows:?}"));
        seen
    }
    let a = run(&wire).await;
    let b = run(&classic).await;
    assert_eq!(a, b);
    // And the outcomes are the expected ones, not merely equal.
    assert!(a[0].contains("-> 201 Created range=0-2/*"), "{}", a[0]);
    assert!(
        a[3].contains("range=0-0/*"),
        "one row of two inserted: {}",
        a[3]
    );
    assert!(a[4].contains("-> 204 No Content range=0-0/*"), "{}", a[4]);
    assert!(a[5].contains("-> 409"), "a duplicate key: {}", a[5]);
    assert!(a[7].contains("range=0-1/*"), "two rows deleted: {}", a[7]);
    assert!(
        a[8].contains("-> 202 Accepted") && a[8].contains("trig=INSERT"),
        "{}",
        a[8]
    );
    assert!(a[9].contains("trig=UPDATE"), "{}", a[9]);
    assert!(
        a[10].contains("-> 409") && a[10].contains("23505"),
        "{}",
        a[10]
    );
    assert_eq!(a[11], "dq=[(1, 1), (2, 20), (3, 3)]");
}

const PRE_REQUEST: &str = "
CREATE TABLE pre_items (id int PRIMARY KEY);
INSERT INTO pre_items VALUES (1);
CREATE TABLE pre_log (n int);
GRANT ALL ON pre_items, pre_log TO anon, authenticated;
-- Refuses a request carrying `x-block: yes`, writes when asked to (`x-log: yes`), and
-- reports who it ran as, whether read-only, and the claims' role.
CREATE FUNCTION pre_check() RETURNS void LANGUAGE plpgsql AS $$
BEGIN
  IF current_setting('request.headers', true)::json->>'x-block' = 'yes' THEN
    RAISE SQLSTATE 'PGRST' USING
      message = '{\"code\":\"BLOCKED\",\"message\":\"blocked by the pre-request\"}',
      detail = '{\"status\":403,\"headers\":{\"X-Why\":\"pre\"}}';
  END IF;
  IF current_setting('request.headers', true)::json->>'x-log' = 'yes' THEN
    INSERT INTO pre_log VALUES (1);
  END IF;
  PERFORM set_config('response.headers', json_build_array(json_build_object('X-Pre',
    current_user || ':' || current_setting('transaction_read_only') || ':' ||
    coalesce(current_setting('request.jwt.claims', true)::json->>'role', '-')))::text, true);
END $$;
GRANT EXECUTE ON FUNCTION pre_check() TO anon, authenticated;
NOTIFY pgrst, 'reload schema';
";

/// `rest.pre_request` (PostgREST's `db-pre-request`) runs in every REST request's
/// transaction after the role, the claims, the request settings and read-only mode are set
/// and before the statement: it sees them all, may set response headers, and its error
/// refuses the request with nothing written. On the wire client (one pipeline, reads not
/// merged) and on tokio-postgres, and on the two-step path (`Prefer: tx=rollback`).
#[tokio::test]
async fn pre_request_runs_after_the_setup_and_can_refuse() {
    for wire in [true, false] {
        let app = TestApp::spawn_with(|c| {
            c.database.pool_size = 1;
            c.database.wire = wire;
            c.rest.pre_request = "public.pre_check".into();
        })
        .await;
        app.db
            .client()
            .await
            .batch_execute(PRE_REQUEST)
            .await
            .unwrap();
        wait_for_function(&app, "pre_check").await;
        let key = app.anon_key();
        let http = reqwest::Client::new();
        let send =
            |method: reqwest::Method, path: &str, headers: &[(&str, &str)], body: Option<Value>| {
                let mut r = http
                    .request(method, app.url(path))
                    .header("apikey", &key)
                    .bearer_auth(&key);
                for (k, v) in headers {
                    r = r.header(*k, *v);
                }
                if let Some(b) = body {
                    r = r.json(&b);
                }
                r.send()
            };
        let pre = |r: &reqwest::Response| {
            r.headers()
                .get("x-pre")
                .and_then(|v| v.to_str().ok())
                .map(str::to_string)
        };

        let r = send(
            reqwest::Method::GET,
            "/rest/v1/pre_items?id=eq.1",
            &[],
            None,
        )
        .await
        .unwrap();
        assert_eq!(r.status(), StatusCode::OK, "wire: {wire}");
        assert_eq!(
            pre(&r).as_deref(),
            Some("anon:on:anon"),
            "a read (wire: {wire})"
        );
        assert_eq!(r.json::<Value>().await.unwrap(), json!([{"id": 1}]));

        let r = send(
            reqwest::Method::POST,
            "/rest/v1/pre_items",
            &[("Prefer", "return=minimal")],
            Some(json!({"id": 2})),
        )
        .await
        .unwrap();
        assert_eq!(r.status(), StatusCode::CREATED, "wire: {wire}");
        assert_eq!(
            pre(&r).as_deref(),
            Some("anon:off:anon"),
            "a write (wire: {wire})"
        );

        // Refused: the pre-request's error is the answer, and nothing is written.
        for (method, path, body, prefer) in [
            (reqwest::Method::GET, "/rest/v1/pre_items", None, ""),
            (
                reqwest::Method::POST,
                "/rest/v1/pre_items",
                Some(json!({"id": 3})),
                "return=minimal",
            ),
            (
                reqwest::Method::PATCH,
                "/rest/v1/pre_items?id=eq.1",
                Some(json!({"id": 4})),
                "tx=rollback",
            ),
        ] {
            let r = send(
                method.clone(),
                path,
                &[("x-block", "yes"), ("Prefer", prefer)],
                body,
            )
            .await
            .unwrap();
            assert_eq!(r.status(), StatusCode::FORBIDDEN, "{method} (wire: {wire})");
            assert_eq!(
                r.headers().get("x-why").and_then(|v| v.to_str().ok()),
                Some("pre"),
                "{method} (wire: {wire})"
            );
            let body: Value = r.json().await.unwrap();
            assert_eq!(body["code"], "BLOCKED", "{method} (wire: {wire}): {body}");
        }
        assert_eq!(count(&app, "pre_items WHERE id IN (3, 4)").await, 0);

        // A read's pre-request runs read-only: its write fails the request.
        let r = send(
            reqwest::Method::GET,
            "/rest/v1/pre_items",
            &[("x-log", "yes")],
            None,
        )
        .await
        .unwrap();
        assert_eq!(r.status(), StatusCode::METHOD_NOT_ALLOWED, "wire: {wire}");
        let body: Value = r.json().await.unwrap();
        assert_eq!(body["code"], "25006", "wire: {wire}: {body}");
        assert_eq!(count(&app, "pre_log").await, 0);

        // The two-step path runs it too (tx=rollback: the write is undone, the header kept).
        let r = send(
            reqwest::Method::PATCH,
            "/rest/v1/pre_items?id=eq.2",
            &[("Prefer", "tx=rollback")],
            Some(json!({"id": 5})),
        )
        .await
        .unwrap();
        assert!(r.status().is_success(), "{} (wire: {wire})", r.status());
        assert_eq!(
            pre(&r).as_deref(),
            Some("anon:off:anon"),
            "tx=rollback (wire: {wire})"
        );
        assert_eq!(count(&app, "pre_items WHERE id = 5").await, 0);
    }
}

/// A malformed `rest.pre_request` is a configuration error, not a failure per request.
#[test]
fn pre_request_must_be_a_function_name() {
    for bad in ["a.b.c", ".f", "s.", "\"s\".f"] {
        let mut c = fluxbase::config::Config::default();
        c.rest.pre_request = bad.into();
        assert!(
            c.validate().iter().any(|p| p.contains("rest.pre_request")),
            "{bad:?} accepted"
        );
    }
    let mut c = fluxbase::config::Config::default();
    c.rest.pre_request = "public.check".into();
    assert!(!c.validate().iter().any(|p| p.contains("rest.pre_request")));
    assert_eq!(
        c.rest.pre_request_sql().as_deref(),
        Some("SELECT \"public\".\"check\"()")
    );
}
