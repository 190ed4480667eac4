// Backups of a ≥ 1 GiB database (pgbench scale 70 in `deploy_agent_bench_1g`, created once and reused), side by side
// in one run with the bare tools:
//   1. backup wall time: takeBackup (pg_dump -Fc → sha256 → .partial → fsync → rename → manifest; no verification)
//      vs `pg_dump -Fc -f <file> <db>` then an fsync of the file (the same durability), and vs it without the fsync;
//      same connection, same output disk, in rotating order;
//   2. peak RSS growth of a Node process taking one backup (bench/backup-child.ts, VmRSS sampled every 50 ms) over
//      its RSS right before the backup; pg_dump's own peak RSS for reference;
//   3. verifyBackup 'full' (sha256 + pg_restore -f /dev/null) vs sha256sum + pg_restore -f /dev/null (no target).
// Standalone: `node --import tsx bench/backup.ts` prints its rows; bench/run.ts includes them unless BENCH_SKIP_BACKUP=1.
// Knobs: BENCH_BACKUP_RUNS (timed backups per side, default 9, at least 2).
import { execFile, spawn } from 'node:child_process'
import { mkdir, mkdtemp, open, readFile, rm, stat } from 'node:fs/promises'
import { cpus, loadavg, tmpdir } from 'node:os'
import { join, resolve } from 'node:path'
import { setTimeout as sleep } from 'node:timers/promises'
import { fileURLToPath } from 'node:url'
import { promisify } from 'node:util'
import { BackupLocks } from '../agent/backup/lock.js'
import type { Manifest } from '../agent/backup/manifest.js'
import { connectionOf, toolEnv } from '../agent/pg/connection.js'
import { takeBackup } from '../agent/backup/take.js'
import { verifyBackup } from '../agent/backup/verify.js'
import { pgAvailable, pgUrl, withClient } from '../test/helpers/pg.js'
import { fmt, formatRows, type Row } from './lib.js'

const run = promisify(execFile)
const ROOT = fileURLToPath(new URL('..', import.meta.url))
const CHILD = fileURLToPath(new URL('./backup-child.ts', import.meta.url))

const DB = 'deploy_agent_bench_1g'
const SCALE = 70
const MIN_BYTES = 1024 ** 3
const RUNS = Math.max(2, Number(process.env.BENCH_BACKUP_RUNS ?? 9))
const VERIFY_RUNS = 3
const SAMPLE_MS = 50

/** Filled by benchBackup: the settings and the measured details behind the rows. */
export const backupNotes: string[] = []

const median = (xs: number[]) => {
  const s = [...xs].sort((a, b) => a - b)
  const mid = Math.floor(s.length / 2)
  return s.length % 2 === 1 ? (s[mid] as number) : ((s[mid - 1] as number) + (s[mid] as number)) / 2
}
const mb = (kb: number) => kb / 1024
const list = (xs: number[], unit: string) => `${xs.map((x) => fmt(x)).join(', ')} ${unit}`

async function databaseSize(): Promise<number> {
  return withClient('postgres', async (c) => Number((await c.query<{ s: string }>('SELECT pg_database_size($1) AS s', [DB])).rows[0]?.s))
}

/** Creates (or completes) the pgbench database when it is missing or not the right size; says what it did. */
async function ensureDatabase(): Promise<string> {
  const exists = await withClient(
    'postgres',
    async (c) => (await c.query('SELECT 1 FROM pg_database WHERE datname = $1', [DB])).rowCount === 1,
  )
  if (exists) {
    const ready = await withClient(DB, async (c) => {
      const { rows } = await c.query<{ pkey: boolean }>("SELECT to_regclass('pgbench_accounts_pkey') IS NOT NULL AS pkey")
      if (rows[0]?.pkey !== true) return false // pgbench -i creates the primary keys last
      const branches = await c.query<{ n: string }>('SELECT count(*) AS n FROM pgbench_branches')
      return Number(branches.rows[0]?.n) === SCALE
    })
    if (ready && (await databaseSize()) >= MIN_BYTES) return 'reused'
  } else {
    await withClient('postgres', (c) => c.query(`CREATE DATABASE ${DB}`))
  }
  const started = performance.now()
  // pgbench -i drops and recreates its own pgbench_* tables in DB, and nothing else.
  const url = new URL(pgUrl(DB))
  const env = { ...process.env, PGPASSWORD: decodeURIComponent(url.password) }
  await run('pgbench', ['-i', '-q', '-s', String(SCALE), '-h', url.hostname, '-p', url.port || '5432', '-U', url.username, DB], {
    env,
  }).catch((err) => {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') throw new Error('pgbench not found: apt-get install -y postgresql-contrib')
    throw err
  })
  return `${exists ? 'initialised' : 'created'} now (pgbench -i -s ${SCALE}, ${fmt((performance.now() - started) / 1000, 1)} s)`
}

