// A PostgreSQL server of the test's own (initdb into a temp dir, run as the postgres user on a free loopback port,
// trust authentication), so a test may stop it mid-operation without touching the shared cluster on 5432.
import { execFile, spawn, type ChildProcess } from 'node:child_process'
import { chown, mkdtemp, readdir, rm } from 'node:fs/promises'
import { join } from 'node:path'
import { setTimeout as sleep } from 'node:timers/promises'
import { promisify } from 'node:util'
import pg from 'pg'
import { freePort } from './ports.js'

const run = promisify(execFile)

export interface PrivatePostgres {
  port: number
  /** `postgres://postgres@127.0.0.1:<port>/<db>` (trust: no password needed). */
  url(db?: string): string
  /** The server's own binaries (pgbench, psql…) directory. */
  bin: string
  /** Stops the server: `fast` ends every session at once (SIGINT), `immediate` is a crash (SIGQUIT). */
  stop(mode?: 'fast' | 'immediate'): Promise<void>
  start(): Promise<void>
}

async function postgresBin(): Promise<string | null> {
  const versions = await readdir('/usr/lib/postgresql').catch(() => [] as string[])
  const newest = versions.filter((v) => /^\d+$/.test(v)).sort((a, b) => Number(b) - Number(a))[0]
  return newest === undefined ? null : join('/usr/lib/postgresql', newest, 'bin')
}

async function postgresUser(): Promise<{ uid: number; gid: number } | null> {
  try {
    const [uid, gid] = await Promise.all([run('id', ['-u', 'postgres']), run('id', ['-g', 'postgres'])])
    return { uid: Number(uid.stdout.trim()), gid: Number(gid.stdout.trim()) }
  } catch {
    return null
  }
}

/** Whether a private server can be made here: root, a postgres user and the server binaries. */
export async function canRunPrivatePostgres(): Promise<boolean> {
  return process.getuid?.() === 0 && (await postgresBin()) !== null && (await postgresUser()) !== null
}

/**
 * initdb + start; the server is stopped and its directory removed in `t`'s teardown. `settings` are passed as
 * `-c name=value` after the defaults (a benchmark turns fsync back on).
 */
export async function startPrivatePostgres(
  t: { teardown: (fn: () => unknown) => void },
  o: { settings?: Record<string, string> } = {},
): Promise<PrivatePostgres> {
  const bin = (await postgresBin()) as string
  const user = (await postgresUser()) as { uid: number; gid: number }
  const root = await mkdtemp('/tmp/dapg-')
  await chown(root, user.uid, user.gid)
  const data = join(root, 'data')
  await run(join(bin, 'initdb'), ['--pgdata', data, '--username', 'postgres', '--auth', 'trust', '--no-sync'], {
    ...user,
    env: { ...process.env, HOME: root },
  })
  const port = await freePort()
  let server: ChildProcess | undefined
  let log = ''
  const url = (db = 'postgres') => `postgres://postgres@127.0.0.1:${port}/${db}`
  const answers = async () => {
    const client = new pg.Client({ connectionString: url(), connectionTimeoutMillis: 1_000 })
    try {
      await client.connect()
      await client.query('SELECT 1')
      return true
    } catch {
      return false
    } finally {
      await client.end().catch(() => undefined)
    }
  }
  const start = async () => {
    const child = spawn(
      join(bin, 'postgres'),
      [
        ...['-D', data, '-p', String(port), '-k', root, '-c', 'listen_addresses=127.0.0.1', '-c', 'fsync=off'],
        ...Object.entries(o.settings ?? {}).flatMap(([name, value]) => ['-c', `${name}=${value}`]),
      ],
      {
        ...user,
        stdio: ['ignore', 'ignore', 'pipe'],
      },
    )
    child.stderr?.on('data', (chunk: Buffer) => {
      log = (log + chunk.toString()).slice(-8192)
    })
    server = child
    const deadline = Date.now() + 30_000
    while (!(await answers())) {
      if (child.exitCode !== null) throw new Error(`private postgres exited with ${child.exitCode}:\n${log}`)
      if (Date.now() > deadline) throw new Error(`private postgres did not answer in 30 s:\n${log}`)
      await sleep(100)
    }
  }
  const stop = async (mode: 'fast' | 'immediate' = 'fast') => {
    const child = server
    if (!child || child.exitCode !== null || child.signalCode !== null) return
    const exited = new Promise((resolve) => child.once('exit', resolve))
    child.kill(mode === 'fast' ? 'SIGINT' : 'SIGQUIT')
    await exited
  }
  t.teardown(async () => {
    await stop('immediate')
    await rm(root, { recursive: true, force: true })
  })
  await start()
  return { port, url, bin, stop, start }
}
