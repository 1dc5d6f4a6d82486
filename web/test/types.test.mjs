// The checked-in declarations must be exactly what `npm run types` makes today:
// protocol.d.ts from the JSON Schemas, parley-client.d.ts from the library's JSDoc.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { OUTPUT, generate } from '../scripts/generate-types.mjs';

const web = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const STALE = 'is stale; regenerate it with `npm run types` in web/';

test('protocol.d.ts matches protocol/schema/', () => {
  assert.ok(readFileSync(OUTPUT, 'utf8') === generate(), `web/protocol.d.ts ${STALE}`);
});

test('parley-client.d.ts matches the JSDoc of parley-client.js', () => {
  const out = mkdtempSync(path.join(tmpdir(), 'parley-client-types-'));
  try {
    execFileSync(path.join(web, 'node_modules', '.bin', 'tsc'), ['-p', web, '--outDir', out], { stdio: 'inherit' });
    const fresh = readFileSync(path.join(out, 'parley-client.d.ts'), 'utf8');
    assert.ok(readFileSync(path.join(web, 'parley-client.d.ts'), 'utf8') === fresh, `web/parley-client.d.ts ${STALE}`);
  } finally {
    rmSync(out, { recursive: true, force: true });
  }
});
