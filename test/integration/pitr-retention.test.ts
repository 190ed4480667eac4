// PITR retention, the recoverable window and health against the real PostgreSQL on 127.0.0.1:5432 (a role, database
// and slot of the test's own: test/helpers/pitr.ts).
import { readdir, readFile, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import t from 'tap'
import { listBaseBackups } from '../../agent/pitr/base-backup.js'
import { segmentName, parseLsn, type BaseBackupInfo } from '../../agent/pitr/target.js'
import { skipUnless } from '../helpers/engines.js'
import { pgAvailable } from '../helpers/pg.js'
import { beforeMigration, ids, insert, range, setUpPitr } from '../helpers/pitr.js'

const skip = skipUnless(await pgAvailable(), 'PostgreSQL')
const DAY_MS = 86_400_000
const pause = (ms: number) => new Promise((r) => setTimeout(r, ms))

/** Makes a base backup look `days` older than `than` ended (retention reads base.json's endTime). */
async function age(baseDir: string, info: BaseBackupInfo, than: BaseBackupInfo, days: number): Promise<void> {
  const file = join(baseDir, info.id, 'base.json')
  const json = JSON.parse(await readFile(file, 'utf8')) as BaseBackupInfo
  json.endTime = new Date(Date.parse(than.endTime) - days * DAY_MS).toISOString()
  await writeFile(file, JSON.stringify(json))
}

t.test('PITR retention: old base backups and the WAL before the oldest kept one go; recovery after it stays exact', { skip }, async (t) => {
  const s = await setUpPitr(t)
  const paths = s.pitr.paths(s.target)
  const [a] = (await listBaseBackups(paths.base)) as [BaseBackupInfo]
  await s.sql('CREATE TABLE items (id int PRIMARY KEY, name text)')
  await insert(s, 1, 10)
  await pause(1100) // base backups are named by the second
  const b = await s.pitr.baseBackup(s.target)
  await insert(s, 11, 20)
  await pause(1100)
  const c = await s.pitr.baseBackup(s.target)
  // retention.days is 30: A ended 50 days before C, B 40 days before (B covers the start of the 30 days).
  await age(paths.base, a, c, 50)
  await age(paths.base, b, c, 40)
  const walBefore = await readdir(paths.wal)
  const firstKept = segmentName(b.timeline, parseLsn(b.startLsn) as bigint, b.walSegmentSize)

  const dry = await s.pitr.prune(s.target, { dryRun: true })
  t.match(dry.text, new RegExp(`delete ${a.id}  expired`))
  t.equal((await listBaseBackups(paths.base)).length, 3, 'a dry run removes nothing')

  const { text } = await s.pitr.prune(s.target)
  t.equal(
    text,
    [
      `keep   ${c.id}  newest, within 30 days`,
      `keep   ${b.id}  covers the start of the 30 days`,
      `delete ${a.id}  expired`,
      `wal    delete ${walBefore.filter((n) => /^[0-9A-F]{24}/.test(n) && n.slice(8, 24) < firstKept.slice(8)).length} files before ${firstKept} (the oldest kept base backup starts there)`,
    ].join('\n'),
  )
  t.same(
    (await listBaseBackups(paths.base)).map((x) => x.id),
    [b.id, c.id],
  )
  const walAfter = await readdir(paths.wal)
  t.ok(walAfter.length < walBefore.length, 'WAL was removed')
  t.same(
    walAfter.filter((n) => /^[0-9A-F]{24}/.test(n) && n.slice(8, 24) < firstKept.slice(8)),
    [],
    'no WAL before the oldest kept base backup is left',
  )

  // What is kept still recovers exactly; a point only the removed base backup reached is now refused.
  await insert(s, 21, 30)
  await beforeMigration(s, 'd_retention1')
  await s.sql('DELETE FROM items')
  await s.pitr.restore(s.target, { beforeDeploy: 'd_retention1' })
  t.same(await ids(s.db), range(1, 30))
  await t.rejects(s.pitr.restore(s.target, { lsn: a.endLsn }), { code: 'pitr_target_unreachable' })
})
