// Oracle suite: the official @supabase/supabase-js (pinned) realtime client against Fluxbase,
// over vsn 2.0.0 (the client's default) and 1.0.0, with the `ws` transport.
// Started by tests/it/clients.rs with the `messages` fixture in the supabase_realtime publication.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createClient } from '@supabase/supabase-js';
import WebSocket from 'ws';

const url = process.env.FLUXBASE_URL;
const anon = process.env.FLUXBASE_ANON_KEY;
const service = process.env.FLUXBASE_SERVICE_KEY;
assert.ok(url && anon && service, 'FLUXBASE_URL and keys must be set (run through `make test`)');

const clients = [];
function client(key = anon, vsn = undefined) {
  const realtime = { transport: WebSocket };
  if (vsn) realtime.vsn = vsn;
  const c = createClient(url, key, { auth: { persistSession: false, autoRefreshToken: false }, realtime });
  clients.push(c);
  return c;
}

test.after(async () => {
  for (const c of clients) await c.removeAllChannels();
});

function subscribed(channel) {
  return new Promise((resolve, reject) => {
    channel.subscribe((status, err) => {
      if (status === 'SUBSCRIBED') resolve(channel);
      else if (status === 'CHANNEL_ERROR' || status === 'TIMED_OUT') reject(err ?? new Error(status));
    });
  });
}

function next(register) {
  return new Promise((resolve) => register(resolve));
}

function within(ms, promise, what) {
  let t;
  const timeout = new Promise((_, reject) => {
    t = setTimeout(() => reject(new Error(`no ${what} within ${ms} ms`)), ms);
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(t));
}

for (const vsn of ['2.0.0', '1.0.0']) {
  test(`broadcast between two clients (vsn ${vsn})`, async () => {
    const a = client(anon, vsn);
    const b = client(anon, vsn);
    const topic = `room-${vsn}-${Date.now()}`;
    const received = [];
    const chB = b.channel(topic);
    const got = next((resolve) => chB.on('broadcast', { event: 'msg' }, (m) => { received.push(m); resolve(m); }));
    await subscribed(chB);
    const chA = a.channel(topic, { config: { broadcast: { ack: true } } });
    await subscribed(chA);
    const status = await chA.send({ type: 'broadcast', event: 'msg', payload: { text: 'hello', n: 1 } });
    assert.equal(status, 'ok', 'ack: true resolves with ok');
    const m = await within(5000, got, 'broadcast');
    assert.equal(m.event, 'msg');
    assert.deepEqual(m.payload, { text: 'hello', n: 1 });
  });

  test(`presence sync, join and leave (vsn ${vsn})`, async () => {
    const a = client(anon, vsn);
    const b = client(anon, vsn);
    const topic = `lobby-${vsn}-${Date.now()}`;
    const chB = b.channel(topic, { config: { presence: { key: 'bob' } } });
    const joined = next((resolve) => chB.on('presence', { event: 'join' }, ({ key, newPresences }) => {
      if (key === 'alice') resolve(newPresences);
    }));
    const left = next((resolve) => chB.on('presence', { event: 'leave' }, ({ key }) => {
      if (key === 'alice') resolve(key);
    }));
    await subscribed(chB);
    const chA = a.channel(topic, { config: { presence: { key: 'alice' } } });
    chA.on('presence', { event: 'sync' }, () => {});
    await subscribed(chA);
    assert.equal(await chA.track({ status: 'online' }), 'ok');
    const np = await within(5000, joined, 'presence join');
    assert.equal(np[0].status, 'online');
    const state = chB.presenceState();
    assert.equal(state.alice[0].status, 'online');
    await a.removeChannel(chA);
    assert.equal(await within(5000, left, 'presence leave'), 'alice');
  });

  test(`postgres_changes with a filter (vsn ${vsn})`, async () => {
    const room = `r-${vsn}-${Date.now()}`;
    const sub = client(anon, vsn);
    const events = [];
    const ch = sub.channel(`db-${room}`);
    const inserted = next((resolve) => ch.on('postgres_changes',
      { event: 'INSERT', schema: 'public', table: 'messages', filter: `room=eq.${room}` },
      (p) => { events.push(p); resolve(p); }));
    const updated = next((resolve) => ch.on('postgres_changes',
      { event: 'UPDATE', schema: 'public', table: 'messages', filter: `room=eq.${room}` }, resolve));
    await subscribed(ch);
    const writer = client(service);
    let r = await writer.from('messages').insert({ room: 'elsewhere', body: 'skip me' });
    assert.equal(r.error, null);
    r = await writer.from('messages').insert({ room, body: 'hi', meta: { n: 1 } }).select().single();
    assert.equal(r.error, null);
    const p = await within(5000, inserted, 'INSERT');
    assert.equal(p.eventType, 'INSERT');
    assert.equal(p.schema, 'public');
    assert.equal(p.table, 'messages');
    assert.equal(p.new.id, r.data.id);
    assert.equal(p.new.body, 'hi');
    assert.deepEqual(p.new.meta, { n: 1 });
    assert.deepEqual(p.old, {});
    assert.ok(!Number.isNaN(Date.parse(p.commit_timestamp)));
    await writer.from('messages').update({ body: 'edited' }).eq('id', r.data.id);
    const u = await within(5000, updated, 'UPDATE');
    assert.equal(u.new.body, 'edited');
    assert.equal(u.old.id, r.data.id);
    assert.equal(events.length, 1, 'the other room\'s row was filtered out');
  });
}

test('postgres_changes under RLS: each signed-in user sees only their rows', async () => {
  const users = [];
  for (const name of ['ann', 'ben']) {
    const c = client();
    const email = `${name}+${Date.now()}@example.test`;
    const r = await c.auth.signUp({ email, password: 'correct horse battery' });
    assert.equal(r.error, null);
    c.realtime.setAuth(r.data.session.access_token);
    users.push({ c, id: r.data.user.id, seen: [] });
  }
  const done = [];
  for (const u of users) {
    const ch = u.c.channel(`private-notes-${u.id}`);
    done.push(next((resolve) => ch.on('postgres_changes', { event: 'INSERT', schema: 'public', table: 'notes' }, (p) => {
      u.seen.push(p.new.body);
      if (u.seen.length === 2) resolve();
    })));
    await subscribed(ch);
  }
  const writer = client(service);
  for (const [i, owner] of [0, 1, 1, 0].entries()) {
    const r = await writer.from('notes').insert({ owner: users[owner].id, body: `note ${i}` });
    assert.equal(r.error, null);
  }
  await within(5000, Promise.all(done), 'both users\' notes');
  assert.deepEqual(users[0].seen, ['note 0', 'note 3']);
  assert.deepEqual(users[1].seen, ['note 1', 'note 2']);
});

test('httpSend() goes over REST to the subscribers', async () => {
  const listener = client();
  const topic = `rest-${Date.now()}`;
  const ch = listener.channel(topic);
  const got = next((resolve) => ch.on('broadcast', { event: 'ping' }, resolve));
  await subscribed(ch);
  const sender = client(service);
  const status = await sender.channel(topic).httpSend('ping', { via: 'rest' });
  assert.deepEqual(status, { success: true });
  const m = await within(5000, got, 'REST broadcast');
  assert.deepEqual(m.payload, { via: 'rest' });
});