async function status(pid: number): Promise<{ rssKb: number; hwmKb: number } | null> {
  try {
    const text = await readFile(`/proc/${pid}/status`, 'utf8')
    const rss = /VmRSS:\s+(\d+)/.exec(text)?.[1]
    const hwm = /VmHWM:\s+(\d+)/.exec(text)?.[1]
    // An exited process not yet reaped (a zombie) still has a status file, without memory lines.
    return rss === undefined || hwm === undefined ? null : { rssKb: Number(rss), hwmKb: Number(hwm) }
  } catch {
    return null // gone
  }
}

/** Samples /proc/<pid>/status every SAMPLE_MS until stopped: the highest VmRSS and VmHWM seen, and the sample count. */
function sampler(pid: number) {
  let maxRssKb = 0
  let maxHwmKb = 0
  let samples = 0
  let stopped = false
  const loop = (async () => {
    while (!stopped) {
      const s = await status(pid)
      if (s !== null) {
        samples++
        maxRssKb = Math.max(maxRssKb, s.rssKb)
        maxHwmKb = Math.max(maxHwmKb, s.hwmKb)
      }
      await sleep(SAMPLE_MS)
    }
  })()
  return {
    async stop() {
      stopped = true
      await loop
      return { maxRssKb, maxHwmKb, samples }
    },
  }
}

/**
 * Plain `pg_dump -Fc -f file <url>` with the agent's connection and environment: wall ms and pg_dump's peak RSS.
 * With `fsync`, the file is then fsynced (open + fsync + close, as `sync <file>` does) and that is timed too: the
 * durability the agent's backup has when it returns.
 */
async function plainDump(file: string, connUrl: string, env: NodeJS.ProcessEnv, fsync: boolean): Promise<{ ms: number; peakKb: number }> {
  const started = performance.now()
  const child = spawn('pg_dump', ['-Fc', '-f', file, connUrl], { env, stdio: ['ignore', 'ignore', 'pipe'] })
  const watch = sampler(child.pid as number)
  let stderr = ''
  child.stderr.setEncoding('utf8').on('data', (t: string) => (stderr += t))
  const code = await new Promise<number | null>((res, rej) => child.once('error', rej).once('close', res))
  if (fsync && code === 0) {
    const handle = await open(file, 'r')
    await handle.sync().finally(() => handle.close())
  }
  const ms = performance.now() - started
  const { maxHwmKb } = await watch.stop()
  if (code !== 0) throw new Error(`pg_dump exited with ${code}: ${stderr}`)
  return { ms, peakKb: maxHwmKb }
}

/** One takeBackup in a child Node process, its VmRSS sampled every SAMPLE_MS. */
async function childBackup(
  dir: string,
): Promise<{ beforeKb: number; peakKb: number; hwmKb: number | null; samples: number; ms: number; bytes: number }> {
  const child = spawn(process.execPath, ['--import', 'tsx', CHILD, dir], {
    cwd: ROOT,
    env: { ...process.env, BENCH_BACKUP_URL: pgUrl(DB) },
    stdio: ['pipe', 'pipe', 'inherit'],
  })
  const exited = new Promise<number | null>((res, rej) => child.once('error', rej).once('close', res))
  try {
    const lines: string[] = []
    let waiting: (() => void) | undefined
    let buffered = ''
    child.stdout.setEncoding('utf8').on('data', (t: string) => {
      buffered += t
      for (let i = buffered.indexOf('\n'); i >= 0; i = buffered.indexOf('\n')) {
        lines.push(buffered.slice(0, i))
        buffered = buffered.slice(i + 1)
        waiting?.()
      }
    })
    const nextLine = async (): Promise<string> => {
      while (lines.length === 0) {
        const gone = exited.then((code) => {
          throw new Error(`backup child exited with ${code}`)
        })
        await Promise.race([new Promise<void>((r) => (waiting = r)), gone])
      }
      return lines.shift() as string
    }
    if ((await nextLine()) !== 'ready') throw new Error('backup child did not say ready')
    await sleep(500) // let start-up settle
    const before = await status(child.pid as number)
    if (before === null) throw new Error('backup child vanished')
    const watch = sampler(child.pid as number)
    const started = performance.now()
    child.stdin.end('go\n')
    const result = JSON.parse(await nextLine()) as { bytes: number; hwmKb: number | null }
    const ms = performance.now() - started
    const { maxRssKb, samples } = await watch.stop()
    const code = await exited
    if (code !== 0) throw new Error(`backup child exited with ${code}`)
    return { beforeKb: before.rssKb, peakKb: maxRssKb, hwmKb: result.hwmKb, samples, ms, bytes: result.bytes }
  } finally {
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL')
  }
}

