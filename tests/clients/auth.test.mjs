// Oracle suite: the official @supabase/supabase-js (pinned) auth client against Fluxbase.
// Started by tests/it/clients.rs with an app whose mailer_autoconfirm is on.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createClient } from '@supabase/supabase-js';
import WebSocket from 'ws';
import { createHmac } from 'node:crypto';

const url = process.env.FLUXBASE_URL;
const anon = process.env.FLUXBASE_ANON_KEY;
const service = process.env.FLUXBASE_SERVICE_KEY;
assert.ok(url && anon && service, 'FLUXBASE_URL and keys must be set (run through `make test`)');

const opts = { auth: { persistSession: false, autoRefreshToken: false }, realtime: { transport: WebSocket } };
const client = () => createClient(url, anon, opts);
const admin = createClient(url, service, opts);

test('sign up, sign in, get and update the user, refresh, sign out', async () => {
  const supabase = client();
  const email = `ada+${Date.now()}@example.test`;
  let r = await supabase.auth.signUp({ email, password: 'correct horse', options: { data: { name: 'Ada' } } });
  assert.equal(r.error, null);
  assert.ok(r.data.session?.access_token, 'autoconfirm gives a session');
  assert.equal(r.data.user.email, email);
  assert.equal(r.data.user.user_metadata.name, 'Ada');

  r = await supabase.auth.signInWithPassword({ email, password: 'wrong password' });
  assert.equal(r.data.session, null);
  assert.equal(r.error.code, 'invalid_credentials');
  assert.equal(r.error.status, 400);

  r = await supabase.auth.signInWithPassword({ email, password: 'correct horse' });
  assert.equal(r.error, null);
  const first = r.data.session;
  assert.equal(first.token_type, 'bearer');
  assert.equal(first.user.app_metadata.provider, 'email');
  assert.ok(first.expires_at > Date.now() / 1000);

  const me = await supabase.auth.getUser();
  assert.equal(me.error, null);
  assert.equal(me.data.user.email, email);

  const upd = await supabase.auth.updateUser({ data: { name: 'Ada L.', lang: 'en' } });
  assert.equal(upd.error, null);
  assert.deepEqual({ name: upd.data.user.user_metadata.name, lang: upd.data.user.user_metadata.lang }, { name: 'Ada L.', lang: 'en' });

  const ref = await supabase.auth.refreshSession();
  assert.equal(ref.error, null);
  assert.notEqual(ref.data.session.refresh_token, first.refresh_token, 'refresh tokens rotate');

  const out = await supabase.auth.signOut();
  assert.equal(out.error, null);
  // The old access token's session is gone: /user refuses it.
  const headers = { apikey: anon, Authorization: `Bearer ${ref.data.session.access_token}` };
  let res = await fetch(`${url}/auth/v1/user`, { headers: { ...headers, 'X-Supabase-Api-Version': '2024-01-01' } });
  assert.equal(res.status, 403);
  assert.equal(res.headers.get('x-sb-error-code'), 'session_not_found');
  assert.equal((await res.json()).code, 'session_not_found');
  // Without the version header: GoTrue's legacy error shape.
  res = await fetch(`${url}/auth/v1/user`, { headers });
  const legacy = await res.json();
  assert.deepEqual([legacy.code, legacy.error_code], [403, 'session_not_found']);
});

test('weak passwords and duplicate users carry GoTrue codes', async () => {
  const supabase = client();
  let r = await supabase.auth.signUp({ email: `weak${Date.now()}@example.test`, password: '123' });
  assert.equal(r.error.code, 'weak_password');
  const email = `dup${Date.now()}@example.test`;
  r = await supabase.auth.signUp({ email, password: 'long enough' });
  assert.equal(r.error, null);
  r = await supabase.auth.signUp({ email, password: 'long enough' });
  assert.equal(r.error.code, 'user_already_exists');
});

test('anonymous sign-in', async () => {
  const supabase = client();
  const r = await supabase.auth.signInAnonymously();
  assert.equal(r.error, null);
  assert.equal(r.data.user.is_anonymous, true);
  const claims = JSON.parse(Buffer.from(r.data.session.access_token.split('.')[1], 'base64url').toString());
  assert.equal(claims.is_anonymous, true);
  assert.equal(claims.role, 'authenticated');
});

test('the session works against REST (RLS sees the user)', async () => {
  const supabase = client();
  const email = `rls${Date.now()}@example.test`;
  const { data } = await supabase.auth.signUp({ email, password: 'long enough' });
  const { data: rows, error } = await supabase.rpc('whoami');
  assert.equal(error, null);
  assert.equal(rows, data.user.id);
});

