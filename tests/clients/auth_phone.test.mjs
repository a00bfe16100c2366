// Oracle suite: the official @supabase/supabase-js (pinned) phone auth against Fluxbase.
// Started by tests/it/clients.rs with phone sign-in on, texting through the fake SMS provider
// of the test harness (Twilio's shapes); the codes are read back from that fake.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createClient } from '@supabase/supabase-js';
import WebSocket from 'ws';

const url = process.env.FLUXBASE_URL;
const anon = process.env.FLUXBASE_ANON_KEY;
const fake = process.env.FAKE_SMS_PROVIDER;
assert.ok(url && anon && fake, 'FLUXBASE_URL, keys and FAKE_SMS_PROVIDER must be set (run through `make test`)');

const opts = { auth: { persistSession: false, autoRefreshToken: false }, realtime: { transport: WebSocket } };
const client = () => createClient(url, anon, opts);

// A number of its own per test run (digits only, as GoTrue stores it).
const number = (tail) => `1555${String(Date.now()).slice(-4)}${tail}`;

// The code of the n-th SMS (1-based) the fake provider took for that number.
async function codeFor(digits, n = 1) {
  const deadline = Date.now() + 15000;
  for (;;) {
    const res = await fetch(`${fake}/messages?to=${digits}`);
    const list = await res.json();
    if (list.length >= n) return list[n - 1].code;
    assert.ok(Date.now() < deadline, `no SMS #${n} to ${digits}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

test('signUp with a phone, verifyOtp type sms, then signInWithPassword by phone', async () => {
  const supabase = client();
  const digits = number('01');
  let r = await supabase.auth.signUp({ phone: `+${digits}`, password: 'correct horse', options: { data: { name: 'Ada' } } });
  assert.equal(r.error, null);
  assert.equal(r.data.session, null, 'confirmation pending');
  assert.equal(r.data.user.phone, digits);
  assert.equal(r.data.user.user_metadata.name, 'Ada');

  r = await supabase.auth.signInWithPassword({ phone: `+${digits}`, password: 'correct horse' });
  assert.equal(r.error.code, 'phone_not_confirmed');

  r = await supabase.auth.verifyOtp({ phone: `+${digits}`, token: '000000', type: 'sms' });
  if (!r.error) assert.fail('a wrong code must not verify');
  assert.equal(r.error.code, 'otp_expired');

  const code = await codeFor(digits);
  r = await supabase.auth.verifyOtp({ phone: `+${digits}`, token: code, type: 'sms' });
  assert.equal(r.error, null);
  assert.ok(r.data.session.access_token);
  assert.ok(r.data.user.phone_confirmed_at);

  const other = client();
  r = await other.auth.signInWithPassword({ phone: `+${digits}`, password: 'correct horse' });
  assert.equal(r.error, null);
  assert.equal(r.data.user.phone, digits);
  assert.equal(r.data.session.user.app_metadata.provider, 'phone');
});

test('signInWithOtp with a phone signs up and in; shouldCreateUser false refuses unknown numbers', async () => {
  const supabase = client();
  const digits = number('02');
  let r = await supabase.auth.signInWithOtp({ phone: `+${digits}`, options: { shouldCreateUser: false } });
  assert.equal(r.error.code, 'otp_disabled');

  r = await supabase.auth.signInWithOtp({ phone: `+${digits}` });
  assert.equal(r.error, null);
  assert.equal(r.data.session, null);
  const code = await codeFor(digits);
  r = await supabase.auth.verifyOtp({ phone: digits, token: code, type: 'sms' });
  assert.equal(r.error, null);
  const me = await supabase.auth.getUser();
  assert.equal(me.error, null);
  assert.equal(me.data.user.phone, digits);

  // Too soon for another code to the same number.
  r = await supabase.auth.signInWithOtp({ phone: `+${digits}` });
  assert.equal(r.error.code, 'over_sms_send_rate_limit');
  assert.equal(r.error.status, 429);
});

test('updateUser with a phone, then verifyOtp type phone_change', async () => {
  const supabase = client();
  const first = number('03');
  let r = await supabase.auth.signInWithOtp({ phone: `+${first}` });
  assert.equal(r.error, null);
  r = await supabase.auth.verifyOtp({ phone: first, token: await codeFor(first), type: 'sms' });
  assert.equal(r.error, null);

  const next = number('04');
  r = await supabase.auth.updateUser({ phone: `+${next}` });
  assert.equal(r.error, null);
  assert.equal(r.data.user.phone, first, 'unchanged until the new number confirms');
  assert.equal(r.data.user.new_phone, next);

  r = await supabase.auth.verifyOtp({ phone: `+${next}`, token: await codeFor(next), type: 'phone_change' });
  assert.equal(r.error, null);
  assert.equal(r.data.user.phone, next);
  const me = await supabase.auth.getUser();
  assert.equal(me.data.user.phone, next);
  assert.ok(me.data.user.identities.some((i) => i.provider === 'phone' && i.identity_data.phone === next));

  // The old number signs in no one now.
  r = await client().auth.signInWithOtp({ phone: `+${first}`, options: { shouldCreateUser: false } });
  assert.equal(r.error.code, 'otp_disabled');
});

test('mfa.enroll a phone factor, challenge it by SMS, verify: the session is aal2', async () => {
  const supabase = client();
  const digits = number('05');
  let r = await supabase.auth.signInWithOtp({ phone: `+${digits}` });
  assert.equal(r.error, null);
  r = await supabase.auth.verifyOtp({ phone: digits, token: await codeFor(digits), type: 'sms' });
  assert.equal(r.error, null);

  const second = number('06');
  const enrolled = await supabase.auth.mfa.enroll({ factorType: 'phone', phone: `+${second}`, friendlyName: 'work phone' });
  assert.equal(enrolled.error, null);
  assert.equal(enrolled.data.type, 'phone');
  assert.equal(enrolled.data.phone, second);
  const ch = await supabase.auth.mfa.challenge({ factorId: enrolled.data.id, channel: 'sms' });
  assert.equal(ch.error, null);
  assert.equal(ch.data.type, 'phone');
  const v = await supabase.auth.mfa.verify({ factorId: enrolled.data.id, challengeId: ch.data.id, code: await codeFor(second) });
  assert.equal(v.error, null);
  const aal = await supabase.auth.mfa.getAuthenticatorAssuranceLevel();
  assert.equal(aal.data.currentLevel, 'aal2');
  assert.ok(aal.data.currentAuthenticationMethods.some((m) => m.method === 'mfa/phone'));
  const list = await supabase.auth.mfa.listFactors();
  assert.equal(list.error, null);
  assert.equal(list.data.phone.length, 1);
  assert.equal(list.data.phone[0].phone, second);
});
