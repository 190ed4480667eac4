// Recovery into a private, temporary PostgreSQL instance and a dump of the app's database from it:
//   extract the base backup (tar, run as the instance's user, reading from a descriptor the agent opened) →
//   lay out the WAL from base + target (compressed segments as they are, unpacked one at a time by the
//   restore_command as recovery asks for them; a `.partial` unpacked and padded to a whole segment) → write its own
//   postgresql.conf (no TCP: listen_addresses='', a private socket dir), pg_hba.conf, recovery.signal →
//   run `postgres` as a child, wait until pg_is_in_recovery() is false (a postmaster that exits is a failed
//   recovery) → `pg_dump -Fc` the database → stop it and delete its directory, whatever happened.
// PostgreSQL refuses to run as root: an agent running as root runs the instance as the OS user `postgres`, else
// as itself; its directory is a fresh 0700 one under the temp dir (TMPDIR), owned by that user.
import { spawn, type ChildProcess } from 'node:child_process'
import { chown, mkdir, mkdtemp, open, readdir, readFile, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { basename, join } from 'node:path'
import { setTimeout as sleep } from 'node:timers/promises'
import { gunzipSync, constants as zlib } from 'node:zlib'
import pg from 'pg'
import { captureToFile, exitProblem } from '../backup/proc.js'
import { PitrError } from './errors.js'
import { listWalFiles } from './paths.js'
import { parseLsn, segmentName, type RecoveryPlan } from './target.js'

export interface RunAs {
  uid: number
  gid: number
}

export interface RecoverOptions {
  /** `base/<id>/` of the plan's base backup, and the receiver's WAL dir. */
  baseDir: string
  walDir: string
  plan: RecoveryPlan
  /** The database to dump and the role to connect as (trust over the private socket). */
  database: string
  role: string
  /** Where the dump goes (created 0600; the caller removes it). */
  dumpPath: string
  /** The server binaries (postgres); pg_dump from PATH unless given. */
  binDir: string
  pgDump?: string
  runAs: RunAs
  /** How long recovery may take before it is abandoned. */
  timeoutMs?: number
  onProgress?: (step: string, detail?: Record<string, unknown>) => void
  /** The work dir's name prefix under the temp dir (one per env: leftovers of a killed agent are found by it). */
  workPrefix: string
}

/**
 * Removes the work dirs a killed agent left under the temp dir for this prefix, after stopping a recovery instance
 * still running in one (killed during the dump, it is promoted and would serve on; its pid file is only rechecked
 * every minute). Answers the dirs removed and the postmasters stopped.
 */
export async function removeWorkLeftovers(workPrefix: string): Promise<{ dirs: string[]; stopped: number[] }> {
  const dirs = (await readdir(tmpdir()).catch(() => [] as string[])).filter((n) => n.startsWith(workPrefix))
  const stopped: number[] = []
  for (const name of dirs) {
    const pid = await stopLeftoverPostmaster(join(tmpdir(), name, 'data'))
    if (pid !== null) stopped.push(pid)
    await rm(join(tmpdir(), name), { recursive: true, force: true })
  }
  return { dirs, stopped }
}

/** Alive and not a zombie (a killed agent's child is reaped by whoever adopted it, maybe late). */
async function running(pid: number): Promise<boolean> {
  const stat = await readFile(`/proc/${pid}/stat`, 'utf8').catch(() => null)
  return stat !== null && !/^\d+ \(.*\) [ZX]/s.test(stat)
}

/**
 * Stops the postmaster of `data` if its postmaster.pid names a live one (immediate shutdown, SIGKILL after 10 s);
 * a pid reused by another process (its command line does not name `data`) is left alone. Answers the pid stopped.
 */
async function stopLeftoverPostmaster(data: string): Promise<number | null> {
  const pid = Number((await readFile(join(data, 'postmaster.pid'), 'utf8').catch(() => '')).split('\n')[0])
  if (!Number.isInteger(pid) || pid <= 0) return null
  const argv = (await readFile(`/proc/${pid}/cmdline`, 'utf8').catch(() => '')).split('\0')
  if (!argv.includes(data) || !(await running(pid))) return null
  process.kill(pid, 'SIGQUIT')
  for (let waited = 0; await running(pid); waited += 100) {
    if (waited === 10_000) process.kill(pid, 'SIGKILL')
    await sleep(100)
  }
  return pid
}

/** The newest /usr/lib/postgresql/<major>/bin, where Debian keeps `postgres` (not on PATH). */
export async function serverBinDir(): Promise<string> {
  const versions = await readdir('/usr/lib/postgresql').catch(() => [] as string[])
  const newest = versions.filter((v) => /^\d+$/.test(v)).sort((a, b) => Number(b) - Number(a))[0]
  if (newest === undefined)
    throw new PitrError('pitr_failed', 'no PostgreSQL server binaries under /usr/lib/postgresql (install postgresql-<major>)')
  return join('/usr/lib/postgresql', newest, 'bin')
}

/** The user the private instance runs as: `postgres` (from /etc/passwd) when the agent is root, else the agent. */
export async function recoveryUser(): Promise<RunAs> {
  const uid = process.getuid?.() ?? 0
  if (uid !== 0) return { uid, gid: process.getgid?.() ?? uid }
  const passwd = await readFile('/etc/passwd', 'utf8').catch(() => '')
  const entry = passwd.split('\n').find((line) => line.startsWith('postgres:'))
  const [, , u, g] = entry?.split(':') ?? []
  if (u === undefined || g === undefined)
    throw new PitrError(
      'pitr_failed',
      'the agent runs as root and there is no OS user postgres to run the recovery instance as (PostgreSQL refuses root)',
    )
  return { uid: Number(u), gid: Number(g) }
}

export async function recoverToDump(o: RecoverOptions): Promise<void> {
  const progress = o.onProgress ?? (() => undefined)
  // The work dir goes into PostgreSQL's config and its restore_command (run by /bin/sh): a plain path only.
  if (!/^[A-Za-z0-9_./-]+$/.test(tmpdir()))
    throw new PitrError('pitr_failed', `the temp dir ${JSON.stringify(tmpdir())} (TMPDIR) must be a path of letters, digits and _./- only`)
  const work = await mkdtemp(join(tmpdir(), o.workPrefix))
  let server: ChildProcess | null = null
  let log = ''
  try {
    await chown(work, o.runAs.uid, o.runAs.gid)
    const data = join(work, 'data')
    const wal = join(work, 'wal')
    const socket = join(work, 'socket')
    for (const dir of [data, wal, socket]) {
      await mkdir(dir, { mode: 0o700 })
      await chown(dir, o.runAs.uid, o.runAs.gid)
    }
    progress('extracting base backup', { base: o.plan.base.id })
    await extract(join(o.baseDir, 'base.tar.gz'), data, o.runAs)
    await extract(join(o.baseDir, 'pg_wal.tar.gz'), join(data, 'pg_wal'), o.runAs)
    const segments = await layOutWal(o.walDir, wal, o.plan, o.runAs)
    progress('WAL laid out', { segments })
    const port = 5432
    const conf = [
      "listen_addresses = ''",
      `port = ${port}`,
      `unix_socket_directories = '${socket}'`,
      // PostgreSQL runs this through /bin/sh with its own %f and %p; `wal` is a plain path (checked above).
      `restore_command = 'if [ -f ${wal}/%f.gz ]; then gzip -dc ${wal}/%f.gz > %p; else cp ${wal}/%f %p; fi'`,
      `${o.plan.setting.name} = '${o.plan.setting.value}'`,
      `recovery_target_inclusive = ${o.plan.inclusive ? 'on' : 'off'}`,
      "recovery_target_action = 'promote'",
      'hot_standby = off',
      'max_connections = 20',
      "shared_buffers = '32MB'",
      'archive_mode = off',
      'max_wal_senders = 0',
      'fsync = off', // a throw-away instance: only the dump of it is kept
      'logging_collector = off',
      'ssl = off',
      '',
    ].join('\n')
    const owned = async (file: string, text: string) => {
      await writeFile(file, text, { mode: 0o600 })
      await chown(file, o.runAs.uid, o.runAs.gid)
    }
    await owned(join(data, 'postgresql.conf'), conf)
    await owned(join(data, 'postgresql.auto.conf'), '') // the source's ALTER SYSTEM settings are not this instance's
    // Only the private socket reaches it, in a 0700 dir of its user: trust is safe there, and nothing else listens.
    await owned(join(data, 'pg_hba.conf'), 'local all all trust\n')
    await owned(join(data, 'pg_ident.conf'), '')
    await owned(join(data, 'recovery.signal'), '')

    progress('recovery started', { target: o.plan.described })
    const child = spawn(join(o.binDir, 'postgres'), ['-D', data], {
      uid: o.runAs.uid,
      gid: o.runAs.gid,
      stdio: ['ignore', 'ignore', 'pipe'],
    })
    server = child
    child.stderr?.on('data', (chunk: Buffer) => {
      log = (log + chunk.toString('utf8')).slice(-8192)
    })
    const conn = { host: socket, port, user: o.role, database: o.database }
    await waitPromoted(child, conn, o.timeoutMs ?? 30 * 60_000, () => log)
    progress('recovered; dumping', { database: o.database })
    const dump = [
      o.pgDump ?? 'pg_dump',
      '-Fc',
      '--no-password',
      `--host=${socket}`,
      `--port=${port}`,
      `--username=${o.role}`,
      `--dbname=${o.database}`,
    ]
    await captureToFile(dump, { ...process.env, PGCONNECT_TIMEOUT: '10' }, o.dumpPath)
  } finally {
    if (server) await stopServer(server)
    await rm(work, { recursive: true, force: true })
  }
}

/** `tar -xzf - -C dir` as the instance's user, its stdin a descriptor the agent opened (the backup dir is the agent's). */
async function extract(archive: string, dir: string, runAs: RunAs): Promise<void> {
  const handle = await open(archive, 'r')
  try {
    await mkdir(dir, { recursive: true, mode: 0o700 })
    await chown(dir, runAs.uid, runAs.gid)
    const child = spawn('tar', ['-xzf', '-', '-C', dir], { uid: runAs.uid, gid: runAs.gid, stdio: [handle.fd, 'ignore', 'pipe'] })
    let stderr = ''
    child.stderr?.on('data', (c: Buffer) => (stderr = (stderr + c.toString()).slice(-2048)))
    const exit = await new Promise<{ code: number | null; signal: NodeJS.Signals | null; error?: Error; stderr: string }>((resolve) => {
      child.once('error', (error) => resolve({ code: null, signal: null, error, stderr }))
      child.once('close', (code, signal) => resolve({ code, signal, stderr }))
    })
    const problem = exitProblem(exit)
    if (problem !== null) throw new PitrError('pitr_failed', `extracting ${archive} failed: tar ${problem}: ${exit.stderr.trim()}`)
  } finally {
    await handle.close()
  }
}

/**
 * Copies into `into` every WAL segment from the base backup's start on. A complete compressed one stays compressed
 * (`<segment>.gz`: the restore_command unpacks each as recovery reads it, so the restore needs the WAL's compressed
 * size, not 16 MB a segment); a segment only received in part (`.partial`) is unpacked and padded with zeros to a
 * whole segment (recovery reads it to its last valid record). A complete segment wins over a partial one of the
 * same name. History files are copied as they are.
 */
async function layOutWal(walDir: string, into: string, plan: RecoveryPlan, runAs: RunAs): Promise<number> {
  const size = plan.base.walSegmentSize
  const first = segmentName(plan.base.timeline, parseLsn(plan.base.startLsn) ?? 0n, size)
  // An LSN target needs nothing past the segment after its own (where the record that ends recovery may start).
  const target = plan.setting.name === 'recovery_target_lsn' ? parseLsn(plan.setting.value) : null
  const last = target === null ? null : segmentName(plan.base.timeline, target + BigInt(size), size)
  const names = await listWalFiles(walDir)
  const chosen = new Map<string, string>()
  for (const name of names.sort()) {
    const m = /^([0-9A-F]{24})(\.gz)?(\.partial)?$/.exec(basename(name))
    if (m === null || (m[1] as string) < first || (last !== null && (m[1] as string) > last)) continue
    const seg = m[1] as string
    if (m[3] === undefined || !chosen.has(seg)) chosen.set(seg, name)
  }
  for (const [seg, listed] of chosen) {
    // The receiver runs on: a `.partial` listed a moment ago may have been completed (renamed) since.
    const { name, bytes: raw } = await readWalFile(walDir, listed)
    // `<seg>.gz` whole, `<seg>.gz.partial` in part (pg_receivewal's names), or either uncompressed.
    const packed = name.includes('.gz') && !name.endsWith('.partial')
    let bytes = raw
    if (!packed) {
      if (name.includes('.gz')) bytes = gunzipSync(bytes, { finishFlush: zlib.Z_SYNC_FLUSH })
      if (bytes.length < size) bytes = Buffer.concat([bytes, Buffer.alloc(size - bytes.length)])
    }
    const file = join(into, packed ? `${seg}.gz` : seg)
    await writeFile(file, bytes, { mode: 0o600 })
    await chown(file, runAs.uid, runAs.gid)
  }
  for (const name of names.filter((n) => /^[0-9A-F]{8}\.history$/.test(basename(n)))) {
    await writeFile(join(into, basename(name)), await readFile(join(walDir, name)), { mode: 0o600 })
    await chown(join(into, basename(name)), runAs.uid, runAs.gid)
  }
  return chosen.size
}

/** Reads a WAL file; a `.partial` that is gone was completed meanwhile, and its complete segment is read instead. */
async function readWalFile(walDir: string, name: string): Promise<{ name: string; bytes: Buffer }> {
  try {
    return { name, bytes: await readFile(join(walDir, name)) }
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT' || !name.endsWith('.partial')) throw err
    const complete = name.slice(0, -'.partial'.length)
    return { name: complete, bytes: await readFile(join(walDir, complete)) }
  }
}

/** Polls until the instance accepts connections and is out of recovery; its exit is a failed recovery. */
async function waitPromoted(
  child: ChildProcess,
  conn: { host: string; port: number; user: string; database: string },
  timeoutMs: number,
  log: () => string,
): Promise<void> {
  const deadline = Date.now() + timeoutMs
  for (;;) {
    if (child.exitCode !== null || child.signalCode !== null)
      throw new PitrError('pitr_failed', `recovery failed; the recovery instance stopped: ${fatalLines(log())}`)
    const client = new pg.Client({ ...conn, database: 'postgres', connectionTimeoutMillis: 2000 })
    client.on('error', () => undefined)
    try {
      await client.connect()
      const { rows } = await client.query<{ r: boolean }>('SELECT pg_is_in_recovery() AS r')
      if (rows[0]?.r === false) return
    } catch {
      // starting up, or still replaying (hot_standby=off refuses connections until promotion)
    } finally {
      await client.end().catch(() => undefined)
    }
    if (Date.now() > deadline)
      throw new PitrError('pitr_failed', `recovery did not finish within ${Math.round(timeoutMs / 1000)} s: ${fatalLines(log())}`)
    await sleep(200)
  }
}

/** The FATAL/PANIC lines of the instance's log (why recovery ended) and gzip's (a damaged segment), else its last lines. */
function fatalLines(log: string): string {
  const lines = log.trim().split('\n')
  const fatal = lines.filter((l) => /FATAL|PANIC|^gzip: /.test(l))
  return (fatal.length > 0 ? fatal : lines.slice(-5)).join('\n').slice(-2000)
}

/** Fast shutdown (SIGINT), then SIGKILL if it lingers. */
async function stopServer(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return
  const exited = new Promise((resolve) => child.once('exit', resolve))
  child.kill('SIGINT')
  const timer = setTimeout(() => child.kill('SIGKILL'), 30_000)
  await exited
  clearTimeout(timer)
}
