// Oracle suite: webhook deliveries checked by the `standardwebhooks` package (the reference
// implementation of the Standard Webhooks spec), not by Fluxbase's own code. The receiver is
// a node HTTP server on 127.0.0.1 (allowed for outbound calls by tests/it/clients.rs); the
// changes are made through the official supabase-js client.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import http from 'node:http';
import { Webhook } from 'standardwebhooks';
import { createClient } from '@supabase/supabase-js';
import WebSocket from 'ws';

const url = process.env.FLUXBASE_URL;
const anon = process.env.FLUXBASE_ANON_KEY;
const service = process.env.FLUXBASE_SERVICE_KEY;
assert.ok(url && anon && service, 'FLUXBASE_URL and keys must be set (run through `make test`)');

function receiver() {
  const got = [];
  let wake = () => {};
  const server = http.createServer((req, res) => {
    let body = '';
    req.on('data', (c) => { body += c; });
    req.on('end', () => {
      got.push({ headers: req.headers, body });
      res.writeHead(204).end();
      wake();
    });
  });
  return new Promise((resolve) => server.listen(0, '127.0.0.1', () => {
    resolve({
      url: `http://127.0.0.1:${server.address().port}/hook`,
      got,
      close: () => { server.close(); server.closeAllConnections(); },
      next: (n) => new Promise((res, rej) => {
        const t = setTimeout(() => rej(new Error(`only ${got.length} of ${n} deliveries`)), 15000);
        const check = () => { if (got.length >= n) { clearTimeout(t); res(got); } };
        wake = check;
        check();
      }),
    });
  }));
}

async function api(method, path, body) {
  const res = await fetch(`${url}${path}`, {
    method,
    headers: { apikey: service, Authorization: `Bearer ${service}`, 'Content-Type': 'application/json' },
    body: body ? JSON.stringify(body) : undefined,
  });
  return { status: res.status, body: res.status === 204 ? null : await res.json() };
}

test('table events are signed as Standard Webhooks says', async () => {
  const rx = await receiver();
  try {
    const created = await api('POST', '/api/v1/webhooks', {
      name: 'orders', url: rx.url, events: ['public.orders:INSERT', 'public.orders:DELETE'],
    });
    assert.equal(created.status, 201);
    const wh = new Webhook(created.body.secret);
    const supabase = createClient(url, service, { auth: { persistSession: false }, realtime: { transport: WebSocket } });
    let r = await supabase.from('orders').insert({ id: 7, item: 'tea', qty: 2 });
    assert.equal(r.error, null);
    r = await supabase.from('orders').delete().eq('id', 7);
    assert.equal(r.error, null);
    const got = await rx.next(2);
    const events = got.map(({ headers, body }) => wh.verify(body, headers));
    assert.deepEqual(events[0], { type: 'INSERT', table: 'orders', schema: 'public', record: { id: 7, item: 'tea', qty: 2 }, old_record: null });
    assert.equal(events[1].type, 'DELETE');
    assert.deepEqual(events[1].old_record, { id: 7, item: 'tea', qty: 2 });
    assert.notEqual(got[0].headers['webhook-id'], got[1].headers['webhook-id'], 'each delivery has its own id');
    // The verifier really checks: a changed body or another secret fails.
    assert.throws(() => wh.verify(got[0].body.replace('tea', 'gin'), got[0].headers));
    const other = new Webhook(`whsec_${Buffer.alloc(32, 7).toString('base64')}`);
    assert.throws(() => other.verify(got[0].body, got[0].headers));
  } finally {
    rx.close();
  }
});

test('the test endpoint sends a verifiable webhook.test event', async () => {
  const rx = await receiver();
  try {
    const secret = `whsec_${Buffer.alloc(32, 1).toString('base64')}`;
    const created = await api('POST', '/api/v1/webhooks', { url: rx.url, events: ['auth.user.created'], secret });
    assert.equal(created.status, 201);
    const t = await api('POST', `/api/v1/webhooks/${created.body.id}/test`);
    assert.equal(t.status, 200);
    assert.equal(t.body.status, 'succeeded');
    assert.equal(t.body.response_status, 204);
    const [{ headers, body }] = await rx.next(1);
    const ev = new Webhook(secret).verify(body, headers);
    assert.equal(ev.type, 'webhook.test');
    assert.equal(ev.webhook_id, created.body.id);
  } finally {
    rx.close();
  }
});
