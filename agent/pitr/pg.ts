// The SQL of point-in-time recovery, run as the env's own role: its replication slot, restore points, what the
// receiver has flushed (the slot's restart_lsn: pg_stat_replication.flush_lsn is hidden from non-superusers).
import { setTimeout as sleep } from 'node:timers/promises'
import { onDatabase, withClient, type Connection } from '../pg/connection.js'
import { PitrError } from './errors.js'
import { formatLsn, parseLsn } from './target.js'

/** Restore points and slots are cluster-wide: they are made from this database, so no GRANT lands in the app's dump. */
export const MAINTENANCE_DB = 'postgres'

const admin = (conn: Connection) => onDatabase(conn, MAINTENANCE_DB)

/**
 * Creates the physical slot, WAL reserved at once, unless it exists (after `beforeCreate`: the agent records the
 * slots it makes); answers whether it was created.
 */
export async function ensureSlot(
  conn: Connection,
  slot: string,
  beforeCreate: () => Promise<void> = async () => undefined,
): Promise<boolean> {
  return withClient(admin(conn), async (client) => {
    const { rowCount } = await client.query('SELECT 1 FROM pg_replication_slots WHERE slot_name = $1', [slot])
    if (rowCount === 1) return false
    await beforeCreate()
    await client.query('SELECT pg_create_physical_replication_slot($1, true)', [slot])
    return true
  })
}

/**
 * Ends the connection streaming from `slot`, if one does: at start-up that is the pg_receivewal a killed agent left
 * running (it exits, --no-loop), which would hold the slot and keep the agent's own receiver out. Only the agent's
 * receiver uses its slot. Answers the ended backend's pid, or null.
 */
export async function releaseSlot(conn: Connection, slot: string): Promise<number | null> {
  // The slot is picked in a subquery PostgreSQL cannot flatten (OFFSET 0): in one WHERE the planner runs
  // pg_terminate_backend before the slot_name test, on every active slot's walsender — other envs' receivers, a
  // standby's — and fails on those of roles it may not signal.
  const { rows } = await withClient(admin(conn), (client) =>
    client.query<{ pid: number }>(
      `SELECT active_pid AS pid FROM (SELECT active_pid FROM pg_replication_slots WHERE slot_name = $1 AND active_pid IS NOT NULL OFFSET 0) held
        WHERE pg_terminate_backend(active_pid)`,
      [slot],
    ),
  )
  return rows[0]?.pid ?? null
}

export async function dropSlot(conn: Connection, slot: string): Promise<void> {
  await withClient(admin(conn), (client) =>
    client.query('SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE slot_name = $1', [slot]),
  )
}

/** What the receiver has flushed, as the slot records it; null before it first reported. */
export async function flushedLsn(conn: Connection, slot: string): Promise<string | null> {
  const { rows } = await withClient(admin(conn), (client) =>
    client.query<{ lsn: string | null }>('SELECT restart_lsn::text AS lsn FROM pg_replication_slots WHERE slot_name = $1', [slot]),
  )
  if (rows.length === 0) throw new PitrError('pitr_failed', `replication slot ${slot} does not exist`)
  return rows[0]?.lsn ?? null
}

/**
 * `pg_create_restore_point(name)` and the WAL insert position just after its record: the first record of what follows
 * (the migration) starts there or later, so recovery stopping before that position (not inclusive) is exact.
 * pg_current_wal_lsn() is the *write* position, which may lag behind the record just inserted.
 */
export async function createRestorePoint(conn: Connection, name: string): Promise<{ restorePoint: string; lsn: string }> {
  const { rows } = await withClient(admin(conn), (client) =>
    client.query<{ lsn: string }>('SELECT pg_create_restore_point($1), pg_current_wal_insert_lsn()::text AS lsn', [name]),
  )
  return { restorePoint: name, lsn: (rows[0] as { lsn: string }).lsn }
}

/**
 * The server's clock, after a commit made at that instant: recovery to a time stops at the first commit after it,
 * so a quiet database would otherwise have nothing to stop at. Answers the clock and the position of that commit.
 */
export async function commitNow(conn: Connection): Promise<{ now: Date; lsn: string }> {
  return withClient(admin(conn), async (client) => {
    await client.query('BEGIN')
    const { rows } = await client.query<{ now: Date }>('SELECT pg_current_xact_id(), clock_timestamp() AS now')
    await client.query('COMMIT')
    const { rows: at } = await client.query<{ lsn: string }>('SELECT pg_current_wal_insert_lsn()::text AS lsn')
    return { now: (rows[0] as { now: Date }).now, lsn: (at[0] as { lsn: string }).lsn }
  })
}

/** Waits until the receiver has flushed past `lsn` (polling the slot), or throws pitr_not_flushed after `timeoutMs`. */
export async function waitFlushed(conn: Connection, slot: string, lsn: string, timeoutMs: number, pollMs = 100): Promise<void> {
  const want = parseLsn(lsn) as bigint
  const deadline = Date.now() + timeoutMs
  for (;;) {
    const at = await flushedLsn(conn, slot)
    const got = at === null ? null : parseLsn(at)
    if (got !== null && got >= want) return
    if (Date.now() >= deadline)
      throw new PitrError(
        'pitr_not_flushed',
        `the WAL receiver of slot ${slot} has not flushed past ${formatLsn(want)} within ${Math.round(timeoutMs / 1000)} s (it is at ${at ?? 'nothing yet'}); is pg_receivewal running?`,
      )
    await sleep(pollMs)
  }
}

/** The slot as the server sees it, and the WAL position and clock now (one query: they are read together). */
export interface SlotHealth {
  /** Null when the slot does not exist. */
  slot: { walStatus: string | null; safeWalSize: number | null; active: boolean; restartLsn: string | null } | null
  currentLsn: string
  serverNow: Date
}

export async function slotHealth(conn: Connection, slot: string): Promise<SlotHealth> {
  const { rows } = await withClient(admin(conn), (client) =>
    client.query<{
      slot_name: string | null
      wal_status: string | null
      safe_wal_size: string | null
      active: boolean | null
      restart_lsn: string | null
      current: string
      now: Date
    }>(
      `SELECT s.slot_name, s.wal_status, s.safe_wal_size::text, s.active, s.restart_lsn::text,
              pg_current_wal_lsn()::text AS current, clock_timestamp() AS now
         FROM (SELECT 1) AS one LEFT JOIN pg_replication_slots s ON s.slot_name = $1`,
      [slot],
    ),
  )
  const row = rows[0] as (typeof rows)[number]
  return {
    slot:
      row.slot_name === null
        ? null
        : {
            walStatus: row.wal_status,
            safeWalSize: row.safe_wal_size === null ? null : Number(row.safe_wal_size),
            active: row.active === true,
            restartLsn: row.restart_lsn,
          },
    currentLsn: row.current,
    serverNow: row.now,
  }
}
