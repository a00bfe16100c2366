// Oracle suite: the official @supabase/supabase-js (pinned) storage client against Fluxbase.
// Started by tests/it/storage.rs (supabase_js_storage_against_fluxbase).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createClient } from '@supabase/supabase-js';
import WebSocket from 'ws';

const url = process.env.FLUXBASE_URL;
const anon = process.env.FLUXBASE_ANON_KEY;
const service = process.env.FLUXBASE_SERVICE_KEY;
assert.ok(url && anon && service, 'FLUXBASE_URL and keys must be set (run through `make test`)');

const opts = { auth: { persistSession: false, autoRefreshToken: false }, realtime: { transport: WebSocket } };
const admin = createClient(url, service, opts);
const anonClient = createClient(url, anon, opts);

test('buckets: create, get, list, update, empty, delete', async () => {
  const s = admin.storage;
  let r = await s.createBucket('docs', { public: false, fileSizeLimit: '1MB', allowedMimeTypes: ['text/*'] });
  assert.equal(r.error, null);
  assert.deepEqual(r.data, { name: 'docs' });
  r = await s.createBucket('docs');
  assert.equal(r.error.statusCode, '409');
  r = await s.getBucket('docs');
  assert.equal(r.data.file_size_limit, 1024 * 1024);
  assert.deepEqual(r.data.allowed_mime_types, ['text/*']);
  r = await s.listBuckets();
  assert.ok(r.data.some((b) => b.id === 'docs'));
  r = await s.updateBucket('docs', { public: true });
  assert.equal(r.error, null);
  assert.equal((await s.getBucket('docs')).data.public, true);
  await s.from('docs').upload('x.txt', 'x', { contentType: 'text/plain' });
  r = await s.deleteBucket('docs');
  assert.equal(r.error.statusCode, '409');
  assert.equal((await s.emptyBucket('docs')).error, null);
  assert.equal((await s.deleteBucket('docs')).error, null);
  // The anon key sees no bucket and may not create one (RLS, no policy).
  assert.deepEqual((await anonClient.storage.listBuckets()).data, []);
  r = await anonClient.storage.createBucket('nope');
  assert.equal(r.error.statusCode, '403');
  assert.equal(r.error.message, 'new row violates row-level security policy');
});

test('objects: upload (multipart and raw), download, info, exists, list, move, copy, remove', async () => {
  assert.equal((await admin.storage.createBucket('files', { allowedMimeTypes: ['text/*', 'image/*'] })).error, null);
  const f = admin.storage.from('files');
  let r = await f.upload('folder/a b.txt', new Blob(['hello'], { type: 'text/plain' }), { metadata: { k: 'v' } });
  assert.equal(r.error, null);
  assert.equal(r.data.path, 'folder/a b.txt');
  assert.equal(r.data.fullPath, 'files/folder/a b.txt');
  assert.match(r.data.id, /^[0-9a-f-]{36}$/);
  r = await f.upload('folder/raw.txt', 'raw text', { contentType: 'text/plain' });
  assert.equal(r.error, null);
  r = await f.upload('folder/raw.txt', 'again', { contentType: 'text/plain' });
  assert.equal(r.error.statusCode, '409');
  r = await f.upload('folder/raw.txt', 'replaced', { contentType: 'text/plain', upsert: true });
  assert.equal(r.error, null);
  r = await f.update('folder/raw.txt', 'updated', { contentType: 'text/plain' });
  assert.equal(r.error, null);
  r = await f.upload('deep/ünï.png', new Blob([new Uint8Array([137, 80, 78, 71])], { type: 'image/png' }));
  assert.equal(r.error, null);
  r = await f.upload('doc.pdf', new Blob(['%PDF'], { type: 'application/pdf' }));
  assert.equal(r.error.statusCode, '415');

  r = await f.download('folder/a b.txt');
  assert.equal(r.error, null);
  assert.equal(await r.data.text(), 'hello');
  r = await f.download('folder/raw.txt');
  assert.equal(await r.data.text(), 'updated');
  r = await f.download('deep/ünï.png');
  assert.deepEqual([...new Uint8Array(await r.data.arrayBuffer())], [137, 80, 78, 71]);
  r = await f.download('missing.txt');
  assert.equal(r.data, null);
  assert.ok(r.error);

  r = await f.info('folder/a b.txt');
  assert.equal(r.error, null);
  assert.equal(r.data.size, 5);
  assert.equal(r.data.contentType, 'text/plain');
  assert.deepEqual(r.data.metadata, { k: 'v' });
  assert.equal((await f.exists('folder/a b.txt')).data, true);
  assert.equal((await f.exists('folder/none.txt')).data, false);

  r = await f.list('folder');
  assert.equal(r.error, null);
  assert.deepEqual(r.data.map((o) => o.name), ['a b.txt', 'raw.txt']);
  assert.equal(r.data[0].metadata.size, 5);
  r = await f.list();
  assert.deepEqual(r.data.map((o) => [o.name, o.id === null]), [['deep', true], ['folder', true]]);
  r = await f.list('folder', { limit: 1, offset: 1, sortBy: { column: 'name', order: 'desc' } });
  assert.deepEqual(r.data.map((o) => o.name), ['a b.txt']);
  r = await f.list('folder', { search: 'ra' });
  assert.deepEqual(r.data.map((o) => o.name), ['raw.txt']);

  r = await f.move('folder/raw.txt', 'moved/raw.txt');
  assert.equal(r.error, null);
  assert.equal(r.data.message, 'Successfully moved');
  r = await f.copy('moved/raw.txt', 'copied/raw.txt');
  assert.equal(r.error, null);
  assert.equal(r.data.path, 'files/copied/raw.txt');
  assert.equal(await (await f.download('copied/raw.txt')).data.text(), 'updated');

  r = await f.remove(['moved/raw.txt', 'copied/raw.txt', 'never.txt']);
  assert.equal(r.error, null);
  assert.deepEqual(r.data.map((o) => o.name).sort(), ['copied/raw.txt', 'moved/raw.txt']);
  assert.ok((await f.download('moved/raw.txt')).error);

  // The anon key cannot read a private bucket's object (RLS, no policy).
  r = await anonClient.storage.from('files').download('folder/a b.txt');
  assert.ok(r.error);
  assert.equal(r.data, null);
});

