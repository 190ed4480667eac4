// Restoring a backup's files against a real PostgreSQL and the real file system: the env's `files` come back as
// they were in the backup (beside the database), the previous content is kept, and a hostile archive is refused
// before anything — database, pre-restore backup or live directory — changes.
import { createHash } from 'node:crypto'
import { link, lstat, mkdir, readdir, readFile, readlink, rm, symlink, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import t, { type Test } from 'tap'
import {
  BackupLocks,
  listBackups,
  readManifest,
  restoreBackup,
  takeBackup,
  writeManifest,
  type DatabaseTarget,
} from '../../agent/backup/index.js'
import { manifestFileName } from '../../agent/backup/manifest.js'
import { skipUnless } from '../helpers/engines.js'
import { createTempDatabase, pgAvailable, query } from '../helpers/pg.js'
import { tarGz, type TarSpec } from '../helpers/tar.js'
import { tempDir } from '../helpers/tmp.js'

const skip = skipUnless(await pgAvailable(), 'PostgreSQL')
const target = (db: string): DatabaseTarget => ({ url: `postgres://postgres@127.0.0.1:5432/${db}`, password: 'postgres' })
const LONG = `${'a-very-long-file-name-'.repeat(6)}.txt` // past ustar's 100 bytes: a GNU long-name entry

/** Every entry below `dir`: type, and content or link target; `dir` itself as ''. */
async function snapshot(dir: string, rel = ''): Promise<Record<string, string>> {
  const out: Record<string, string> = {}
  const stat = await lstat(join(dir, rel))
  if (stat.isSymbolicLink()) out[rel] = `link → ${await readlink(join(dir, rel))}`
  else if (stat.isFile()) out[rel] = `file ${(stat.mode & 0o777).toString(8)} ${await readFile(join(dir, rel), 'utf8')}`
  else {
    out[rel] = `dir ${(stat.mode & 0o777).toString(8)}`
    for (const name of (await readdir(join(dir, rel))).sort()) Object.assign(out, await snapshot(dir, join(rel, name)))
  }
  return out
}

interface Rig {
  db: string
  dir: string
  root: string
  uploads: string
  config: string
  files: string[]
  locks: BackupLocks
}

async function rig(t: Test): Promise<Rig> {
  const { name: db } = await createTempDatabase(t)
  await query(db, "CREATE TABLE items (id int PRIMARY KEY, label text); INSERT INTO items VALUES (1, 'in the backup')")
  t.teardown(async () => {
    const left = await query<{ datname: string }>('postgres', `SELECT datname FROM pg_database WHERE datname LIKE '${db}\\_%'`)
    for (const { datname } of left) await query('postgres', `DROP DATABASE IF EXISTS "${datname}" WITH (FORCE)`)
  })
  const root = await tempDir(t)
  const uploads = join(root, 'srv', 'shop', 'uploads')
  const config = join(root, 'srv', 'shop', 'config.yaml')
  await mkdir(join(uploads, 'nested', 'deeper'), { recursive: true })
  await writeFile(join(uploads, 'a.txt'), 'a from the backup')
  await writeFile(join(uploads, 'nested', 'deeper', 'b.txt'), 'b from the backup')
  await writeFile(join(uploads, LONG), 'long')
  await symlink('nested/deeper/b.txt', join(uploads, 'b-link'))
  await link(join(uploads, 'a.txt'), join(uploads, 'a-hard'))
  await writeFile(config, 'setting: backup\n')
  return { db, dir: join(root, 'backups'), root, uploads, config, files: [uploads, config], locks: new BackupLocks() }
}

const take = (r: Rig, kind: 'nightly' | 'prerestore' = 'nightly') =>
  takeBackup({ dir: r.dir, app: 'shop', env: 'prod', kind, database: target(r.db), files: r.files, locks: r.locks })
const restore = (r: Rig, id: string, files = r.files) =>
  restoreBackup({ dir: r.dir, idOrName: id, database: target(r.db), files, takePrerestore: () => take(r, 'prerestore') })
const label = async (db: string) => (await query<{ label: string }>(db, 'SELECT label FROM items WHERE id = 1'))[0]?.label

t.test('restoreBackup: the files come back as in the backup, beside the database; the old content is kept', { skip }, async (t) => {
  const r = await rig(t)
  const m = await take(r)
  const uploadsThen = await snapshot(r.uploads)

  await query(r.db, "UPDATE items SET label = 'changed'")
  await writeFile(join(r.uploads, 'a.txt'), 'a changed')
  await writeFile(join(r.uploads, 'new.txt'), 'added after the backup')
  await rm(join(r.uploads, 'nested'), { recursive: true })
  await writeFile(r.config, 'setting: changed\n')
  const uploadsChanged = await snapshot(r.uploads)

  const result = await restore(r, m.id)
  t.teardown(() => query('postgres', `DROP DATABASE IF EXISTS "${result.oldDatabase}" WITH (FORCE)`))
  t.equal(await label(r.db), 'in the backup')
  t.same(await snapshot(r.uploads), uploadsThen, 'uploads as in the backup: files, modes, the symlink, the long name')
  t.equal(await readFile(join(r.uploads, 'a-hard'), 'utf8'), 'a from the backup')
  t.equal((await lstat(join(r.uploads, 'a-hard'))).ino, (await lstat(join(r.uploads, 'a.txt'))).ino, 'the hard link is one again')
  t.equal(await readFile(r.config, 'utf8'), 'setting: backup\n', 'a single file is restored too')
  const rid = result.prerestore.id
  t.same(result.files, {
    restored: [
      { path: r.uploads, old: `${r.uploads}.old-${rid}` },
      { path: r.config, old: `${r.config}.old-${rid}` },
    ],
    skipped: [],
  })
  t.same(await snapshot(`${r.uploads}.old-${rid}`), uploadsChanged, 'the previous uploads are kept')
  t.equal(await readFile(`${r.config}.old-${rid}`, 'utf8'), 'setting: changed\n')
  t.same(
    (await readdir(join(r.root, 'srv', 'shop'))).filter((n) => n.includes('.restore-')),
    [],
    'no side path left',
  )
  t.same(result.prerestore.files?.paths, r.files, 'the pre-restore backup holds the files too')
})

t.test('restoreBackup: a path the env no longer lists is not restored', { skip }, async (t) => {
  const r = await rig(t)
  const m = await take(r)
  await writeFile(r.config, 'setting: changed\n')
  const result = await restore(r, m.id, [r.uploads])
  t.teardown(() => query('postgres', `DROP DATABASE IF EXISTS "${result.oldDatabase}" WITH (FORCE)`))
  t.same(result.files?.skipped, [r.config])
  t.equal(await readFile(r.config, 'utf8'), 'setting: changed\n')
})

const hostile: [string, (uploads: string) => TarSpec[]][] = [
  [
    'an absolute path',
    (u) => [
      { name: `.${u}/`, type: '5' },
      { name: '/tmp/deploy-agent-evil', body: 'x' },
    ],
  ],
  [
    'a ../ path',
    (u) => [
      { name: `.${u}/`, type: '5' },
      { name: '../x', body: 'x' },
    ],
  ],
  ['a .. inside a backed-up path', (u) => [{ name: `.${u}/../../../x`, body: 'x' }]],
  [
    'a symlink to /etc',
    (u) => [
      { name: `.${u}/`, type: '5' },
      { name: `.${u}/etc`, type: '2', linkname: '/etc' },
    ],
  ],
  ['a symlink out by ../', (u) => [{ name: `.${u}/up`, type: '2', linkname: '../../..' }]],
  [
    'a hard link out',
    (u) => [
      { name: `.${u}/`, type: '5' },
      { name: `.${u}/passwd`, type: '1', linkname: './etc/passwd' },
    ],
  ],
  [
    'a device node',
    (u) => [
      { name: `.${u}/`, type: '5' },
      { name: `.${u}/mem`, type: '3' },
    ],
  ],
  ['a fifo', (u) => [{ name: `.${u}/fifo`, type: '6' }]],
  [
    'a write through a symlink',
    (u) => [
      { name: `.${u}/d`, type: '2', linkname: '.' },
      { name: `.${u}/d/x`, body: 'x' },
    ],
  ],
]

t.test('restoreBackup: a hostile files archive is refused and nothing changes', { skip }, async (t) => {
  const r = await rig(t)
  const m = await take(r)
  await query(r.db, "UPDATE items SET label = 'live'")
  await writeFile(join(r.uploads, 'live.txt'), 'written after the backup')
  const live = await snapshot(r.uploads)
  const archive = join(r.dir, m.files?.file ?? '')
  for (const [what, entries] of hostile) {
    // Whoever can write the backup directory can write a matching manifest too: the sha256 alone proves nothing.
    const bytes = tarGz(entries(r.uploads))
    await writeFile(archive, bytes)
    const files = { ...m.files!, bytes: bytes.length, sha256: createHash('sha256').update(bytes).digest('hex') }
    await writeManifest(r.dir, { ...(await readManifest(r.dir, manifestFileName(m))), files })
    await t.rejects(restore(r, m.id), { code: 'backup_invalid', message: /the files archive entry .*; nothing was restored/ }, what)
    t.same(await snapshot(r.uploads), live, `${what}: the live dir is untouched`)
    t.equal(await label(r.db), 'live', `${what}: the database is untouched`)
  }
  t.equal((await listBackups(r.dir)).length, 1, 'no pre-restore backup was taken')
  t.same((await readdir(join(r.root, 'srv', 'shop'))).sort(), ['config.yaml', 'uploads'], 'no side or old path')
  await t.rejects(lstat('/tmp/deploy-agent-evil'))
})
