// Oracle suite: supabase-js (pinned) signInWithOAuth with the PKCE flow against Fluxbase and
// the fake OAuth provider of tests/it/support/oauth_provider.rs. Started by tests/it/clients.rs
// with github and oidc enabled against the fake; the script plays the browser, following each
// redirect by hand (fetch with redirect: 'manual'). signInWithIdToken gets its token from the
// fake's `native/id_token` endpoint (FAKE_OAUTH_PROVIDER), as an app gets one from a native SDK.
// linkIdentity/unlinkIdentity run with auth.manual_linking_enabled; `login_hint` makes the fake
// sign in a second account (`hint-<login>`), since this script cannot set the fake's user.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createClient } from '@supabase/supabase-js';
import WebSocket from 'ws';
import { createHash } from 'node:crypto';

const url = process.env.FLUXBASE_URL;
const anon = process.env.FLUXBASE_ANON_KEY;
assert.ok(url && anon, 'FLUXBASE_URL and FLUXBASE_ANON_KEY must be set (run through `make test`)');

const client = () =>
  createClient(url, anon, { auth: { flowType: 'pkce', persistSession: false, autoRefreshToken: false, detectSessionInUrl: false }, realtime: { transport: WebSocket } });

/** Plays the browser from the URL signInWithOAuth returned to the app's redirect_to. */
async function browse(startUrl) {
  // skipBrowserRedirect only keeps auth-js from navigating; /authorize still redirects.
  let res = await fetch(startUrl, { redirect: 'manual' });
  assert.equal(res.status, 302);
  const providerUrl = res.headers.get('location');
  res = await fetch(providerUrl, { redirect: 'manual' });
  assert.equal(res.status, 302, 'the provider sends the browser back');
  const callback = res.headers.get('location');
  assert.ok(callback.startsWith(`${url}/auth/v1/callback?`), callback);
  res = await fetch(callback, { redirect: 'manual' });
  assert.equal(res.status, 302);
  return { providerUrl: new URL(providerUrl), landed: new URL(res.headers.get('location')) };
}

test('signInWithOAuth (PKCE) through the provider, exchangeCodeForSession, getUser', async () => {
  const supabase = client();
  const { data, error } = await supabase.auth.signInWithOAuth({
    provider: 'github',
    options: { redirectTo: 'http://app.test/done', skipBrowserRedirect: true },
  });
  assert.equal(error, null);
  const start = new URL(data.url);
  assert.equal(start.searchParams.get('code_challenge_method'), 's256');

  const { providerUrl, landed } = await browse(data.url);
  assert.ok(providerUrl.pathname.endsWith('/github/login/oauth/authorize'), providerUrl.href);
  assert.equal(landed.origin + landed.pathname, 'http://app.test/done');
  const code = landed.searchParams.get('code');
  assert.ok(code, landed.href);
  assert.equal(landed.hash, '', 'PKCE: no tokens in the URL');

  const ex = await supabase.auth.exchangeCodeForSession(code);
  assert.equal(ex.error, null);
  const session = ex.data.session;
  assert.ok(session.access_token);
  assert.ok(session.provider_token, 'the provider token comes with the session');
  assert.equal(session.user.app_metadata.provider, 'github');
  const claims = JSON.parse(Buffer.from(session.access_token.split('.')[1], 'base64url').toString());
  assert.equal(claims.amr[0].method, 'oauth');

  const me = await supabase.auth.getUser();
  assert.equal(me.error, null);
  assert.equal(me.data.user.email, 'nodey@example.test');
  const [identity] = me.data.user.identities;
  assert.equal(identity.provider, 'github');
  assert.equal(identity.identity_data.user_name, 'nodey');
  const ids = await supabase.auth.getUserIdentities();
  assert.equal(ids.error, null);
  assert.deepEqual(ids.data.identities.map((i) => i.provider), ['github']);

  // The code is good once.
  const again = await client().auth.exchangeCodeForSession(code);
  assert.ok(again.error);
});

test('a second provider with the same verified email links to the same user', async () => {
  const first = client();
  let r = await first.auth.signInWithOAuth({ provider: 'github', options: { redirectTo: 'http://app.test/', skipBrowserRedirect: true } });
  let ex = await first.auth.exchangeCodeForSession((await browse(r.data.url)).landed.searchParams.get('code'));
  assert.equal(ex.error, null);
  const userId = ex.data.session.user.id;

  const second = client();
  r = await second.auth.signInWithOAuth({ provider: 'oidc', options: { redirectTo: 'http://app.test/', skipBrowserRedirect: true } });
  const { providerUrl, landed } = await browse(r.data.url);
  assert.ok(providerUrl.searchParams.get('nonce'), 'OIDC requests carry a nonce');
  ex = await second.auth.exchangeCodeForSession(landed.searchParams.get('code'));
  assert.equal(ex.error, null);
  assert.equal(ex.data.session.user.id, userId);
  const me = await second.auth.getUser();
  assert.deepEqual(me.data.user.identities.map((i) => i.provider).sort(), ['github', 'oidc']);
  assert.deepEqual(me.data.user.app_metadata.providers, ['github', 'oidc']);
});