test('signed URLs, signed uploads and public URLs', async () => {
  await admin.storage.createBucket('private');
  await admin.storage.createBucket('public', { public: true });
  const p = admin.storage.from('private');
  await p.upload('s/secret.txt', 'top secret', { contentType: 'text/plain' });
  let r = await p.createSignedUrl('s/secret.txt', 60);
  assert.equal(r.error, null);
  let res = await fetch(r.data.signedUrl);
  assert.equal(res.status, 200);
  assert.equal(await res.text(), 'top secret');
  r = await p.createSignedUrl('s/secret.txt', 60, { download: 'save.txt' });
  res = await fetch(r.data.signedUrl);
  assert.match(res.headers.get('content-disposition'), /attachment; filename="save.txt"/);
  r = await p.createSignedUrls(['s/secret.txt', 's/none.txt'], 60);
  assert.equal(r.error, null);
  assert.equal(await (await fetch(r.data[0].signedUrl)).text(), 'top secret');
  assert.equal(r.data[1].signedUrl, null);
  assert.ok(r.data[1].error);

  r = await p.createSignedUploadUrl('up/new.txt');
  assert.equal(r.error, null);
  assert.ok(r.data.token);
  const up = await anonClient.storage.from('private').uploadToSignedUrl('up/new.txt', r.data.token, 'by token', { contentType: 'text/plain' });
  assert.equal(up.error, null);
  assert.equal(up.data.fullPath, 'private/up/new.txt');
  assert.equal(await (await p.download('up/new.txt')).data.text(), 'by token');

  await admin.storage.from('public').upload('pic.txt', 'for everyone', { contentType: 'text/plain' });
  const { data } = anonClient.storage.from('public').getPublicUrl('pic.txt');
  assert.equal(data.publicUrl, `${url}/storage/v1/object/public/public/pic.txt`);
  res = await fetch(data.publicUrl);
  assert.equal(await res.text(), 'for everyone');
  res = await fetch(anonClient.storage.from('private').getPublicUrl('s/secret.txt').data.publicUrl);
  assert.equal(res.status, 400);
  assert.equal((await res.json()).message, 'Bucket not found');
});

test('listV2: folders apart, cursor paging, sort', async () => {
  assert.equal((await admin.storage.createBucket('v2')).error, null);
  const f = admin.storage.from('v2');
  for (const name of ['a/1.txt', 'a/b/3.txt', 'a/2.txt', 'top.txt']) {
    assert.equal((await f.upload(name, name, { contentType: 'text/plain' })).error, null);
  }
  let r = await f.listV2({ prefix: 'a/', with_delimiter: true });
  assert.equal(r.error, null);
  assert.equal(r.data.hasNext, false);
  assert.deepEqual(r.data.folders, [{ key: 'b', name: 'a/b/' }]);
  assert.deepEqual(r.data.objects.map((o) => [o.key, o.name]), [['1.txt', 'a/1.txt'], ['2.txt', 'a/2.txt']]);
  assert.equal(r.data.objects[0].metadata.size, 7);

  // One entry per page, following nextCursor: the folder once, never its contents.
  const seen = [];
  let cursor;
  for (;;) {
    r = await f.listV2({ with_delimiter: true, limit: 1, cursor });
    assert.equal(r.error, null);
    seen.push(...r.data.folders.map((d) => d.name), ...r.data.objects.map((o) => o.name));
    if (!r.data.hasNext) break;
    cursor = r.data.nextCursor;
    assert.ok(cursor);
  }
  assert.deepEqual(seen, ['a/', 'top.txt']);

  r = await f.listV2({ sortBy: { column: 'created_at', order: 'desc' }, limit: 3 });
  assert.deepEqual(r.data.objects.map((o) => o.name), ['top.txt', 'a/2.txt', 'a/b/3.txt']);
  assert.equal(r.data.hasNext, true);
  r = await f.listV2({ cursor: r.data.nextCursor });
  assert.deepEqual(r.data.objects.map((o) => o.name), ['a/1.txt']);

  r = await f.listV2({ cursor: 'garbage!' });
  assert.equal(r.data, null);
  assert.equal(r.error.statusCode, '400');
  // The anon key sees nothing (RLS, no policy).
  r = await anonClient.storage.from('v2').listV2({});
  assert.deepEqual(r.data, { hasNext: false, folders: [], objects: [] });
});
