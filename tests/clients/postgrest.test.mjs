// Oracle suite: the official @supabase/postgrest-js (pinned) against a running Fluxbase.
// Started by tests/it/clients.rs, which creates the fixture and passes the URL and keys.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { PostgrestClient } from '@supabase/postgrest-js';

const url = process.env.FLUXBASE_URL;
const anon = process.env.FLUXBASE_ANON_KEY;
const service = process.env.FLUXBASE_SERVICE_KEY;
assert.ok(url && anon && service, 'FLUXBASE_URL and keys must be set (run through `make test`)');

const client = (key) => new PostgrestClient(`${url}/rest/v1`, { headers: { apikey: key, Authorization: `Bearer ${key}` } });
const db = client(anon);
const admin = client(service);

test('select with filters, order and limit', async () => {
  const { data, error, status } = await db.from('books').select('title, year').gte('year', 1970).order('year', { ascending: false }).limit(2);
  assert.equal(error, null);
  assert.equal(status, 200);
  assert.deepEqual(data, [{ title: 'Small Gods', year: 1992 }, { title: 'Kindred', year: 1979 }]);
});

test('in, ilike, or, is, contains', async () => {
  let r = await db.from('books').select('id').in('id', [1, 3, 99]).order('id');
  assert.deepEqual(r.data, [{ id: 1 }, { id: 3 }]);
  r = await db.from('books').select('id').ilike('title', '%gods%');
  assert.deepEqual(r.data, [{ id: 3 }]);
  r = await db.from('books').select('id').or('year.lt.1970,year.is.null').order('id');
  assert.deepEqual(r.data, [{ id: 2 }, { id: 5 }]);
  r = await db.from('books').select('id').is('year', null);
  assert.deepEqual(r.data, [{ id: 5 }]);
  r = await db.from('books').select('id').contains('tags', ['fantasy']).order('id');
  assert.deepEqual(r.data, [{ id: 2 }, { id: 3 }]);
  r = await db.from('books').select('id').textSearch('search', 'gods', { config: 'english' });
  assert.deepEqual(r.data, [{ id: 3 }]);
});

test('range and exact count', async () => {
  const { data, count, error } = await db.from('books').select('id', { count: 'exact' }).order('id').range(1, 2);
  assert.equal(error, null);
  assert.equal(count, 5);
  assert.deepEqual(data, [{ id: 2 }, { id: 3 }]);
  const head = await db.from('books').select('*', { count: 'exact', head: true });
  assert.equal(head.error, null);
  assert.equal(head.count, 5);
  assert.equal(head.data, null);
});

test('single and maybeSingle', async () => {
  let r = await db.from('authors').select('name').eq('id', 2).single();
  assert.equal(r.error, null);
  assert.deepEqual(r.data, { name: 'Terry' });
  r = await db.from('authors').select('name').single();
  assert.equal(r.data, null);
  assert.equal(r.error.code, 'PGRST116');
  assert.equal(r.status, 406);
  r = await db.from('authors').select('name').eq('id', 999).maybeSingle();
  assert.equal(r.error, null);
  assert.equal(r.data, null);
});

test('embedding', async () => {
  let r = await db.from('books').select('title, author:authors(name)').eq('id', 1);
  assert.deepEqual(r.data, [{ title: 'The Dispossessed', author: { name: 'Ursula' } }]);
  r = await db.from('authors').select('name, books(title)').eq('id', 1).order('year', { referencedTable: 'books' });
  assert.deepEqual(r.data, [{ name: 'Ursula', books: [{ title: 'A Wizard of Earthsea' }, { title: 'The Dispossessed' }] }]);
  r = await db.from('authors').select('name, books!inner(title)').gt('books.year', 1990);
  assert.deepEqual(r.data, [{ name: 'Terry', books: [{ title: 'Small Gods' }] }]);
});

test('insert, upsert, update, delete with select()', async () => {
  let r = await admin.from('authors').insert({ name: 'Iain', born: 1954 }).select('name, born');
  assert.equal(r.error, null);
  assert.equal(r.status, 201);
  assert.deepEqual(r.data, [{ name: 'Iain', born: 1954 }]);
  r = await admin.from('authors').upsert({ id: 1, name: 'Ursula K.', born: 1929 }).select('id, name');
  assert.equal(r.error, null);
  assert.deepEqual(r.data, [{ id: 1, name: 'Ursula K.' }]);
  r = await admin.from('books').update({ year: 1969 }).lt('year', 1970).select('id, year');
  assert.deepEqual(r.data, [{ id: 2, year: 1969 }]);
  r = await admin.from('books').delete().eq('id', 5);
  assert.equal(r.error, null);
  assert.equal(r.status, 204);
  r = await admin.from('books').select('id').eq('id', 5);
  assert.deepEqual(r.data, []);
  r = await admin.from('authors').insert({ id: 1, name: 'dup' });
  assert.equal(r.error.code, '23505');
  assert.equal(r.status, 409);
});

