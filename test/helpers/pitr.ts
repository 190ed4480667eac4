// Point-in-time recovery against the real PostgreSQL on 127.0.0.1:5432: a role of the test's own with LOGIN
// REPLICATION (and CREATEDB CREATEROLE to restore), its own database and slot, and a PitrService streaming from it.
// Everything is removed in one teardown, the slot included: a forgotten slot fills the server's disk.
import { randomBytes } from 'node:crypto'
import { BackupService } from '../../agent/backup/service.js'
import { parseConfig } from '../../agent/config/load.js'
import { findTarget, type Target } from '../../agent/config/targets.js'
import { createLogger } from '../../agent/observability/logger.js'
import { PitrService, type PitrServiceOptions } from '../../agent/pitr/service.js'
import type { DeployPoint } from '../../agent/pitr/target.js'
import type { Config } from '../../agent/config/schema.js'
import { query } from './pg.js'
import { tempDir } from './tmp.js'

type Teardown = { teardown: (fn: () => unknown) => void }

/**
 * A role with LOGIN REPLICATION (and what a restore needs), its database, a slot name; all removed in one teardown
 * that first stops `user` (the service or agent streaming from the slot: an active slot cannot be dropped).
 */
export async function makePitrDatabase(t: Teardown, user: { stop?: () => Promise<unknown> } = {}) {
  const tag = `${process.pid}_${randomBytes(3).toString('hex')}`
  const role = `da_pitr_${tag}`
  const db = `da_pitr_${tag}`
  const slot = `da_pitr_${tag}`
  const password = randomBytes(12).toString('hex')
  await query('postgres', `CREATE ROLE ${role} LOGIN REPLICATION CREATEDB CREATEROLE PASSWORD '${password}'`)
  await query('postgres', `CREATE DATABASE ${db} OWNER ${role}`)
  // Granted in the postgres database, where the agent makes restore points: no GRANT lands in the app's dumps.
  await query('postgres', `GRANT EXECUTE ON FUNCTION pg_create_restore_point(text) TO ${role}`)
  t.teardown(async () => {
    await user.stop?.()
    // A pg_receivewal an agent killed by the test left behind still streams: its walsender is ended (it then exits,
    // --no-loop), and the slot is dropped once it is no longer active.
    const drop = `SELECT pg_terminate_backend(active_pid) FROM pg_replication_slots WHERE slot_name LIKE '${slot}%' AND active_pid IS NOT NULL;
      SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE slot_name LIKE '${slot}%' AND NOT active`
    for (let i = 0; i < 50; i++) {
      await query('postgres', drop)
      if ((await query('postgres', `SELECT 1 FROM pg_replication_slots WHERE slot_name LIKE '${slot}%'`)).length === 0) break
      await new Promise((r) => setTimeout(r, 100))
    }
    const dbs = await query<{ datname: string }>('postgres', `SELECT datname FROM pg_database WHERE datname LIKE '${db}%'`)
    for (const { datname } of dbs) await query('postgres', `DROP DATABASE IF EXISTS "${datname}" WITH (FORCE)`)
    await query('postgres', `REVOKE EXECUTE ON FUNCTION pg_create_restore_point(text) FROM ${role}`)
    await query('postgres', `DROP ROLE IF EXISTS ${role}`)
  })
  // The app's tables belong to the env's role, as they do when its migrations create them.
  const sql = (text: string) => query(db, `SET ROLE ${role}; ${text}`)
  return { role, db, slot, password, sql, url: `postgres://${role}:${password}@127.0.0.1:5432/${db}` }
}

/**
 * An agent config of one env (shop/prod) with PITR on the test database; `backups` adds to the backups section, and
 * `pitr: false` leaves PITR out (the database stays).
 */
export function pitrConfig(dir: string, d: { url: string; slot: string }, backups = '', pitr = true) {
  return parseConfig(
    `audience: web-1
stateDir: ${dir}/state
backups: { dir: ${dir}/backups, verify: none${backups} }
apps:
  shop:
    repo: /srv/shop.git
    envs:
      prod:
        ref: "tag:v*"
        ports: [18101, 18102]
        database: { url: "${d.url}"${pitr ? `, pitr: { slot: ${d.slot} }` : ''} }
`,
    {},
    'agent.yaml',
    dir,
  )
}

/** A started PitrService on a fresh database, its receiver running and its first base backup taken. */
/**
 * Waits until the env's PITR has started. The agent's retry waits are unref'd (they never keep a process alive on
 * their own): a test awaiting only them would end silently when a start fails (e.g. max_wal_senders taken by other
 * tests), so this wait holds the process up itself and fails after `ms`, saying where to look.
 */
export async function pitrReady(pitr: PitrService, target: Target, ms = 120_000): Promise<void> {
  let timer: NodeJS.Timeout | undefined
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`PITR did not start within ${ms / 1000} s (PITR_TEST_LOG=info shows why)`)), ms)
  })
  try {
    await Promise.race([pitr.ready(target), timeout])
  } finally {
    clearTimeout(timer)
  }
}

/**
 * A PitrService for `config`'s shop/prod, built as the agent builds one (the deploys' restore points kept in
 * `points`), handed to `own` before it starts (to stop it at teardown); resolves once it has started.
 */
export async function startPitr(config: Config, own: (pitr: PitrService) => void, service: Partial<PitrServiceOptions> = {}) {
  const logger = createLogger({ level: process.env.PITR_TEST_LOG ?? 'silent' })
  const points = new Map<string, DeployPoint>()
  const pitr = new PitrService({
    config,
    logger,
    backups: new BackupService({ config, logger }),
    deployPoint: (_t, id) => points.get(id),
    receiverBackoffMs: 200,
    ...service,
  })
  own(pitr)
  const target = findTarget(config, 'shop', 'prod')
  pitr.start()
  await pitrReady(pitr, target)
  return { pitr, target, points }
}

export async function setUpPitr(t: Teardown, o: { backups?: string; service?: Partial<PitrServiceOptions> } = {}) {
  const user: { stop?: () => Promise<unknown> } = {}
  const d = await makePitrDatabase(t, user)
  const dir = await tempDir(t, 'deploy-agent-pitr-test-')
  const config = pitrConfig(dir, d, o.backups)
  const { pitr, target, points } = await startPitr(config, (p) => (user.stop = () => p.stop()), o.service)
  return { ...d, pitr, target, points, dir, config }
}

export const ids = async (db: string): Promise<number[]> =>
  (await query<{ id: number }>(db, 'SELECT id FROM items ORDER BY id')).map((r) => r.id)
export const insert = (s: { sql: (text: string) => Promise<unknown> }, from: number, to: number) =>
  s.sql(`INSERT INTO items SELECT g, 'row ' || g FROM generate_series(${from}, ${to}) g`)
export const range = (from: number, to: number) => Array.from({ length: to - from + 1 }, (_, i) => from + i)

/** A deploy's restore point, taken the way the pipeline takes it before MIGRATING, kept as its record keeps it. */
export async function beforeMigration(s: { pitr: PitrService; target: Target; points: Map<string, DeployPoint> }, id: string) {
  const point = await s.pitr.restorePoint(s.target, id)
  s.points.set(id, point ?? {})
  return point
}