test('a redirect_to off the allow-list lands on the site URL; denied PKCE code exchange errors', async () => {
  const supabase = client();
  const r = await supabase.auth.signInWithOAuth({ provider: 'github', options: { redirectTo: 'https://evil.example/', skipBrowserRedirect: true } });
  const { landed } = await browse(r.data.url);
  assert.equal(landed.origin, 'http://app.test');
  const bad = await supabase.auth.exchangeCodeForSession('not-a-code');
  assert.ok(bad.error);
  assert.equal(bad.data.session, null);
});

test('signInWithIdToken: a native id_token with a hashed nonce signs in; a wrong nonce does not', async () => {
  const fake = process.env.FAKE_OAUTH_PROVIDER;
  assert.ok(fake, 'FAKE_OAUTH_PROVIDER must be set');
  const raw = 'node-raw-nonce';
  const hashed = createHash('sha256').update(raw).digest('hex');
  const res = await fetch(`${fake}/oidc/native/id_token?nonce=${hashed}`);
  assert.equal(res.status, 200);
  const token = await res.text();

  const supabase = client();
  const wrong = await supabase.auth.signInWithIdToken({ provider: 'oidc', token, nonce: 'another' });
  assert.ok(wrong.error);
  assert.equal(wrong.error.status, 400);
  assert.equal(wrong.error.message, 'Nonces mismatch');
  assert.equal(wrong.data.session, null);

  const { data, error } = await supabase.auth.signInWithIdToken({ provider: 'oidc', token, nonce: raw });
  assert.equal(error, null);
  assert.ok(data.session.access_token);
  assert.equal(data.user.email, 'nodey@example.test');
  const claims = JSON.parse(Buffer.from(data.session.access_token.split('.')[1], 'base64url').toString());
  assert.equal(claims.amr[0].method, 'oauth');
  const me = await supabase.auth.getUser();
  assert.equal(me.error, null);
  assert.ok(me.data.user.identities.some((i) => i.provider === 'oidc'), JSON.stringify(me.data.user.identities));
});

/** From the provider URL linkIdentity answered (skipBrowserRedirect) back to redirect_to. */
async function browseFromProvider(providerUrl) {
  let res = await fetch(providerUrl, { redirect: 'manual' });
  assert.equal(res.status, 302, 'the provider sends the browser back');
  const callback = res.headers.get('location');
  assert.ok(callback.startsWith(`${url}/auth/v1/callback?`), callback);
  res = await fetch(callback, { redirect: 'manual' });
  assert.equal(res.status, 302);
  return new URL(res.headers.get('location'));
}

test('linkIdentity (PKCE) makes an anonymous user permanent; getUserIdentities; unlinkIdentity', async () => {
  const fake = process.env.FAKE_OAUTH_PROVIDER;
  const supabase = client();
  const anon = await supabase.auth.signInAnonymously();
  assert.equal(anon.error, null);
  const userId = anon.data.user.id;
  // login_hint makes the fake provider sign in `hint-linky` (linky@example.test).
  const linkTo = async (c, provider) => {
    const r = await c.auth.linkIdentity({
      provider,
      options: { redirectTo: 'http://app.test/linked', skipBrowserRedirect: true, queryParams: { login_hint: 'linky' } },
    });
    assert.equal(r.error, null);
    assert.ok(r.data.url.startsWith(fake), r.data.url);
    return browseFromProvider(r.data.url);
  };

  let landed = await linkTo(supabase, 'oidc');
  assert.equal(landed.origin + landed.pathname, 'http://app.test/linked');
  let ex = await supabase.auth.exchangeCodeForSession(landed.searchParams.get('code'));
  assert.equal(ex.error, null);
  assert.equal(ex.data.session.user.id, userId, 'the same user, now with the identity');
  assert.equal(ex.data.user.is_anonymous, false);
  assert.equal(ex.data.user.email, 'linky@example.test');

  landed = await linkTo(supabase, 'github');
  ex = await supabase.auth.exchangeCodeForSession(landed.searchParams.get('code'));
  assert.equal(ex.error, null);
  assert.equal(ex.data.user.id, userId);
  const ids = await supabase.auth.getUserIdentities();
  assert.equal(ids.error, null);
  assert.deepEqual(ids.data.identities.map((i) => i.provider).sort(), ['github', 'oidc']);

  // Someone else cannot take that identity.
  const other = client();
  assert.equal((await other.auth.signInAnonymously()).error, null);
  landed = await linkTo(other, 'oidc');
  assert.equal(landed.searchParams.get('error_code'), 'identity_already_exists');
  assert.equal(landed.searchParams.get('error_description'), 'Identity is already linked to another user');

  const github = ids.data.identities.find((i) => i.provider === 'github');
  const un = await supabase.auth.unlinkIdentity(github);
  assert.equal(un.error, null);
  const after = await supabase.auth.getUserIdentities();
  assert.deepEqual(after.data.identities.map((i) => i.provider), ['oidc']);
  const last = await supabase.auth.unlinkIdentity(after.data.identities[0]);
  assert.equal(last.error.status, 422);
  assert.equal(last.error.code, 'single_identity_not_deletable');
  const me = await supabase.auth.getUser();
  assert.deepEqual(me.data.user.app_metadata.providers, ['oidc']);
});
