//! Tier 3: the official Supabase client packages (pinned in tests/clients/package.json)
//! run against this build. `make test` runs `npm ci` first; a missing `node_modules` is a
//! failure, never a skip.

use crate::support::TestApp;
use std::path::Path;
use tokio::process::Command;

const FIXTURE: &str = "
CREATE TABLE authors (id serial PRIMARY KEY, name text NOT NULL, born int);
CREATE TABLE books (
  id serial PRIMARY KEY, title text NOT NULL, year int, author_id int REFERENCES authors(id),
  tags text[] DEFAULT '{}', search tsvector GENERATED ALWAYS AS (to_tsvector('english', title)) STORED);
INSERT INTO authors (name, born) VALUES ('Ursula', 1929), ('Terry', 1948), ('Octavia', 1947);
SELECT setval('authors_id_seq', 3);
INSERT INTO books (title, year, author_id, tags) VALUES
  ('The Dispossessed', 1974, 1, '{sf,utopia}'), ('A Wizard of Earthsea', 1968, 1, '{fantasy}'),
  ('Small Gods', 1992, 2, '{fantasy,satire}'), ('Kindred', 1979, 3, '{sf}'), ('Orphan', NULL, NULL, '{}');
CREATE FUNCTION add(a int, b int) RETURNS int LANGUAGE sql IMMUTABLE AS 'SELECT a + b';
CREATE FUNCTION books_after(y int) RETURNS SETOF books LANGUAGE sql STABLE AS 'SELECT * FROM books WHERE year > y';
NOTIFY pgrst, 'reload schema';
";

pub(crate) async fn run_node_suite(app: &TestApp, file: &str) {
    run_node_suite_with(app, file, &[]).await
}

/// `run_node_suite` with more environment for the script.
pub(crate) async fn run_node_suite_with(app: &TestApp, file: &str, env: &[(&str, &str)]) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/clients");
    assert!(
        dir.join("node_modules/@supabase").is_dir(),
        "tests/clients/node_modules is missing: run `make test` (it runs npm ci there)"
    );
    let out = Command::new("node")
        .kill_on_drop(true)
        .arg("--test")
        .arg("--test-timeout=30000")
        // Exit once the tests are done even if a handle (an idle keep-alive socket of a
        // receiver the suite started) would keep the event loop alive: seen once in CI as a
        // file-level timeout after every test had passed.
        .arg("--test-force-exit")
        .arg(file)
        .current_dir(&dir)
        .env("FLUXBASE_URL", &app.base)
        .env("FLUXBASE_ANON_KEY", app.anon_key())
        .env("FLUXBASE_SERVICE_KEY", app.service_key())
        .envs(env.iter().copied())
        .output()
        .await
        .expect("node (20+) must be installed");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{file} failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("# fail 0"), "{stdout}");
    assert!(
        !stdout.contains("# pass 0"),
        "the suite ran no test:\n{stdout}"
    );
}

#[tokio::test]
async fn postgrest_js_against_fluxbase() {
    // `rest.plan_enabled` for the suite's `explain()` test.
    let app = TestApp::spawn_with(|c| c.rest.plan_enabled = true).await;
    // A computed column and a computed relationship for the suite's "computed" test.
    let sql = format!(
        "{FIXTURE}
CREATE FUNCTION shout(books) RETURNS text LANGUAGE sql STABLE AS 'SELECT upper($1.title)';
CREATE FUNCTION author_of(books) RETURNS SETOF authors ROWS 1 LANGUAGE sql STABLE
  AS 'SELECT * FROM authors WHERE id = $1.author_id';"
    );
    app.db.client().await.batch_execute(&sql).await.unwrap();
    let ok = crate::support::eventually(std::time::Duration::from_secs(10), || async {
        !app.state
            .schema
            .get()
            .functions("public", "author_of")
            .is_empty()
    })
    .await;
    assert!(ok, "schema cache never saw the fixture");
    run_node_suite(&app, "postgrest.test.mjs").await;
}

#[tokio::test]
async fn supabase_js_auth_against_fluxbase() {
    let app = TestApp::spawn_with(|c| {
        c.auth.mailer_autoconfirm = true;
        c.auth.secure_password_change = true;
        c.auth.bcrypt_cost = 4;
    })
    .await;
    // The suite reads the mails it causes (invite, reauthentication, email change) from
    // the mail queue through a service_role-only function: no SMTP in this app.
    app.db
        .client()
        .await
        .batch_execute(
            "CREATE FUNCTION whoami() RETURNS uuid LANGUAGE sql STABLE AS 'SELECT auth.uid()';
             CREATE FUNCTION test_last_auth_mail(addr text, mail_kind text) RETURNS jsonb
               LANGUAGE sql STABLE SECURITY DEFINER SET search_path = ''
               AS 'SELECT payload FROM jobs.jobs WHERE queue = ''auth.mail''
                     AND payload->>''to'' = addr AND payload->>''kind'' = mail_kind ORDER BY id DESC LIMIT 1';
             REVOKE ALL ON FUNCTION test_last_auth_mail(text, text) FROM PUBLIC, anon, authenticated;
             GRANT EXECUTE ON FUNCTION test_last_auth_mail(text, text) TO service_role;
             NOTIFY pgrst, 'reload schema';",
        )
        .await
        .unwrap();
    let ok = crate::support::eventually(std::time::Duration::from_secs(10), || async {
        let s = app.state.schema.get();
        !s.functions("public", "whoami").is_empty()
            && !s.functions("public", "test_last_auth_mail").is_empty()
    })
    .await;
    assert!(ok, "schema cache never saw the fixture functions");
    run_node_suite(&app, "auth.test.mjs").await;
}

