import { readdir } from 'node:fs/promises'
import { join } from 'node:path'
import t from 'tap'
import { BackupLocks, lockFileName } from '../../agent/backup/lock.js'
import { listBackups } from '../../agent/backup/list.js'
import type { Manifest } from '../../agent/backup/manifest.js'
import { cleanPartials } from '../../agent/backup/take.js'

function manifest(base: string, id: string, createdAt: string): Manifest {
  return {
    v: 1,
    id,
    app: 'app',
    env: 'prod',
    kind: 'nightly',
    createdAt,
    file: `${base}.dump`,
    bytes: 5,
    sha256: 'a'.repeat(64),
    pgServerVersion: '15',
    pgDumpVersion: '15',
    durationMs: 1,
    verified: null,
    pinnedBy: null,
  }
}

const A = 'app_prod_20270102T030000Z_nightly_aaaaaaaa'
const B = 'app_prod_20270103T030000Z_nightly_bbbbbbbb'
const ORPHAN = 'app_prod_20270104T030000Z_nightly_cccccccc'
const NO_DUMP = 'app_prod_20270105T030000Z_nightly_dddddddd'

function fixture(): Record<string, string> {
  return {
    [`${A}.dump`]: 'PGDMP',
    [`${A}.manifest.json`]: JSON.stringify(manifest(A, 'aaaaaaaa', '2027-01-02T03:00:00Z')),
    [`${B}.dump`]: 'PGDMP',
    [`${B}.files.tar.gz`]: 'gz',
    [`${B}.manifest.json`]: JSON.stringify(manifest(B, 'bbbbbbbb', '2027-01-03T03:00:00Z')),
    [`${ORPHAN}.dump`]: 'PGDMP', // renamed into place, manifest never written
    [`${ORPHAN}.files.tar.gz`]: 'gz',
    [`${NO_DUMP}.manifest.json`]: JSON.stringify(manifest(NO_DUMP, 'dddddddd', '2027-01-05T03:00:00Z')),
    'app_prod_20270106T030000Z_nightly_eeeeeeee.manifest.json': '{ not json',
    [`${A}.dump.partial`]: 'PGD',
    [`.${B}.manifest.json.0123456789ab.tmp`]: '{}',
    [`${lockFileName('app', 'prod')}.0123456789ab.tmp`]: '1\n',
    'backup_20261231_235959.sql.gz': 'legacy',
    'backup_20250101_000000.sql.gz.partial': 'x',
    'notes.txt': 'mine',
    [`${ORPHAN}`]: 'not a suffix we write',
  }
}

t.test('listBackups: complete backups and legacy files, newest first; the rest is skipped and reported', async (t) => {
  const dir = t.testdir(fixture())
  const skipped: string[] = []
  const list = await listBackups(dir, { onSkip: (file) => skipped.push(file) })
  t.same(
    list.map((b) => [b.id, b.legacy, b.createdAt]),
    [
      ['bbbbbbbb', false, '2027-01-03T03:00:00Z'],
      ['aaaaaaaa', false, '2027-01-02T03:00:00Z'],
      ['backup_20261231_235959.sql.gz', true, '2026-12-31T23:59:59Z'],
    ],
  )
  t.match(list[2], { app: null, env: null, verified: null, bytes: 6, file: 'backup_20261231_235959.sql.gz' })
  t.same(skipped.sort(), [`${NO_DUMP}.manifest.json`, 'app_prod_20270106T030000Z_nightly_eeeeeeee.manifest.json'])
  t.same(await listBackups(join(dir, 'missing')), [])
})

t.test('cleanPartials: removes what interrupted backups left, never complete backups, legacy or unknown files', async (t) => {
  const dir = t.testdir(fixture())
  const removed = await cleanPartials(dir)
  t.same(
    removed.sort(),
    [
      `.${B}.manifest.json.0123456789ab.tmp`,
      `${lockFileName('app', 'prod')}.0123456789ab.tmp`,
      `${A}.dump.partial`,
      `${ORPHAN}.dump`,
      `${ORPHAN}.files.tar.gz`,
    ].sort(),
  )
  t.same(
    (await readdir(dir)).sort(),
    [
      `${A}.dump`,
      `${A}.manifest.json`,
      `${B}.dump`,
      `${B}.files.tar.gz`,
      `${B}.manifest.json`,
      ORPHAN,
      `${NO_DUMP}.manifest.json`,
      'app_prod_20270106T030000Z_nightly_eeeeeeee.manifest.json',
      'backup_20250101_000000.sql.gz.partial',
      'backup_20261231_235959.sql.gz',
      'notes.txt',
    ].sort(),
  )
  t.same(await cleanPartials(join(dir, 'missing')), [])
})

t.test('cleanPartials: the files of an app+env whose backup is running are left alone', async (t) => {
  const dir = t.testdir({ [`${A}.dump.partial`]: 'PGD', 'other_prod_20270102T030000Z_nightly_aaaaaaaa.dump.partial': 'PGD' })
  const locks = new BackupLocks()
  const release = await locks.acquire(dir, 'app', 'prod')
  t.same(await cleanPartials(dir, locks), ['other_prod_20270102T030000Z_nightly_aaaaaaaa.dump.partial'])
  await release()
  t.same(await cleanPartials(dir, locks), [`${A}.dump.partial`])
})
