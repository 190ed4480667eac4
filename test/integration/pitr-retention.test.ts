// PITR retention, the recoverable window and health against the real PostgreSQL on 127.0.0.1:5432 (a role, database
// and slot of the test's own: test/helpers/pitr.ts).
import { readdir, readFile, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import t from 'tap'
import { findTarget, type Target } from '../../agent/config/targets.js'
import type { Notice } from '../../agent/notify/notifier.js'
import { listBaseBackups } from '../../agent/pitr/base-backup.js'
import type { PitrEnvStatus } from '../../agent/pitr/monitor.js'
import { PitrService } from '../../agent/pitr/service.js'
import { BackupService } from '../../agent/backup/service.js'
import { createLogger } from '../../agent/observability/logger.js'
import { formatLsn, segmentName, parseLsn, type BaseBackupInfo } from '../../agent/pitr/target.js'
import { skipUnless } from '../helpers/engines.js'
import { pgAvailable, query, queryAt } from '../helpers/pg.js'
import { canRunPrivatePostgres, startPrivatePostgres } from '../helpers/private-pg.js'
import { tempDir } from '../helpers/tmp.js'
import { beforeMigration, ids, insert, pitrConfig, pitrReady, range, setUpPitr } from '../helpers/pitr.js'

const skip = skipUnless(await pgAvailable(), 'PostgreSQL')
const privateSkip = skipUnless(await canRunPrivatePostgres(), 'a private PostgreSQL server (root, a postgres user, the server binaries)')
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

t.test(
  'PITR status: the window runs from the oldest base backup to what was flushed; a receiver down is announced once',
  { skip },
  async (t) => {
    const notices: Notice[] = []
    const s = await setUpPitr(t, { service: { notify: (n) => notices.push(n), receiverDownAfterMs: 1500, healthIntervalMs: 200 } })
    const [base] = (await listBaseBackups(s.pitr.paths(s.target).base)) as [BaseBackupInfo]
    // A write after the base backup: the receiver confirms what it flushed as new WAL arrives (the base backup ends
    // with a segment switch, and a quiet server may send nothing after it for a while).
    await s.sql('CREATE TABLE items (id int PRIMARY KEY, name text)')
    const past = (st: PitrEnvStatus | null) =>
      st?.window.latest?.time != null && (parseLsn(st.window.latest.lsn) as bigint) >= (parseLsn(base.endLsn) as bigint)
    let status = (await s.pitr.check(s.target)) as PitrEnvStatus
    for (let i = 0; i < 50 && !past(status); i++) status = (await waitCheck(s)) as PitrEnvStatus
    t.ok(past(status), 'the latest point is past the base backup, and dated')
    t.match(status, {
      slot: s.slot,
      window: {
        earliest: { baseBackup: base.id, lsn: base.endLsn, time: base.endTime },
        latest: { lsn: /^[0-9A-F]+\/[0-9A-F]+$/, time: /Z$/ },
      },
      receiver: { running: true, streaming: true, downSince: null },
      walStatus: 'reserved',
      safeWalSize: null,
      problems: [],
      error: null,
    })
    t.ok(typeof status.receiveLagBytes === 'number' && (status.walDiskFreeBytes as number) > 0)

    // The role loses REPLICATION and its walsender is ended: pg_receivewal cannot stream again until it is back.
    await query('postgres', `ALTER ROLE ${s.role} NOREPLICATION`)
    await query('postgres', `SELECT pg_terminate_backend(active_pid) FROM pg_replication_slots WHERE slot_name = '${s.slot}'`)
    for (let i = 0; i < 100 && notices.length === 0; i++) await pause(100)
    t.match(notices, [{ event: 'pitr.receiver_down', app: 'shop', env: 'prod', reason: /has not streamed from slot/ }])
    t.match(s.pitr.status(s.target), { receiver: { streaming: false }, problems: [{ kind: 'receiver_down' }] })
    await pause(600)
    t.equal(notices.length, 1, 'announced once while it lasts')
    await query('postgres', `ALTER ROLE ${s.role} REPLICATION`)
    for (let i = 0; i < 200 && s.pitr.status(s.target)?.receiver.streaming !== true; i++) await pause(100)
    t.match(s.pitr.status(s.target), { receiver: { streaming: true }, problems: [] }, 'streaming again')
  },
)

/** A check a little later. */
async function waitCheck(s: { pitr: PitrService; target: Target }) {
  await pause(100)
  return s.pitr.check(s.target)
}

t.test(
  'PITR slots: removing PITR from the config drops the slot the agent made at start-up, never one it did not make',
  { skip },
  async (t) => {
    const s = await setUpPitr(t)
    const foreign = `${s.slot}_theirs`
    await query('postgres', `SELECT pg_create_physical_replication_slot('${foreign}')`)
    await s.pitr.stop()
    const slots = async () =>
      (
        await query<{ slot_name: string }>(
          'postgres',
          `SELECT slot_name FROM pg_replication_slots WHERE slot_name LIKE '${s.slot}%' ORDER BY 1`,
        )
      ).map((r) => r.slot_name)
    t.same(await slots(), [s.slot, foreign])
    const ledger = JSON.parse(await readFile(join(s.dir, 'state', 'pitr-slots.json'), 'utf8')) as { slots: { slot: string }[] }
    t.same(
      ledger.slots.map((r) => r.slot),
      [s.slot],
      'the agent recorded the slot it made',
    )

    // The same env, its database kept, PITR gone from its config: start-up drops the recorded slot only.
    const logger = createLogger({ level: 'silent' })
    const config = pitrConfig(s.dir, s, '', false)
    const after = new PitrService({ config, logger, backups: new BackupService({ config, logger }), deployPoint: () => undefined })
    after.start()
    await after.slotsSettled()
    await after.stop()
    t.same(await slots(), [foreign], "the agent's slot is dropped; the other one stays")
    t.same(JSON.parse(await readFile(join(s.dir, 'state', 'pitr-slots.json'), 'utf8')), { version: 1, slots: [] })
  },
)

t.test(
  'PITR health: a slot lost to max_slot_wal_keep_size is announced; a new slot gets a new base backup',
  { skip: privateSkip },
  async (t) => {
    const server = await startPrivatePostgres(t)
    const sql = (text: string, db = 'postgres') => queryAt(server.url(db), text)
    await sql('CREATE DATABASE app')
    await sql("ALTER SYSTEM SET max_slot_wal_keep_size = '16MB'")
    await sql('SELECT pg_reload_conf()')
    const dir = await tempDir(t, 'deploy-agent-pitr-lost-')
    const config = pitrConfig(dir, { url: server.url('app'), slot: 'deploy_agent_shop_prod' })
    const logger = createLogger({ level: process.env.PITR_TEST_LOG ?? 'silent' })
    const notices: Notice[] = []
    const target = findTarget(config, 'shop', 'prod')
    /** An agent's PITR on this config (each stopped in teardown, before the server's own teardown removes it). */
    const run = async () => {
      const pitr = new PitrService({
        config,
        logger,
        backups: new BackupService({ config, logger }),
        deployPoint: () => undefined,
        receiverBackoffMs: 100,
        healthIntervalMs: 200,
        notify: (n) => notices.push(n),
      })
      t.teardown(() => pitr.stop())
      pitr.start()
      await pitrReady(pitr, target)
      return pitr
    }
    const first = await run()
    const bases = (await listBaseBackups(first.paths(target).base)).length
    // The agent is down while the server writes past max_slot_wal_keep_size: the next checkpoint invalidates the slot.
    await first.stop()
    await sql('CREATE TABLE filler (x text)', 'app')
    for (let i = 0; i < 4; i++) {
      await sql(`INSERT INTO filler SELECT repeat('x', 1000) FROM generate_series(1, 20000)`, 'app')
      await sql('SELECT pg_switch_wal()')
    }
    await sql('CHECKPOINT')
    const second = await run()
    for (let i = 0; i < 100 && !notices.some((n) => n.event === 'pitr.slot_lost'); i++) await pause(100)
    t.match(notices, [{ event: 'pitr.slot_lost', app: 'shop', env: 'prod', reason: /is lost/, hint: /pg_drop_replication_slot/ }])
    t.match(second.status(target), { walStatus: 'lost', problems: [{ kind: 'slot_lost' }] })
    await second.stop()

    // What the hint says: drop the slot, start again. The agent makes a new slot, and a base backup after it.
    await sql('SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots')
    const third = await run()
    t.equal((await listBaseBackups(third.paths(target).base)).length, bases + 1, 'a new base backup for the new slot')
    let status = await third.check(target)
    for (let i = 0; i < 100 && status?.receiver.streaming !== true; i++) status = await waitCheck({ pitr: third, target })
    t.match(status, { walStatus: 'reserved', receiver: { streaming: true }, problems: [] }, 'the receiver streams from the new slot')
    t.ok(
      (await readdir(third.paths(target).wal)).some((n) => n.startsWith('before-')),
      'the WAL of the lost slot was set aside',
    )
    // What the lost slot did not receive is a gap in the window: up to the new base backup, and refused inside it.
    const [oldBase, newBase] = (await listBaseBackups(third.paths(target).base)) as [BaseBackupInfo, BaseBackupInfo]
    const gaps = status?.window.gaps ?? []
    t.match(gaps, [{ from: { lsn: /\//, time: /Z$/ }, to: { lsn: newBase.endLsn, time: newBase.endTime, baseBackup: newBase.id } }])
    const from = parseLsn(gaps[0]?.from.lsn ?? '') as bigint
    t.ok(from > (parseLsn(oldBase.endLsn) as bigint) && from < (parseLsn(newBase.endLsn) as bigint), 'from the last WAL of the old slot')
    const inside = formatLsn((from + (parseLsn(newBase.endLsn) as bigint)) / 2n)
    await t.rejects(third.restore(target, { lsn: inside }), {
      code: 'pitr_target_unreachable',
      message: /is in a gap of the recoverable window/,
    })
  },
)
