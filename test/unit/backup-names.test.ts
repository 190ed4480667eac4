import { mkdir, symlink, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import t from 'tap'
import {
  backupBaseName,
  backupFileName,
  formatStamp,
  newBackupId,
  parseBackupName,
  parseLegacyName,
  resolveBackupPath,
} from '../../agent/backup/names.js'

const at = new Date('2027-03-05T04:05:06.789Z')
const BASE = 'lifeos_production_20270305T040506Z_nightly_0a1b2c3d'

t.test('names: a base name formats and parses back, for every part', async (t) => {
  const base = backupBaseName({ app: 'lifeos', env: 'production', createdAt: at, kind: 'nightly', id: '0a1b2c3d' })
  t.equal(base, BASE)
  t.equal(formatStamp(at), '20270305T040506Z')
  for (const part of ['dump', 'manifest', 'files'] as const) {
    const parsed = parseBackupName(backupFileName(base, part))
    t.match(parsed, { app: 'lifeos', env: 'production', kind: 'nightly', id: '0a1b2c3d', base, part })
    t.equal(parsed?.createdAt.toISOString(), '2027-03-05T04:05:06.000Z')
  }
  t.equal(backupFileName(base, 'files'), `${BASE}.files.tar.gz`)
  t.equal(parseBackupName(base)?.part, 'dump', 'a bare base name names the dump')
})

t.test('names: app and env names with dashes split unambiguously; ids are 8 lowercase hex', async (t) => {
  const base = backupBaseName({ app: 'my-app', env: 'pre-prod', createdAt: at, kind: 'prerestore', id: newBackupId() })
  t.match(parseBackupName(`${base}.dump`), { app: 'my-app', env: 'pre-prod', kind: 'prerestore' })
  for (let i = 0; i < 20; i++) t.match(newBackupId(), /^[0-9a-f]{8}$/)
})

t.test('names: names that are not config names, ids or kinds are refused', async (t) => {
  t.throws(() => backupBaseName({ app: 'My_App', env: 'prod', createdAt: at, kind: 'manual', id: '0a1b2c3d' }), { code: 'invalid_request' })
  t.throws(() => backupBaseName({ app: 'app', env: '../x', createdAt: at, kind: 'manual', id: '0a1b2c3d' }), { code: 'invalid_request' })
  t.throws(() => backupBaseName({ app: 'app', env: 'prod', createdAt: at, kind: 'manual', id: 'XYZ' }), { code: 'invalid_request' })
  t.throws(() => backupBaseName({ app: 'app', env: 'prod', createdAt: at, kind: 'weekly' as never, id: '0a1b2c3d' }), {
    code: 'invalid_request',
  })
})

t.test('names: what is not a backup name parses as null', async (t) => {
  for (const name of [
    'lifeos_production_20270230T040506Z_nightly_0a1b2c3d.dump', // 30 February
    'lifeos_production_20270305T250506Z_nightly_0a1b2c3d.dump', // 25 o'clock
    'lifeos_production_20270305T040506Z_hourly_0a1b2c3d.dump',
    'lifeos_production_20270305T040506Z_nightly_0A1B2C3D.dump',
    `${BASE}.dump.partial`,
    `${BASE}.sql`,
    'lifeos_20270305T040506Z_nightly_0a1b2c3d.dump',
  ])
    t.equal(parseBackupName(name), null, name)
})

t.test('names: legacy names are read as UTC, invalid dates are not names', async (t) => {
  t.equal(parseLegacyName('backup_20240229_235959.sql.gz')?.createdAt.toISOString(), '2024-02-29T23:59:59.000Z')
  t.equal(parseLegacyName('backup_20230229_120000.sql.gz'), null)
  t.equal(parseLegacyName('backup_20240101_120000.sql'), null)
  t.equal(parseLegacyName('xbackup_20240101_120000.sql.gz'), null)
})

t.test('resolveBackupPath: anything but a plain file name is refused with 400 before the disk is read', async (t) => {
  const dir = join(t.testdir(), 'does-not-exist')
  for (const name of [
    '../../etc/passwd',
    '..',
    '.',
    'a/b',
    '/etc/passwd',
    'a\0b',
    'x..y.dump',
    '.lock-app_prod',
    '',
    ' x',
    '-rf',
    'a\\b',
  ]) {
    await t.rejects(resolveBackupPath(dir, name), { code: 'invalid_request', statusCode: 400 }, JSON.stringify(name))
  }
})

t.test('resolveBackupPath: by id, by any of its file names, and legacy files', async (t) => {
  const dir = t.testdir({
    [`${BASE}.dump`]: 'PGDMP',
    [`${BASE}.manifest.json`]: '{}',
    'backup_20240101_120000.sql.gz': 'gz',
  })
  const expected = { format: 'agent', path: join(dir, `${BASE}.dump`), manifestPath: join(dir, `${BASE}.manifest.json`) }
  t.match(await resolveBackupPath(dir, '0a1b2c3d'), expected)
  t.match(await resolveBackupPath(dir, `${BASE}.dump`), expected)
  t.match(await resolveBackupPath(dir, `${BASE}.manifest.json`), expected)
  t.match(await resolveBackupPath(dir, BASE), expected)
  t.match(await resolveBackupPath(dir, 'backup_20240101_120000.sql.gz'), {
    format: 'legacy',
    path: join(dir, 'backup_20240101_120000.sql.gz'),
  })
})

t.test('resolveBackupPath: missing backups, dumps without a manifest, symlinks and non-backups are 404', async (t) => {
  const dir = t.testdir({
    'app_prod_20270101T000000Z_manual_11111111.dump': 'PGDMP', // no manifest: never completed
    passwd: 'root:x:0:0',
  })
  await symlink('/etc/passwd', join(dir, 'backup_20240101_120000.sql.gz'))
  await mkdir(join(dir, 'app_prod_20270101T000000Z_manual_22222222.manifest.json'))
  await writeFile(join(dir, 'app_prod_20270101T000000Z_manual_22222222.dump'), 'PGDMP')
  for (const name of [
    'deadbeef',
    '11111111',
    'app_prod_20270101T000000Z_manual_11111111.dump',
    'backup_20240101_120000.sql.gz',
    'passwd',
    'app_prod_20270101T000000Z_manual_22222222.dump',
    'backup_20250101_120000.sql.gz',
  ]) {
    await t.rejects(resolveBackupPath(dir, name), { code: 'not_found', statusCode: 404 }, name)
  }
  await t.rejects(resolveBackupPath(join(dir, 'missing'), 'deadbeef'), { code: 'not_found' })
})
