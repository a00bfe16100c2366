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
  // GoTrue answers the SVG and auth-js makes it a data URL: one prefix, then the SVG.
  assert.match(enrolled.data.totp.qr_code, /^data:image\/svg\+xml;utf-8,<(\?xml|svg)/);
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

// The last mail of a kind to an address, from the mail queue (a service_role-only fixture
// function: this app has no SMTP server).
async function lastMail(addr, kind) {
  const { data, error } = await admin.rpc('test_last_auth_mail', { addr, mail_kind: kind });
  assert.equal(error, null);
  assert.ok(data, `no ${kind} mail to ${addr}`);
  return data;
}

test('admin: inviteUserByEmail, then the invite code verifies', async () => {
  const email = `invitee+${Date.now()}@example.test`;
  let r = await admin.auth.admin.inviteUserByEmail(email, { data: { team: 'blue' }, redirectTo: 'http://localhost:3000/welcome' });
  assert.equal(r.error, null);
  assert.equal(r.data.user.email, email);
  assert.ok(r.data.user.invited_at);
  assert.equal(r.data.user.email_confirmed_at ?? null, null);
  assert.equal(r.data.user.user_metadata.team, 'blue');
  const denied = await client().auth.admin.inviteUserByEmail(`x${Date.now()}@example.test`);
  assert.ok(denied.error, 'anon cannot invite');

  const mail = await lastMail(email, 'invite');
  assert.match(mail.link, /\/auth\/v1\/verify\?token=[^&]+&type=invite&redirect_to=http%3A%2F%2Flocalhost%3A3000%2Fwelcome/);
  const invited = client();
  const v = await invited.auth.verifyOtp({ email, token: mail.token, type: 'invite' });
  assert.equal(v.error, null);
  assert.ok(v.data.session.access_token);
  assert.ok(v.data.user.email_confirmed_at);
  const set = await invited.auth.updateUser({ password: 'invited pass' });
  assert.equal(set.error, null);

  r = await admin.auth.admin.inviteUserByEmail(email);
  assert.equal(r.error.code, 'email_exists');
  assert.equal(r.error.status, 422);
});

test('admin: generateLink, then verifyOtp with the token_hash or the code', async () => {
  const email = `linked+${Date.now()}@example.test`;
  let g = await admin.auth.admin.generateLink({ type: 'signup', email, password: 'long enough', options: { data: { src: 'link' } } });
  assert.equal(g.error, null);
  assert.equal(g.data.user.email, email);
  assert.equal(g.data.user.user_metadata.src, 'link');
  let p = g.data.properties;
  assert.equal(p.verification_type, 'signup');
  assert.match(p.email_otp, /^\d{6}$/);
  assert.ok(p.action_link.includes(`/auth/v1/verify?token=${p.hashed_token}&type=signup`), p.action_link);
  assert.equal(p.redirect_to, 'http://localhost:3000');
  const s1 = client();
  let v = await s1.auth.verifyOtp({ token_hash: p.hashed_token, type: 'signup' });
  assert.equal(v.error, null);
  assert.equal(v.data.user.email, email);
  assert.ok(v.data.session.access_token);
  v = await client().auth.verifyOtp({ token_hash: p.hashed_token, type: 'signup' });
  assert.equal(v.error.code, 'otp_expired', 'a token is good once');

  g = await admin.auth.admin.generateLink({ type: 'magiclink', email });
  assert.equal(g.error, null);
  p = g.data.properties;
  assert.equal(p.verification_type, 'magiclink');
  v = await client().auth.verifyOtp({ email, token: p.email_otp, type: 'magiclink' });
  assert.equal(v.error, null);
  assert.equal(v.data.session.user.email, email);

  g = await admin.auth.admin.generateLink({ type: 'recovery', email: `nobody${Date.now()}@example.test` });
  assert.equal(g.error.code, 'user_not_found');
  assert.equal(g.data.properties, null);
});

test('reauthenticate mails a nonce that updateUser takes with the new password', async () => {
  const supabase = client();
  const email = `reauth+${Date.now()}@example.test`;
  let r = await supabase.auth.signUp({ email, password: 'first horse' });
  assert.equal(r.error, null);
  r = await supabase.auth.reauthenticate();
  assert.equal(r.error, null);
  const mail = await lastMail(email, 'reauthentication');
  assert.match(mail.token, /^\d{6}$/);
  r = await supabase.auth.reauthenticate();
  assert.equal(r.error.code, 'over_email_send_rate_limit', 'one nonce mail a minute');
  assert.equal(r.error.status, 429);
  const upd = await supabase.auth.updateUser({ password: 'second horse', nonce: mail.token });
  assert.equal(upd.error, null);
  const again = await client().auth.signInWithPassword({ email, password: 'second horse' });
  assert.equal(again.error, null);
});

test('updateUser({email}) mails both addresses; the change completes when both confirm', async () => {
  const supabase = client();
  const stamp = Date.now();
  const before = `before+${stamp}@example.test`;
  const after = `after+${stamp}@example.test`;
  let r = await supabase.auth.signUp({ email: before, password: 'long enough' });
  assert.equal(r.error, null);
  const upd = await supabase.auth.updateUser({ email: after });
  assert.equal(upd.error, null);
  assert.equal(upd.data.user.email, before, 'unchanged until confirmed');
  assert.equal(upd.data.user.new_email, after);
  assert.ok(upd.data.user.email_change_sent_at);

  const toNew = await lastMail(after, 'email_change_new');
  const toOld = await lastMail(before, 'email_change_current');
  let v = await client().auth.verifyOtp({ email: after, token: toNew.token, type: 'email_change' });
  assert.equal(v.error, null);
  assert.equal(v.data.session, null, 'first half: no session yet');
  v = await client().auth.verifyOtp({ email: before, token: toOld.token, type: 'email_change' });
  assert.equal(v.error, null);
  assert.equal(v.data.user.email, after);
  assert.ok(v.data.session.access_token);
  const me = await supabase.auth.getUser();
  assert.equal(me.data.user.email, after);
  assert.equal(me.data.user.new_email, undefined);
});