test('rpc', async () => {
  let r = await db.rpc('add', { a: 40, b: 2 });
  assert.equal(r.error, null);
  assert.equal(r.data, 42);
  r = await db.rpc('add', { a: 1, b: 2 }, { get: true });
  assert.equal(r.data, 3);
  r = await db.rpc('books_after', { y: 1975 }).select('title').order('year');
  assert.deepEqual(r.data, [{ title: 'Kindred' }, { title: 'Small Gods' }]);
  r = await db.rpc('missing_fn', {});
  assert.equal(r.error.code, 'PGRST202');
});

test('computed columns and computed relationships', async () => {
  const { data, error } = await db.from('books').select('title, shout, writer:author_of(name)').ilike('shout', '%GODS%').order('shout');
  assert.equal(error, null);
  assert.deepEqual(data, [{ title: 'Small Gods', shout: 'SMALL GODS', writer: { name: 'Terry' } }]);
  const star = await db.from('books').select('*').eq('id', 3);
  assert.equal(star.error, null);
  assert.equal('shout' in star.data[0], false);
});

test('errors carry the PostgREST shape', async () => {
  const r = await db.from('no_such_table').select('*');
  assert.equal(r.status, 404);
  assert.equal(r.error.code, 'PGRST205');
  assert.equal(typeof r.error.message, 'string');
  const bad = await db.from('books').select('nope');
  assert.equal(bad.status, 400);
  assert.equal(bad.error.code, '42703');
});

test('spreads, as PostgREST 13 shapes them', async () => {
  let r = await db.from('books').select('title, ...authors(author:name)').eq('id', 3);
  assert.equal(r.error, null);
  assert.deepEqual(r.data, [{ title: 'Small Gods', author: 'Terry' }]);
  // A to-many spread: each column becomes the array of the related rows' values.
  r = await db.from('authors').select('name, ...books(titles:title, years:year)').eq('id', 3);
  assert.equal(r.error, null);
  assert.deepEqual(r.data, [{ name: 'Octavia', titles: ['Kindred'], years: [1979] }]);
  // An aggregate in a to-one spread is lifted to the parent.
  r = await db.from('books').select('...authors(born.min())');
  assert.equal(r.error, null);
  assert.deepEqual(r.data, [{ min: 1929 }]);
  // …and refused in a to-many spread.
  r = await db.from('authors').select('name, ...books(count())');
  assert.equal(r.status, 400);
  assert.equal(r.error.code, 'PGRST127');
  assert.equal(r.error.details, 'Aggregates are not implemented for one-to-many or many-to-many spreads.');
});

test('explain() with rest.plan_enabled', async () => {
  // Text by default: postgrest-js hands the plan over as a string.
  let r = await db.from('books').select('title').explain();
  assert.equal(r.error, null);
  assert.equal(r.status, 200);
  assert.equal(typeof r.data, 'string');
  assert.match(r.data, /^Aggregate/);
  // JSON, for the single-object media type, analyzed.
  r = await db.from('books').select('title').eq('id', 1).single().explain({ format: 'json', analyze: true, verbose: true });
  assert.equal(r.error, null);
  assert.equal(r.data[0].Plan['Node Type'], 'Aggregate');
  assert.ok('Execution Time' in r.data[0]);
  r = await db.rpc('add', { a: 1, b: 2 }).explain({ format: 'json' });
  assert.equal(r.error, null);
  assert.equal(typeof r.data[0].Plan['Node Type'], 'string');
  // An analyzed insert runs and is rolled back.
  const before = await admin.from('authors').select('*', { count: 'exact', head: true });
  r = await admin.from('authors').insert({ name: 'Ghost' }).select('id').explain({ analyze: true, format: 'json' });
  assert.equal(r.error, null);
  assert.equal(r.status, 200);
  assert.ok('Execution Time' in r.data[0]);
  const after = await admin.from('authors').select('*', { count: 'exact', head: true });
  assert.equal(after.count, before.count);
  const ghost = await admin.from('authors').select('id').eq('name', 'Ghost');
  assert.deepEqual(ghost.data, []);
});
