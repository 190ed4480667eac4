// releaseSlot ends the walsender on the env's own slot and no other: two roles each stream from their own slot
// with a real pg_receivewal on the real PostgreSQL (127.0.0.1:5432), and one role's start-up release must neither
// touch the other's stream (nor a second stream of its own role) nor fail because it may not signal it.
import { spawn, type ChildProcess } from 'node:child_process'
import t from 'tap'
import { connectionOf } from '../../agent/pg/connection.js'
import { ensureSlot, releaseSlot } from '../../agent/pitr/pg.js'
import { skipUnless } from '../helpers/engines.js'
import { pgAvailable, query } from '../helpers/pg.js'
import { makePitrDatabase } from '../helpers/pitr.js'
import { tempDir } from '../helpers/tmp.js'

const skip = skipUnless(await pgAvailable(), 'PostgreSQL')
const pause = (ms: number) => new Promise((r) => setTimeout(r, ms))

type Database = Awaited<ReturnType<typeof makePitrDatabase>>

/** A pg_receivewal of `d`'s role streaming from `slot` into a temp dir; resolves once the slot is active. */
async function stream(t: Parameters<typeof tempDir>[0], d: Database, slot: string): Promise<ChildProcess> {
  const conn = connectionOf({ url: d.url })
  await ensureSlot(conn, slot)
  const dir = await tempDir(t, 'deploy-agent-release-slot-')
  const child = spawn('pg_receivewal', [`--dbname=${conn.url}`, `--slot=${slot}`, `--directory=${dir}`, '--no-loop', '--no-password'], {
    env: { ...process.env, PGPASSWORD: d.password },
    stdio: 'ignore',
  })
  t.teardown(() => child.kill('SIGKILL'))
  for (let i = 0; i < 100 && !(await activePid(slot)); i++) await pause(100)
  return child
}

async function activePid(slot: string): Promise<number | null> {
  const rows = await query<{ pid: number | null }>(
    'postgres',
    `SELECT active_pid AS pid FROM pg_replication_slots WHERE slot_name = '${slot}'`,
  )
  return rows[0]?.pid ?? null
}

t.test('releaseSlot: ends the stream on its own slot only, whoever streams from the others', { skip }, async (t) => {
  const a = await makePitrDatabase(t)
  const b = await makePitrDatabase(t)
  const other = await stream(t, b, b.slot)
  const second = await stream(t, a, `${a.slot}_2`)
  const own = await stream(t, a, a.slot)
  const [otherPid, secondPid, ownPid] = [await activePid(b.slot), await activePid(`${a.slot}_2`), await activePid(a.slot)]
  t.ok(otherPid && secondPid && ownPid, 'three slots streamed from')

  const conn = connectionOf({ url: a.url })
  t.equal(await releaseSlot(conn, `${a.slot}_none`), null, 'a slot no one streams from: nothing ended, no error')
  t.equal(await releaseSlot(conn, a.slot), ownPid, 'its own stream ended')
  for (let i = 0; i < 50 && own.exitCode === null; i++) await pause(100)
  t.not(own.exitCode, null, 'that pg_receivewal exited (--no-loop)')
  t.equal(await activePid(b.slot), otherPid, "another role's stream untouched")
  t.equal(await activePid(`${a.slot}_2`), secondPid, "the same role's stream on another slot untouched")
  t.equal(other.exitCode, null)
  t.equal(second.exitCode, null)
})
