// The PITR WAL dir's disk fills up: the receiver fails mid-segment (a truncated `.partial`), `pitr.disk_full` is
// announced, and once space is freed the receiver resumes and recovery to a later point is exact. The WAL dir is a
// small tmpfs of the test's own (root only) on the real PostgreSQL on 127.0.0.1:5432 (test/helpers/pitr.ts).
import { execFile } from 'node:child_process'
import { mkdir, readdir, rm, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { promisify } from 'node:util'
import t from 'tap'
import type { Notice } from '../../agent/notify/notifier.js'
import { skipUnless } from '../helpers/engines.js'
import { pgAvailable } from '../helpers/pg.js'
import { beforeMigration, ids, insert, makePitrDatabase, pitrConfig, range, startPitr } from '../helpers/pitr.js'
import { tempDir } from '../helpers/tmp.js'

const run = promisify(execFile)
const MB = 1024 * 1024
const pause = (ms: number) => new Promise((r) => setTimeout(r, ms))
const skip = skipUnless((await pgAvailable()) && process.getuid?.() === 0, 'PostgreSQL and root (to mount a tmpfs)')

t.test('PITR: the WAL disk full stops the receiver and is announced; freed, it resumes and recovery stays exact', { skip }, async (t) => {
  const user: { stop?: () => Promise<unknown> } = {}
  const d = await makePitrDatabase(t, user)
  const dir = await tempDir(t, 'deploy-agent-pitr-full-')
  const config = pitrConfig(dir, d)
  const wal = join(dir, 'backups', 'pitr', 'shop_prod', 'wal')
  await mkdir(wal, { recursive: true, mode: 0o700 })
  // 96 MB, 64 of them taken by a file the "operator" removes later: 32 MB for WAL, two gzip'd segments or so.
  await run('mount', ['-t', 'tmpfs', '-o', 'size=96m,mode=0700', 'deploy-agent-test-wal', wal])
  t.teardown(async () => {
    await user.stop?.()
    await run('umount', [wal])
  })
  await writeFile(join(wal, 'ballast'), Buffer.alloc(64 * MB, 1))

  const notices: Notice[] = []
  const { pitr, target, points } = await startPitr(config, (p) => (user.stop = () => p.stop()), {
    receiverBackoffMs: 100,
    healthIntervalMs: 200,
    notify: (n) => notices.push(n),
  })
  const s = { ...d, pitr, target, points }

  await d.sql('CREATE TABLE items (id int PRIMARY KEY, name text)')
  await insert(s, 1, 10)
  // About 60 MB of WAL that gzip cannot shrink (random bytes): more than the disk has left.
  await d.sql(
    "CREATE TABLE noise AS SELECT g AS id, decode(string_agg(md5(random()::text), ''), 'hex') AS b FROM generate_series(1, 800000) g, generate_series(1, 4) r GROUP BY g",
  )
  for (let i = 0; i < 300 && !notices.some((n) => n.event === 'pitr.disk_full'); i++) await pause(100)
  t.match(notices, [{ event: 'pitr.disk_full', app: 'shop', env: 'prod', reason: /WAL dir's disk is full/ }])
  const restartsWhenFull = pitr.receiver(target)?.restarts ?? 0
  for (let i = 0; i < 300 && (pitr.receiver(target)?.restarts ?? 0) === restartsWhenFull; i++) await pause(100)
  t.ok((pitr.receiver(target)?.restarts ?? 0) > restartsWhenFull, 'the receiver fails while the disk is full')
  t.ok(
    (await readdir(wal)).some((n) => n.endsWith('.partial')),
    'it left a segment received in part, cut short where the disk ran out',
  )

  // Space is freed: the receiver catches up with what the slot kept on the server, and recovery past it is exact.
  await rm(join(wal, 'ballast'))
  await insert(s, 11, 20)
  await beforeMigration(s, 'd_diskfull01')
  t.match(await pitr.check(target), { problems: [] }, 'the problem cleared')
  await d.sql('DELETE FROM items; DROP TABLE noise')
  await pitr.restore(target, { beforeDeploy: 'd_diskfull01' })
  t.same(await ids(d.db), range(1, 20))
})
