// Oracle suite: the official tus-js-client (pinned) against Fluxbase's resumable uploads,
// configured the way Supabase documents it; the result is read back with supabase-js.
// Started by tests/it/clients.rs (tus_js_client_against_fluxbase).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import * as tus from 'tus-js-client';
import { createClient } from '@supabase/supabase-js';
import WebSocket from 'ws';

const url = process.env.FLUXBASE_URL;
const anon = process.env.FLUXBASE_ANON_KEY;
const service = process.env.FLUXBASE_SERVICE_KEY;
assert.ok(url && anon && service, 'FLUXBASE_URL and keys must be set (run through `make test`)');

const opts = { auth: { persistSession: false, autoRefreshToken: false }, realtime: { transport: WebSocket } };
const admin = createClient(url, service, opts);
const CHUNK = 6 * 1024 * 1024;

/** Deterministic bytes: two full 6 MiB chunks and a tail. */
function payload(n, seed) {
  const b = Buffer.alloc(n);
  let x = seed >>> 0;
  for (let i = 0; i < n; i++) {
    x = (Math.imul(x, 1664525) + 1013904223) >>> 0;
    b[i] = x >>> 24;
  }
  return b;
}

const md5 = (b) => createHash('md5').update(b).digest('hex');

/** A tus.Upload as in Supabase's guide, recording the requests it sends. */
function upload(file, { token, bucket, name, storage, log, upsert = false, onChunk, retryDelays = [0, 200, 500] }) {
  return new tus.Upload(file, {
    endpoint: `${url}/storage/v1/upload/resumable`,
    retryDelays,
    headers: { authorization: `Bearer ${token}`, apikey: anon, 'x-upsert': upsert ? 'true' : 'false' },
    uploadDataDuringCreation: true,
    removeFingerprintOnSuccess: true,
    metadata: { bucketName: bucket, objectName: name, contentType: 'application/x-test', cacheControl: '3600' },
    chunkSize: CHUNK,
    urlStorage: storage,
    onBeforeRequest: (req) => log.push(req.getMethod()),
    onChunkComplete: onChunk,
  });
}

test('a multi-chunk upload, interrupted and resumed from its fingerprint, downloads byte for byte', async () => {
  const bucket = 'tus-oracle';
  assert.equal((await admin.storage.createBucket(bucket)).error, null);
  const dir = mkdtempSync(join(tmpdir(), 'fbtus-'));
  try {
    const storage = new tus.FileUrlStorage(join(dir, 'uploads.json'));
    const file = payload(2 * CHUNK + 123_457, 7);
    const name = 'videos/clip.bin';

    // First run: stop after the first chunk was accepted.
    const first = [];
    let stopped;
    const interrupted = new Promise((resolve) => (stopped = resolve));
    const u1 = upload(file, {
      token: service,
      bucket,
      name,
      storage,
      log: first,
      onChunk: (size, accepted) => {
        if (accepted >= CHUNK) {
          u1.abort(false).then(() => stopped(accepted));
        }
      },
    });
    u1.options.onError = (e) => stopped(e);
    u1.start();
    const accepted = await interrupted;
    assert.equal(accepted, CHUNK, `first run: ${accepted}`);
    assert.deepEqual(first, ['POST'], 'the first chunk travels with the creation request');
    // Not visible before the last byte.
    const early = await admin.storage.from(bucket).download(name);
    assert.notEqual(early.error, null);

    // Second run: the fingerprint finds the upload, HEAD gives the offset, PATCHes finish it.
    const second = [];
    const u2 = upload(file, { token: service, bucket, name, storage, log: second });
    const previous = await u2.findPreviousUploads();
    assert.equal(previous.length, 1, 'the first run stored its upload URL');
    assert.match(previous[0].uploadUrl, /\/storage\/v1\/upload\/resumable\/[0-9a-f-]{36}$/);
    u2.resumeFromPreviousUpload(previous[0]);
    await new Promise((resolve, reject) => {
      u2.options.onSuccess = resolve;
      u2.options.onError = reject;
      u2.start();
    });
    assert.deepEqual(second, ['HEAD', 'PATCH', 'PATCH'], 'resumed, not started over');
    // The client removes the fingerprint without waiting for its file storage.
    let left = -1;
    for (let i = 0; i < 40 && left !== 0; i++) {
      left = (await storage.findAllUploads()).length;
      if (left !== 0) await new Promise((r) => setTimeout(r, 50));
    }
    assert.equal(left, 0, 'fingerprint removed on success');

    const { data, error } = await admin.storage.from(bucket).download(name);
    assert.equal(error, null);
    const got = Buffer.from(await data.arrayBuffer());
    assert.equal(got.length, file.length);
    assert.equal(md5(got), md5(file));
    assert.equal(data.type, 'application/x-test');
    const info = await admin.storage.from(bucket).info(name);
    assert.equal(info.error, null);
    assert.equal(info.data.size, file.length);
    assert.equal(info.data.cacheControl, 'max-age=3600');
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('refusals reach onError with their status: RLS (403), duplicate without upsert (409)', async () => {
  const bucket = 'tus-refusals';
  assert.equal((await admin.storage.createBucket(bucket)).error, null);
  const storage = new tus.FileUrlStorage(join(mkdtempSync(join(tmpdir(), 'fbtus-')), 'u.json'));
  const run = (token, name, upsert, retryDelays) =>
    new Promise((resolve) => {
      const u = upload(Buffer.from('hello tus'), { token, bucket, name, storage, log: [], upsert, retryDelays });
      u.options.onSuccess = () => resolve({ ok: true });
      u.options.onError = (e) => resolve({ ok: false, status: e.originalResponse?.getStatus(), body: e.originalResponse?.getBody() });
      u.start();
    });
  // The anon key: no INSERT policy on storage.objects.
  let r = await run(anon, 'a.txt', false, [0]);
  assert.equal(r.ok, false);
  assert.equal(r.status, 403);
  assert.equal(JSON.parse(r.body).message, 'new row violates row-level security policy');
  r = await run(service, 'a.txt', false, [0]);
  assert.deepEqual(r, { ok: true });
  // tus-js-client retries 409s; without delays left it reports it.
  r = await run(service, 'a.txt', false, []);
  assert.equal(r.status, 409);
  assert.equal(JSON.parse(r.body).error, 'Duplicate');
  r = await run(service, 'a.txt', true, []);
  assert.deepEqual(r, { ok: true });
  const { data } = await admin.storage.from(bucket).download('a.txt');
  assert.equal(await data.text(), 'hello tus');
});
