import { readdir, readFile, stat } from 'node:fs/promises'
import { join } from 'node:path'
import t from 'tap'
import { manifestFileName, parseManifest, readManifest, writeManifest, type Manifest } from '../../agent/backup/manifest.js'

const BASE = 'lifeos_production_20270305T040506Z_nightly_0a1b2c3d'
const manifest = (): Manifest => ({
  v: 1,
  id: '0a1b2c3d',
  app: 'lifeos',
  env: 'production',
  kind: 'nightly',
  createdAt: '2027-03-05T04:05:06Z',
  file: `${BASE}.dump`,
  bytes: 10,
  sha256: 'a'.repeat(64),
  pgServerVersion: '15.18',
  pgDumpVersion: 'pg_dump (PostgreSQL) 15.18',
  durationMs: 5,
  verified: null,
  pinnedBy: null,
})

t.test('manifest: written atomically with mode 0600 and read back', async (t) => {
  const dir = t.testdir()
  const m = manifest()
  m.files = { file: `${BASE}.files.tar.gz`, bytes: 3, sha256: 'b'.repeat(64), paths: ['/srv/uploads'] }
  await writeManifest(dir, m)
  t.same(await readdir(dir), [`${BASE}.manifest.json`])
  t.equal((await stat(join(dir, manifestFileName(m)))).mode & 0o777, 0o600)
  t.same(await readManifest(dir, `${BASE}.manifest.json`), m)
  t.match(await readFile(join(dir, `${BASE}.manifest.json`), 'utf8'), /^\{\n {2}"v": 1,/)
})

t.test('manifest: unknown fields are kept on a rewrite', async (t) => {
  const text = JSON.stringify({ ...manifest(), later: { x: 1 } })
  t.same((parseManifest(text, `${BASE}.manifest.json`) as unknown as { later: unknown }).later, { x: 1 })
})

t.test('manifest: a manifest that does not describe its own backup is refused', async (t) => {
  const name = `${BASE}.manifest.json`
  const cases: Array<[string, Partial<Manifest> | Record<string, unknown>]> = [
    ['file outside', { file: '../../etc/passwd' }],
    ['another dump', { file: 'lifeos_production_20270305T040506Z_nightly_ffffffff.dump' }],
    ['another id', { id: 'ffffffff' }],
    ['another app', { app: 'other' }],
    ['another kind', { kind: 'manual' }],
    ['archive elsewhere', { files: { file: '/etc/shadow', bytes: 1, sha256: 'b'.repeat(64), paths: [] } }],
    ['version', { v: 2 }],
    ['sha256', { sha256: 'xyz' }],
    ['verified', { verified: { ok: 'yes' } }],
  ]
  for (const [label, patch] of cases) {
    t.throws(() => parseManifest(JSON.stringify({ ...manifest(), ...patch }), name), label)
  }
  t.throws(() => parseManifest('{', name), /not JSON/)
  t.throws(() => parseManifest(JSON.stringify(manifest()), `${BASE}.dump`), /not a manifest file name/)
})