export async function benchBackup(): Promise<Row[]> {
  backupNotes.length = 0
  if (!(await pgAvailable())) {
    backupNotes.push('Backup benchmark skipped: PostgreSQL is not reachable at 127.0.0.1:5432 as postgres/postgres.')
    return [{ figure: 'backup benchmark', value: 'skipped (no PostgreSQL)', baseline: '—', ratio: '—', target: '—', met: null }]
  }
  const load = loadavg()
  const how = await ensureDatabase()
  const size = await databaseSize()
  const target = { url: pgUrl(DB) }
  const conn = connectionOf(target)
  const env = toolEnv(conn)

  const tmp = await mkdtemp(join(tmpdir(), 'deploy-agent-bench-backup-'))
  try {
    const agentDir = join(tmp, 'agent')
    const plainDir = join(tmp, 'plain')
    const childDir = join(tmp, 'child')
    await Promise.all([mkdir(agentDir), mkdir(plainDir), mkdir(childDir)])

    // 2. RSS, first: its backup also warms the OS page cache for the timed runs below.
    const rss = await childBackup(childDir)
    const growthMb = mb(rss.peakKb - rss.beforeKb)

    // 1. Backup time: agent, plain + fsync, plain, in a rotating order (each side goes first, second and third).
    const locks = new BackupLocks()
    const agentMs: number[] = []
    const syncedMs: number[] = []
    const plainMs: number[] = []
    const dumpPeakKb: number[] = []
    let manifest: Manifest | undefined
    let plainBytes = 0
    const sides = ['agent', 'synced', 'plain'] as const
    for (let i = 0; i < RUNS; i++) {
      for (let j = 0; j < sides.length; j++) {
        const side = sides[(i + j) % sides.length] as (typeof sides)[number]
        if (side === 'agent') {
          const started = performance.now()
          manifest = await takeBackup({ dir: agentDir, app: 'bench', env: 'time', kind: 'manual', database: target, locks })
          agentMs.push(performance.now() - started)
        } else {
          const file = join(plainDir, `${side}-${i}.dump`)
          const { ms, peakKb } = await plainDump(file, conn.url, env, side === 'synced')
          ;(side === 'synced' ? syncedMs : plainMs).push(ms)
          dumpPeakKb.push(peakKb)
          plainBytes = (await stat(file)).size
        }
      }
    }
    if (manifest === undefined) throw new Error('no agent backup was taken')
    const agent = median(agentMs)
    const synced = median(syncedMs)
    const plain = median(plainMs)
    // The ratio of each round's two runs, then their median: this machine's dump time drifts by ±15 % over minutes
    // (shared CPUs), which a ratio of the two medians would mix into the agent's overhead.
    const pairedOverSynced = median(agentMs.map((a, i) => a / (syncedMs[i] as number)))
    const pairedOverPlain = median(agentMs.map((a, i) => a / (plainMs[i] as number)))

    // 3. Verification of the last agent backup vs the same two steps with the bare tools, alternating.
    const dumpPath = join(agentDir, manifest.file)
    const verifyMs: number[] = []
    const bareVerifyMs: number[] = []
    for (let i = 0; i < VERIFY_RUNS; i++) {
      let started = performance.now()
      const result = await verifyBackup(agentDir, manifest, 'full')
      verifyMs.push(performance.now() - started)
      if (!result.ok) throw new Error(`verifyBackup failed: ${result.reason}`)
      started = performance.now()
      const { stdout } = await run('sha256sum', [dumpPath])
      await run('pg_restore', ['-f', '/dev/null', dumpPath])
      bareVerifyMs.push(performance.now() - started)
      if (!stdout.startsWith(manifest.sha256)) throw new Error('sha256sum disagrees with the manifest')
    }
    const verify = median(verifyMs)
    const bareVerify = median(bareVerifyMs)

    const sizeMb = size / 1024 ** 2
    const after = loadavg()
    backupNotes.push(
      `Backup database: ${DB}, pgbench scale ${SCALE} (${how}); pg_database_size ${fmt(size)} bytes (${fmt(sizeMb)} MB). Dump (-Fc, default compression): agent ${fmt(manifest.bytes / 1024 ** 2, 1)} MB, plain ${fmt(plainBytes / 1024 ** 2, 1)} MB. Output dirs on the same disk (${tmpdir()}), removed afterwards.`,
      `Backup time: ${RUNS} runs per side after one untimed backup (the RSS child's, which warms the page cache), in rotating order (agent, plain + fsync, plain; plain + fsync, plain, agent; …); the figures are medians, the ratio is the median of the ${RUNS} rounds' own ratios (agent ÷ baseline of the same round; the ratio of the medians is ${fmt(agent / synced, 2)}× over plain + fsync and ${fmt(agent / plain, 2)}× over plain). Agent: takeBackup in this process (lock file, SHOW server_version over pg, pg_dump --version, pg_dump --format=custom with the .partial file as its stdout, fsync, sha256 read back from the file, rename, fsync dir, manifest written + fsynced). Plain + fsync (the baseline of the target: the same durability as the agent's backup when it returns): spawn → exit of \`pg_dump -Fc -f <file> <url>\` with the same URL and PGPASSWORD env, then open + fsync + close of the file. Plain: the same without the fsync. All runs — agent: ${list(agentMs, 'ms')}; plain + fsync: ${list(syncedMs, 'ms')}; plain: ${list(plainMs, 'ms')}.`,
      `Backup RSS: bench/backup-child.ts (node --import tsx), everything imported before it says ready; RSS before = VmRSS 500 ms after ready, just before the backup starts: ${fmt(mb(rss.beforeKb), 1)} MB; peak VmRSS over ${rss.samples} samples ${SAMPLE_MS} ms apart: ${fmt(mb(rss.peakKb), 1)} MB; VmHWM reset (clear_refs 5) just before the backup and read right after it: ${rss.hwmKb === null ? 'unavailable' : `${fmt(mb(rss.hwmKb), 1)} MB (growth ${fmt(mb(rss.hwmKb - rss.beforeKb), 1)} MB)`}; that backup took ${fmt(rss.ms)} ms. pg_dump's peak = its VmHWM sampled every ${SAMPLE_MS} ms during the plain runs: ${list(dumpPeakKb.map(mb), 'MB')}.`,
      `Verification: verifyBackup(dir, manifest, 'full') of the last agent backup (sha256 + size vs manifest, pg_restore -f /dev/null, manifest rewritten with the result) vs \`sha256sum\` then \`pg_restore -f /dev/null\`; ${VERIFY_RUNS} runs each alternating, dump in the page cache. All runs — agent: ${list(verifyMs, 'ms')}; bare: ${list(bareVerifyMs, 'ms')}.`,
      `Backup machine: ${cpus().length} CPUs; load average (1 / 5 / 15 min) before ${load.map((x) => fmt(x, 1)).join(' / ')}, after ${after.map((x) => fmt(x, 1)).join(' / ')}.`,
    )
    return [
      {
        figure: `backup wall time, ${fmt(sizeMb)} MB database (median of ${RUNS})`,
        value: `${fmt(agent)} ms`,
        baseline: `${fmt(synced)} ms (pg_dump -Fc -f, then fsync)`,
        ratio: `${fmt(pairedOverSynced, 2)}×`,
        target: '≤ 1.05×',
        met: pairedOverSynced <= 1.05,
      },
      {
        figure: 'backup wall time against pg_dump without fsync',
        value: `${fmt(agent)} ms`,
        baseline: `${fmt(plain)} ms (plain pg_dump -Fc -f)`,
        ratio: `${fmt(pairedOverPlain, 2)}×`,
        target: '—',
        met: null,
      },
      {
        figure: 'peak RSS growth of the backing-up Node process',
        value: `${fmt(growthMb, 1)} MB`,
        baseline: `pg_dump's own peak: ${fmt(mb(Math.max(...dumpPeakKb)), 1)} MB`,
        ratio: '—',
        target: '< 50 MB',
        met: growthMb < 50,
      },
      {
        figure: `backup verification 'full' (median of ${VERIFY_RUNS})`,
        value: `${fmt(verify)} ms`,
        baseline: `${fmt(bareVerify)} ms (sha256sum + pg_restore -f /dev/null)`,
        ratio: `${fmt(verify / bareVerify, 2)}×`,
        target: '—',
        met: null,
      },
    ]
  } finally {
    await rm(tmp, { recursive: true, force: true })
  }
}

if (process.argv[1] !== undefined && resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  const rows = await benchBackup()
  console.log(`${formatRows(rows)}\n\n${backupNotes.map((n) => `- ${n}`).join('\n')}`)
}