test('admin: create, list with paging, update, delete', async () => {
  const created = [];
  for (let i = 0; i < 3; i++) {
    const r = await admin.auth.admin.createUser({ email: `admin${i}-${Date.now()}@example.test`, password: 'long enough', email_confirm: true, user_metadata: { i } });
    assert.equal(r.error, null);
    created.push(r.data.user);
  }
  const page = await admin.auth.admin.listUsers({ page: 1, perPage: 2 });
  assert.equal(page.error, null);
  assert.equal(page.data.users.length, 2);
  assert.ok(page.data.total >= 3, `total ${page.data.total}`);
  assert.equal(page.data.nextPage, 2);
  assert.ok(page.data.lastPage >= 2);
  const got = await admin.auth.admin.getUserById(created[0].id);
  assert.equal(got.data.user.email, created[0].email);
  const upd = await admin.auth.admin.updateUserById(created[0].id, { user_metadata: { role: 'editor' } });
  assert.equal(upd.data.user.user_metadata.role, 'editor');
  const del = await admin.auth.admin.deleteUser(created[1].id);
  assert.equal(del.error, null);
  const gone = await admin.auth.admin.getUserById(created[1].id);
  assert.equal(gone.error.status, 404);
  // Not for the anon key.
  const denied = await client().auth.admin.listUsers();
  assert.ok(denied.error, 'anon cannot list users');
});

// RFC 6238 TOTP, written here with node's crypto (independent of the server's code).
function totp(base32Secret, at = Date.now()) {
  const alphabet = 'ABCDEFGHIJKLMNOPQRSTUVWXYZ234567';
  let bits = '';
  for (const ch of base32Secret.replace(/=+$/, '')) bits += alphabet.indexOf(ch).toString(2).padStart(5, '0');
  const key = Buffer.from(bits.match(/.{8}/g).map((b) => parseInt(b, 2)));
  const counter = Buffer.alloc(8);
  counter.writeBigUInt64BE(BigInt(Math.floor(at / 1000 / 30)));
  const h = createHmac('sha1', key).update(counter).digest();
  const off = h[h.length - 1] & 0xf;
  const n = ((h[off] & 0x7f) << 24) | (h[off + 1] << 16) | (h[off + 2] << 8) | h[off + 3];
  return String(n % 1_000_000).padStart(6, '0');
}

test('MFA: enroll TOTP, challenge, verify to aal2, refresh keeps aal2, unenroll', async () => {
  const supabase = client();
  const email = `mfa+${Date.now()}@example.test`;
  let r = await supabase.auth.signUp({ email, password: 'correct horse battery' });
  assert.equal(r.error, null);
  let aal = await supabase.auth.mfa.getAuthenticatorAssuranceLevel();
  assert.equal(aal.error, null);
  assert.equal(aal.data.currentLevel, 'aal1');
  assert.equal(aal.data.nextLevel, 'aal1');

  const enrolled = await supabase.auth.mfa.enroll({ factorType: 'totp', friendlyName: 'phone app' });
  assert.equal(enrolled.error, null);
  assert.equal(enrolled.data.type, 'totp');
  assert.match(enrolled.data.totp.uri, /^otpauth:\/\/totp\//);
  assert.ok(enrolled.data.totp.qr_code.startsWith('data:image/svg+xml'));
  const factorId = enrolled.data.id;
  const dup = await supabase.auth.mfa.enroll({ factorType: 'totp', friendlyName: 'phone app' });
  assert.equal(dup.error?.code, 'mfa_factor_name_conflict');

  const ch = await supabase.auth.mfa.challenge({ factorId });
  assert.equal(ch.error, null);
  assert.ok(ch.data.expires_at > Date.now() / 1000);
  const wrong = await supabase.auth.mfa.verify({ factorId, challengeId: ch.data.id, code: '000000' === totp(enrolled.data.totp.secret) ? '111111' : '000000' });
  assert.equal(wrong.error?.code, 'mfa_verification_failed');
  const ok = await supabase.auth.mfa.verify({ factorId, challengeId: ch.data.id, code: totp(enrolled.data.totp.secret) });
  assert.equal(ok.error, null);
  const claims = JSON.parse(Buffer.from(ok.data.access_token.split('.')[1], 'base64url'));
  assert.equal(claims.aal, 'aal2');
  assert.equal(claims.amr[0].method, 'totp');
  assert.ok(claims.amr.some((m) => m.method === 'password'));
  aal = await supabase.auth.mfa.getAuthenticatorAssuranceLevel();
  assert.equal(aal.data.currentLevel, 'aal2');

  const factors = await supabase.auth.mfa.listFactors();
  assert.equal(factors.error, null);
  assert.equal(factors.data.totp.length, 1);
  assert.equal(factors.data.totp[0].status, 'verified');

  const refreshed = await supabase.auth.refreshSession();
  assert.equal(refreshed.error, null);
  const rc = JSON.parse(Buffer.from(refreshed.data.session.access_token.split('.')[1], 'base64url'));
  assert.equal(rc.aal, 'aal2', 'refresh keeps the level');

  // A new password sign-in is aal1 with a verified factor: nextLevel says aal2.
  const other = client();
  r = await other.auth.signInWithPassword({ email, password: 'correct horse battery' });
  assert.equal(r.error, null);
  aal = await other.auth.mfa.getAuthenticatorAssuranceLevel();
  assert.equal(aal.data.currentLevel, 'aal1');
  assert.equal(aal.data.nextLevel, 'aal2');
  const denied = await other.auth.mfa.unenroll({ factorId });
  assert.equal(denied.error?.code, 'insufficient_aal');

  const gone = await supabase.auth.mfa.unenroll({ factorId });
  assert.equal(gone.error, null);
  assert.equal(gone.data.id, factorId);
});
