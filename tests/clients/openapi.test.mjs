// Oracle suite: GET /openapi.json checked by @seriousme/openapi-schema-validator (the
// official OpenAPI 3.1 JSON Schemas run through Ajv), not by Fluxbase's own code. The Rust
// side (tests/it/openapi.rs) creates the fixture schema first, so the generated REST paths
// are part of what is validated.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Validator } from '@seriousme/openapi-schema-validator';

const url = process.env.FLUXBASE_URL;
assert.ok(url, 'FLUXBASE_URL must be set (run through `make test`)');

async function fetchDoc() {
  const res = await fetch(`${url}/openapi.json`);
  assert.equal(res.status, 200);
  assert.match(res.headers.get('content-type') ?? '', /^application\/json/);
  return res.json();
}

test('/openapi.json is a valid OpenAPI 3.1 document', async () => {
  const doc = await fetchDoc();
  assert.ok(doc.openapi.startsWith('3.1'), `openapi is ${doc.openapi}`);
  const validator = new Validator();
  const result = await validator.validate(doc);
  if (!result.valid) {
    console.log(JSON.stringify(result.errors, null, 2));
  }
  assert.equal(validator.version, '3.1');
  assert.deepEqual(result, { valid: true });
});

test('the fixture schema is in the validated document', async () => {
  const doc = await fetchDoc();
  for (const p of ['/rest/v1/authors', '/rest/v1/books', '/rest/v1/rpc/add', '/rest/v1/rpc/books_after']) {
    assert.ok(doc.paths[p], `${p} missing`);
  }
  assert.ok(doc.components.schemas['public.books'], 'public.books component missing');
  // Every $ref points at something that exists (the validator checks structure, not refs).
  const refs = [];
  const walk = (v) => {
    if (Array.isArray(v)) v.forEach(walk);
    else if (v && typeof v === 'object') {
      if (typeof v.$ref === 'string') refs.push(v.$ref);
      Object.values(v).forEach(walk);
    }
  };
  walk(doc);
  assert.ok(refs.length > 0);
  for (const r of refs) {
    const name = r.replace('#/components/schemas/', '');
    assert.ok(doc.components.schemas[name], `dangling ${r}`);
  }
  // operationIds are unique, as the specification requires.
  const ids = Object.values(doc.paths).flatMap((item) => Object.values(item).map((op) => op.operationId));
  assert.equal(new Set(ids).size, ids.length, 'duplicate operationId');
});

// GET /rest/v1/ is PostgREST's Swagger 2.0 document: the same validator, with its 2.0 schema.
for (const [who, key] of [['anon', process.env.FLUXBASE_ANON_KEY], ['service_role', process.env.FLUXBASE_SERVICE_KEY]]) {
  test(`/rest/v1/ is a valid Swagger 2.0 document (${who})`, async () => {
    const res = await fetch(`${url}/rest/v1/`, { headers: { apikey: key, authorization: `Bearer ${key}` } });
    assert.equal(res.status, 200);
    assert.match(res.headers.get('content-type') ?? '', /^application\/openapi\+json/);
    const doc = await res.json();
    assert.equal(doc.swagger, '2.0');
    for (const p of ['/', '/authors', '/books', '/rpc/add', '/rpc/books_after']) {
      assert.ok(doc.paths[p], `${p} missing`);
    }
    const validator = new Validator();
    const result = await validator.validate(doc);
    if (!result.valid) {
      console.log(JSON.stringify(result.errors, null, 2));
    }
    assert.equal(validator.version, '2.0');
    assert.deepEqual(result, { valid: true });
    // Every local $ref resolves (JSON Pointer, percent-decoded).
    const walk = (v, out) => {
      if (Array.isArray(v)) v.forEach((x) => walk(x, out));
      else if (v && typeof v === 'object') {
        if (typeof v.$ref === 'string') out.push(v.$ref);
        Object.values(v).forEach((x) => walk(x, out));
      }
      return out;
    };
    for (const r of walk(doc, [])) {
      const parts = decodeURIComponent(r.slice(2)).split('/').map((s) => s.replace(/~1/g, '/').replace(/~0/g, '~'));
      let at = doc;
      for (const part of parts) at = at?.[part];
      assert.ok(at !== undefined, `dangling ${r}`);
    }
  });
}
