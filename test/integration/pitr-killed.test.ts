// A real agent process (`deploy-agent serve`) SIGKILLed in the middle of a PITR restore: what it left (the recovery
// instance's dir, its postmaster still running, a side database) is cleaned at the next start, the live database is
// untouched, and a new restore works. Real PostgreSQL on 127.0.0.1:5432 (test/helpers/pitr.ts).
import { readFileSync } from 'node:fs'
import { readdir, readFile, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import pg from 'pg'
import t from 'tap'
import { stringify } from 'yaml'
import { listBaseBackups } from '../../agent/pitr/base-backup.js'
import { testConfigDocument, writeTestKeys } from '../helpers/agent.js'
import { cliEnvFor, runCli, startServe, type ServeProcess } from '../helpers/cli.js'
import { skipUnless } from '../helpers/engines.js'
import { pgAvailable, query } from '../helpers/pg.js'
import { ids, insert, makePitrDatabase, range } from '../helpers/pitr.js'
import { freePort } from '../helpers/ports.js'
import { canRunPrivatePostgres } from '../helpers/private-pg.js'
import { tempDir } from '../helpers/tmp.js'

const skip = skipUnless((await pgAvailable()) && (await canRunPrivatePostgres()), 'PostgreSQL, root and the server binaries')
const pause = (ms: number) => new Promise((r) => setTimeout(r, ms))
/** Alive and not a zombie (an orphan is reaped by whoever adopted it). */
const alive = (pid: number) => {
  try {
    return !/^State:\s+Z/m.test(readFileSync(`/proc/${pid}/status`, 'utf8'))
  } catch {
    return false
  }
}

/** The recovery instances' work dirs under the temp dir whose postmaster.pid names a live process. */
async function runningRecoveries(): Promise<{ dir: string; pid: number }[]> {
  const found: { dir: string; pid: number }[] = []
  for (const name of (await readdir(tmpdir())).filter((n) => n.startsWith('deploy-agent-pitr-'))) {
    const text = await readFile(join(tmpdir(), name, 'data', 'postmaster.pid'), 'utf8').catch(() => '')
    const pid = Number(text.split('\n')[0])
    if (pid > 0 && alive(pid)) found.push({ dir: join(tmpdir(), name), pid })
  }
  return found
}

/** The recovery instance in `dir` is promoted (recovery over: the agent is dumping from it). */
async function promoted(dir: string, role: string): Promise<boolean> {
  const client = new pg.Client({ host: join(dir, 'socket'), port: 5432, user: role, database: 'postgres' })
  client.on('error', () => undefined)
  try {
    await client.connect()
    return (await client.query<{ r: boolean }>('SELECT pg_is_in_recovery() AS r')).rows[0]?.r === false
  } catch {
    return false
  } finally {
    await client.end().catch(() => undefined)
  }
}

/** The parent pids of the pg_receivewal processes streaming from `slot`. */
async function receiverParents(slot: string): Promise<number[]> {
  const parents: number[] = []
  for (const pid of (await readdir('/proc')).filter((n) => /^\d+$/.test(n))) {
    const argv = (await readFile(`/proc/${pid}/cmdline`, 'utf8').catch(() => '')).split('\0')
    if (!argv[0]?.endsWith('pg_receivewal') || !argv.includes(`--slot=${slot}`)) continue
    const status = await readFile(`/proc/${pid}/status`, 'utf8').catch(() => '')
    if (/^State:\s+Z/m.test(status)) continue
    parents.push(Number(/^PPid:\s+(\d+)/m.exec(status)?.[1]))
  }
  return parents
}

t.test('PITR: the agent SIGKILLed during a restore; the next start cleans what it left and a new restore works', { skip }, async (t) => {
  const user: { stop?: () => Promise<unknown> } = {}
  const d = await makePitrDatabase(t, user)
  const dir = await tempDir(t, 'deploy-agent-pitr-killed-')
  await writeTestKeys(dir)
  const port = await freePort()
  const url = `http://127.0.0.1:${port}`
  const document = testConfigDocument(dir, { listen: { host: '127.0.0.1', port }, backups: { dir: join(dir, 'backups'), verify: 'none' } })
  const production = (document.apps as { web: { envs: { production: Record<string, unknown> } } }).web.envs.production
  production.database = { url: d.url, pitr: { slot: d.slot } }
  const configPath = join(dir, 'agent.yaml')
  await writeFile(configPath, stringify(document))
  let agent: ServeProcess = await startServe(configPath, url, {}, 60_000)
  user.stop = () => agent.stop('SIGTERM')
  t.teardown(user.stop)
  const base = join(dir, 'backups', 'pitr', 'web_production', 'base')
  for (let i = 0; i < 600 && (await listBaseBackups(base)).length === 0; i++) await pause(100)

  // Enough data that the dump from the recovery instance takes a moment to kill the agent in.
  await d.sql("CREATE TABLE filler AS SELECT g AS id, repeat('x', 200) AS pad FROM generate_series(1, 200000) g")
  await d.sql('CREATE TABLE items (id int PRIMARY KEY, name text)')
  await insert(d, 1, 20)
  const [{ at }] = (await query<{ at: string }>(
    d.db,
    "SELECT to_char(clock_timestamp() AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US') || '+00:00' AS at",
  )) as [{ at: string }]
  await pause(50)
  await insert(d, 21, 30)
  const env = cliEnvFor(url, join(dir, 'keys'))
  const restore = () => runCli(['restore', '--pitr', '--app', 'web', '--env', 'production', '--to-time', at, '--yes'], env)

  // Killed while it dumps from the recovery instance: the promoted postmaster (a child of the agent) outlives it.
  const before = new Set((await runningRecoveries()).map((r) => r.dir))
  const cut = restore()
  let recovery: { dir: string; pid: number } | undefined
  for (let i = 0; i < 1200; i++) {
    recovery = (await runningRecoveries()).find((r) => !before.has(r.dir))
    if (recovery !== undefined && (await promoted(recovery.dir, d.role))) break
    await pause(20)
  }
  t.ok(recovery, 'a recovery instance runs')
  // Its WAL is laid out as received: whole segments stay gzip'd (the restore_command unpacks each when recovery asks
  // for it); only the segment the receiver was still writing is there unpacked, padded to 16 MB.
  const laidOut = await readdir(join((recovery as { dir: string }).dir, 'wal'))
  const packed = laidOut.filter((n) => /^[0-9A-F]{24}\.gz$/.test(n))
  const unpacked = laidOut.filter((n) => /^[0-9A-F]{24}$/.test(n))
  t.ok(packed.length >= 2, `whole segments stay compressed (${laidOut.join(', ')})`)
  t.ok(unpacked.length <= 1, 'at most the one in progress unpacked')
  await agent.stop('SIGKILL')
  t.not((await cut).code, 0, 'the CLI reports the restore cut short')
  t.ok(alive((recovery as { pid: number }).pid), 'the recovery postmaster outlived the agent')
  // What a kill during the load leaves: the side database and its role (made as restoreDump makes them).
  const side = `${d.db}_restore_0badc0de`
  await d.sql(`CREATE ROLE ${side} LOGIN; GRANT ${side} TO CURRENT_USER`)
  await query('postgres', `CREATE DATABASE ${side} OWNER ${side}`)
  t.ok((await receiverParents(d.slot)).length > 0, "the killed agent's pg_receivewal streams on, holding the slot")

  agent = await startServe(configPath, url, {}, 60_000)
  const dirGone = async () => !(await readdir(tmpdir())).includes((recovery as { dir: string }).dir.slice(tmpdir().length + 1))
  const sideLeft = async () =>
    (
      await query<{ name: string }>(
        'postgres',
        `SELECT datname AS name FROM pg_database WHERE datname = '${side}' UNION ALL SELECT rolname FROM pg_roles WHERE rolname = '${side}'`,
      )
    ).length
  const gone = async () => !alive((recovery as { pid: number }).pid) && (await dirGone()) && (await sideLeft()) === 0
  // The side database goes in the PITR start-up loop, which retries while the server is busy (other tests' slots and
  // WAL senders): it is given a minute.
  for (let i = 0; i < 600 && !(await gone()); i++) await pause(100)
  t.notOk(alive((recovery as { pid: number }).pid), 'the recovery postmaster was stopped at start-up')
  t.ok(await dirGone(), "the instance's dir was removed")
  t.equal(await sideLeft(), 0, 'the side database and its role were dropped')
  const own = async () => {
    const parents = await receiverParents(d.slot)
    return parents.length > 0 && parents.every((p) => p === agent.child.pid)
  }
  for (let i = 0; i < 300 && !(await own()); i++) await pause(100)
  t.ok(await own(), "the old pg_receivewal was ended: only the new agent's streams from the slot")
  t.same(await ids(d.db), range(1, 30), 'the live database is untouched')
  t.same(
    (await query<{ datname: string }>('postgres', `SELECT datname FROM pg_database WHERE datname LIKE '${d.db}%'`)).map((r) => r.datname),
    [d.db],
  )

  const again = await restore()
  t.equal(again.code, 0, again.stderr)
  t.same(await ids(d.db), range(1, 20), 'a new restore works')
})