#[tokio::test]
async fn supabase_js_oauth_against_fluxbase() {
    use crate::support::oauth_provider::{FakeProvider, FakeUser, CLIENT_ID, CLIENT_SECRET};
    let fake = FakeProvider::start();
    fake.set_user(FakeUser::new("7007", "nodey", "nodey@example.test"));
    let base = fake.base.clone();
    let app = TestApp::spawn_with(move |c| {
        c.auth.site_url = "http://app.test".into();
        c.outbound.allow_private_networks = vec!["127.0.0.3/32".into()];
        c.auth.manual_linking_enabled = true;
        let p = |url: String| fluxbase::config::OAuthProviderConfig {
            enabled: true,
            client_id: CLIENT_ID.into(),
            secret: Some(fluxbase::config::Secret::new(CLIENT_SECRET)),
            url,
            ..Default::default()
        };
        c.auth.external.github = p(format!("{base}/github"));
        c.auth.external.oidc = p(format!("{base}/oidc"));
    })
    .await;
    run_node_suite_with(
        &app,
        "auth_oauth.test.mjs",
        &[("FAKE_OAUTH_PROVIDER", fake.base.as_str())],
    )
    .await;
    assert!(fake.refusals().is_empty(), "{:?}", fake.refusals());
}

#[tokio::test]
async fn supabase_js_phone_auth_against_fluxbase() {
    use crate::support::sms_provider::FakeSms;
    let fake = FakeSms::start();
    let f = fake.clone();
    let app = TestApp::spawn_with(move |c| {
        c.auth.bcrypt_cost = 4;
        c.auth.sms.enabled = true;
        c.auth.sms.mfa_enabled = true;
        f.configure(&mut c.auth.sms, "twilio");
        c.outbound.allow_private_networks = vec!["127.0.0.4/32".into()];
        c.jobs.poll_interval_ms = 100;
    })
    .await;
    let mut reg = fluxbase::jobs::Registry::default();
    fluxbase::auth::register_jobs(&mut reg, &app.state);
    let _runner = crate::support::start_runner(&app, reg, false);
    run_node_suite_with(
        &app,
        "auth_phone.test.mjs",
        &[("FAKE_SMS_PROVIDER", fake.base.as_str())],
    )
    .await;
    assert!(fake.refusals().is_empty(), "{:?}", fake.refusals());
}

#[tokio::test]
async fn supabase_js_realtime_against_fluxbase() {
    let app = TestApp::spawn_with(|c| {
        c.auth.mailer_autoconfirm = true;
        c.auth.bcrypt_cost = 4;
    })
    .await;
    app.db
        .client()
        .await
        .batch_execute(
            "CREATE TABLE messages (id serial PRIMARY KEY, room text NOT NULL, body text, meta jsonb);
             CREATE TABLE notes (id serial PRIMARY KEY, owner uuid NOT NULL, body text);
             ALTER TABLE notes ENABLE ROW LEVEL SECURITY;
             CREATE POLICY own ON notes FOR SELECT TO authenticated USING (owner = auth.uid());
             GRANT ALL ON messages, notes TO anon, authenticated, service_role;
             GRANT USAGE ON ALL SEQUENCES IN SCHEMA public TO anon, authenticated, service_role;
             ALTER PUBLICATION supabase_realtime ADD TABLE messages, notes;
             NOTIFY pgrst, 'reload schema';",
        )
        .await
        .unwrap();
    let rt = app.state.realtime.clone().expect("realtime is on");
    let ok = crate::support::eventually(std::time::Duration::from_secs(10), || {
        let rt = rt.clone();
        let schema = app.state.schema.clone();
        async move {
            rt.changes
                .listening
                .load(std::sync::atomic::Ordering::Acquire)
                && schema.get().table("public", "notes").is_some()
        }
    })
    .await;
    assert!(ok, "realtime listener or schema cache never came up");
    run_node_suite(&app, "realtime.test.mjs").await;
}

#[tokio::test]
async fn standard_webhooks_verifies_our_deliveries() {
    let app = TestApp::spawn_with(|c| {
        c.outbound.allow_private_networks = vec!["127.0.0.1/32".into()];
        c.jobs.poll_interval_ms = 100;
    })
    .await;
    app.db
        .client()
        .await
        .batch_execute(
            "CREATE TABLE orders (id int PRIMARY KEY, item text, qty int);
             GRANT ALL ON orders TO anon, authenticated, service_role;
             NOTIFY pgrst, 'reload schema';",
        )
        .await
        .unwrap();
    let ok = crate::support::eventually(std::time::Duration::from_secs(10), || async {
        app.state.schema.get().table("public", "orders").is_some()
    })
    .await;
    assert!(ok, "schema cache never saw orders");
    let mut handlers = fluxbase::jobs::Registry::default();
    fluxbase::webhooks::register_jobs(&mut handlers, app.state.outbound.clone());
    let _runner = crate::support::start_runner(&app, handlers, false);
    run_node_suite(&app, "webhooks.test.mjs").await;
}

#[tokio::test]
async fn tus_js_client_against_fluxbase() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().to_string_lossy().into_owned();
    let app = TestApp::spawn_with(|c| c.storage.local_path = path).await;
    run_node_suite(&app, "storage_tus.test.mjs").await;
}
