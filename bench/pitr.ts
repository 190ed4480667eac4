// Point-in-time recovery of a ~1 GB database (pgbench scale 70) with the agent's own PitrService, in a private
// PostgreSQL 15 cluster of this run (test/helpers/private-pg.ts, fsync on): WAL is cluster-wide and a base backup is
// the whole cluster, so a cluster holding only this database keeps other sessions' databases and writes out of the
// figures (and this load off the shared server on 5432).
//   1. restore time: base backup (at start-up), a write load, a point ("before deploy", as the pipeline makes it),
//      more writes; then PitrService.restore to that point (what POST /v1/backups/pitr/restore runs) vs `pg_restore`
//      of a `pg_dump -Fc` of the same database into a fresh one (the agent's flags; and with -j 2);
//   2. receive lag while `pgbench -T 60 -c 4` writes: PitrMonitor's receiveLagBytes (behind
//      deploy_agent_pitr_receive_lag_bytes), sampled every 250 ms;
//   3. WAL disk: what the receiver wrote into the WAL dir (gzip'd) during that load, per day at that rate, and the
//      raw WAL the server generated (pg_current_wal_lsn before and after).
// Standalone: `node --import tsx bench/pitr.ts`; bench/run.ts includes it unless BENCH_SKIP_PITR=1.
// Knobs: BENCH_PITR_SCALE (pgbench scale, default 70 ≈ 1 GB), BENCH_PITR_SECONDS (load, default 60),
// BENCH_PITR_CLIENTS (default 4), BENCH_PITR_LOG (the agent's log level, default silent), BENCH_PITR_SAMPLES (a file:
// the lag samples as JSON, { ms since the load started, lag bytes }).
import { execFile } from 'node:child_process'
import { mkdtemp, readdir, rm, stat, writeFile } from 'node:fs/promises'
import { loadavg, tmpdir } from 'node:os'
import { join, resolve } from 'node:path'
import { setTimeout as sleep } from 'node:timers/promises'
import { fileURLToPath } from 'node:url'
import { promisify } from 'node:util'
import { BackupService } from '../agent/backup/service.js'
import { parseConfig } from '../agent/config/load.js'
import { findTarget } from '../agent/config/targets.js'
import { createLogger } from '../agent/observability/logger.js'
import { listBaseBackups } from '../agent/pitr/base-backup.js'
import { PitrService } from '../agent/pitr/service.js'
import { parseLsn, type DeployPoint } from '../agent/pitr/target.js'
import { queryAt } from '../test/helpers/pg.js'
import { pitrReady } from '../test/helpers/pitr.js'
import { canRunPrivatePostgres, startPrivatePostgres } from '../test/helpers/private-pg.js'
import { fmt, formatRows, type Row } from './lib.js'

const run = promisify(execFile)

const SCALE = Number(process.env.BENCH_PITR_SCALE ?? 70)
const LOAD_SECONDS = Number(process.env.BENCH_PITR_SECONDS ?? 60)
const CLIENTS = Number(process.env.BENCH_PITR_CLIENTS ?? 4)
const SAMPLE_MS = 250
const DB = 'bench'
const DEPLOY = 'd_pitrbench01'
const MB = 1024 ** 2

/** Filled by benchPitr: the settings and the measured details behind the rows. */
export const pitrNotes: string[] = []

const quantile = (xs: number[], q: number) => {
  const s = [...xs].sort((a, b) => a - b)
  return s[Math.min(s.length - 1, Math.ceil(q * s.length) - 1)] ?? 0
}
const mbOf = (bytes: number, digits = 0) => `${fmt(bytes / MB, digits)} MB`
const sec = (ms: number) => `${fmt(ms / 1000, 1)} s`

/** Apparent size of the WAL files the receiver keeps (its dir's top level: segments, `.gz`, `.partial`). */
async function walDirBytes(dir: string): Promise<{ bytes: number; files: number }> {
  let bytes = 0
  let files = 0
  for (const name of await readdir(dir)) {
    const s = await stat(join(dir, name))
    if (!s.isFile()) continue
    bytes += s.size
    files++
  }
  return { bytes, files }
}

async function dirBytes(dir: string): Promise<number> {
  let bytes = 0
  for (const entry of await readdir(dir, { withFileTypes: true, recursive: true }))
    if (entry.isFile()) bytes += (await stat(join(entry.parentPath, entry.name))).size
  return bytes
}

async function timed<T>(fn: () => Promise<T>): Promise<{ ms: number; value: T }> {
  const started = performance.now()
  const value = await fn()
  return { ms: performance.now() - started, value }
}

export async function benchPitr(): Promise<Row[]> {
  pitrNotes.length = 0
  if (!(await canRunPrivatePostgres())) {
    pitrNotes.push('PITR benchmark skipped: it needs root, an OS user postgres and the PostgreSQL server binaries (a private cluster).')
    return [
      { figure: 'PITR benchmark', value: 'skipped (no PostgreSQL server binaries)', baseline: '—', ratio: '—', target: '—', met: null },
    ]
  }
  const load = loadavg()
  const teardowns: (() => unknown)[] = []
  const t = { teardown: (fn: () => unknown) => void teardowns.push(fn) }
  try {
    // A private cluster, fsync on as a real server runs (the helper's default is off, for tests).
    const server = await startPrivatePostgres(t, { settings: { fsync: 'on' } })
    const admin = server.url('postgres')
    const url = server.url(DB)
    const bin = (name: string) => join(server.bin, name)
    const pgArgs = ['-h', '127.0.0.1', '-p', String(server.port), '-U', 'postgres']
    await queryAt(admin, `CREATE DATABASE ${DB}`)
    const init = await timed(() => run(bin('pgbench'), ['-i', '-q', '-s', String(SCALE), ...pgArgs, DB], { maxBuffer: 16 * MB }))
    const size = Number((await queryAt<{ s: string }>(admin, `SELECT pg_database_size('${DB}') AS s`))[0]?.s)
    const settings = await queryAt<{ name: string; setting: string }>(
      admin,
      "SELECT name, current_setting(name) AS setting FROM pg_settings WHERE name IN ('fsync', 'shared_buffers', 'max_wal_size', 'synchronous_commit') ORDER BY name",
    )
    const clusterSize = Number((await queryAt<{ s: string }>(admin, 'SELECT sum(pg_database_size(datname)) AS s FROM pg_database'))[0]?.s)

    // The agent's PITR on it, as `serve` sets it up (backups.verify left at its default, full).
    const dir = await mkdtemp(join(tmpdir(), 'deploy-agent-bench-pitr-'))
    t.teardown(() => rm(dir, { recursive: true, force: true }))
    const config = parseConfig(
      `audience: bench
stateDir: ${dir}/state
backups: { dir: ${dir}/backups }
apps:
  shop:
    repo: /srv/shop.git
    envs:
      prod:
        ref: "tag:v*"
        ports: [18101, 18102]
        database: { url: "${url}", pitr: { slot: deploy_agent_bench } }
`,
      {},
      'agent.yaml',
      dir,
    )
    const logger = createLogger({ level: process.env.BENCH_PITR_LOG ?? 'silent' })
    const backupTimes: { kind: string; ms: number; bytes: number }[] = []
    const backups = new BackupService({
      config,
      logger,
      onBackup: (e) => backupTimes.push({ kind: e.kind, ms: e.durationMs, bytes: e.manifest?.bytes ?? 0 }),
    })
    const points = new Map<string, DeployPoint>()
    const pitr = new PitrService({ config, logger, backups, deployPoint: (_t, id) => points.get(id), receiverBackoffMs: 200 })
    const target = findTarget(config, 'shop', 'prod')
    t.teardown(() => pitr.stop()) // before the server's teardown (registered earlier) removes it
    const paths = pitr.paths(target)
    const startUp = await timed(async () => {
      pitr.start()
      await pitrReady(pitr, target)
    })
    const base = (await listBaseBackups(paths.base))[0]
    if (base === undefined) throw new Error('PitrService took no base backup at start-up')
    const baseBytes = await dirBytes(join(paths.base, base.id))

    // The receiver first reports what the base backup's closing WAL switch completed: pg_receivewal tells the
    // server about a segment it completes only with its next flush or status message, so the slot shows a
    // whole segment of lag meanwhile on a quiet server. The load starts from a caught-up receiver.
    const caughtUp = async () => {
      const started = performance.now()
      while (((await pitr.check(target))?.receiveLagBytes ?? 1) > 0) {
        if (performance.now() - started > 120_000) throw new Error('the receiver did not catch up within 120 s')
        await sleep(100)
      }
      return performance.now() - started
    }
    const idleCatchUpMs = await caughtUp()

    // 2 + 3. The write load while the receiver streams; the agent's own lag figure every 250 ms.
    const lsnNow = async () =>
      parseLsn((await queryAt<{ l: string }>(admin, 'SELECT pg_current_wal_lsn()::text AS l'))[0]?.l ?? '') as bigint
    const walBefore = await walDirBytes(paths.wal)
    const lsnBefore = await lsnNow()
    const lags: number[] = []
    const series: { ms: number; lag: number }[] = []
    let checkErrors = 0
    let loading = true
    const loadStarted = performance.now()
    const bench = run(bin('pgbench'), ['-T', String(LOAD_SECONDS), '-c', String(CLIENTS), '-j', '2', ...pgArgs, DB], {
      maxBuffer: 16 * MB,
    }).finally(() => (loading = false))
    while (loading) {
      const started = performance.now()
      const status = await pitr.check(target).catch(() => null)
      if (status?.receiveLagBytes == null) checkErrors++
      else {
        lags.push(status.receiveLagBytes)
        series.push({ ms: Math.round(started - loadStarted), lag: status.receiveLagBytes })
      }
      await sleep(Math.max(0, SAMPLE_MS - (performance.now() - started)))
    }
    const { stdout } = await bench
    if (process.env.BENCH_PITR_SAMPLES) await writeFile(process.env.BENCH_PITR_SAMPLES, JSON.stringify(series))
    const loadMs = performance.now() - loadStarted
    const lsnAfter = await lsnNow()
    // Everything written is received before the WAL dir is measured (the last segment stays a `.partial`).
    const loadCatchUpMs = await caughtUp()
    const walAfter = await walDirBytes(paths.wal)
    const tps = Number(/tps = ([\d.]+) \(without initial connection time\)/.exec(stdout)?.[1])
    const transactions = Number(/number of transactions actually processed: (\d+)/.exec(stdout)?.[1])
    const rawWal = Number(lsnAfter - lsnBefore)
    const gzWal = walAfter.bytes - walBefore.bytes
    const walRate = rawWal / (loadMs / 1000)
    const perDay = (bytes: number) => (bytes / (loadMs / 1000)) * 86_400

    // 1. A point, as a deploy makes it before its migration, then more writes after it.
    const history = async () => Number((await queryAt<{ n: string }>(url, 'SELECT count(*) AS n FROM pgbench_history'))[0]?.n)
    const atPoint = await history()
    const point = await pitr.restorePoint(target, DEPLOY)
    points.set(DEPLOY, point ?? {})
    await run(bin('pgbench'), ['-t', '200', '-c', '2', ...pgArgs, DB])
    const afterPoint = await history()

    // Baseline: pg_dump -Fc of the same database, then pg_restore into a fresh one (the flags of the agent's own
    // restore, and with -j 2), each timed alone; the fresh database is dropped after each.
    const dumpFile = join(dir, 'baseline.dump')
    const dump = await timed(() => run('pg_dump', ['-Fc', '-f', dumpFile, url]))
    const dumpBytes = (await stat(dumpFile)).size
    const restoreInto = async (name: string, extra: string[]) => {
      await queryAt(admin, `CREATE DATABASE ${name}`)
      const took = await timed(() =>
        run('pg_restore', ['--no-owner', '--exit-on-error', ...extra, `--dbname=${server.url(name)}`, dumpFile]),
      )
      await queryAt(admin, `DROP DATABASE ${name}`)
      return took.ms
    }
    const plainMs = await restoreInto('bench_plain', [])
    const parallelMs = await restoreInto('bench_j2', ['-j', '2'])
    await rm(dumpFile)
    // Those restores wrote WAL too (the cluster's), which the receiver streams: the agent's restore starts from a
    // receiver that has caught up, as it would on a server with no restore just before.
    const baselineCatchUpMs = await caughtUp()

    // The agent's restore to the point, end to end, its steps timed as it reports them.
    const marks: { step: string; at: number; detail?: Record<string, unknown> }[] = []
    const restoreStarted = performance.now()
    const result = await pitr.restore(target, { beforeDeploy: DEPLOY }, (step, detail) =>
      marks.push({ step, at: performance.now(), detail }),
    )
    const pitrMs = performance.now() - restoreStarted
    const restored = await history()
    if (restored !== atPoint) throw new Error(`the restore brought back ${restored} pgbench_history rows, not the ${atPoint} at the point`)
    const at = (step: string) => marks.find((m) => m.step === step)?.at ?? Number.NaN
    const prerestore = backupTimes.find((b) => b.kind === 'prerestore')
    const pieces = {
      checks: at('recovering') - restoreStarted,
      extract: at('WAL laid out') - at('extracting base backup'),
      recovery: at('recovered; dumping') - at('recovery started'),
      dump: at('restoring the dump') - at('recovered; dumping'),
      restore: at('done') - at('restoring the dump'),
    }
    const segments = marks.find((m) => m.step === 'WAL laid out')?.detail?.segments
    const replayed = Number((parseLsn(point?.lsn ?? '') ?? 0n) - (parseLsn(base.startLsn) ?? 0n))
    const after = loadavg()

    pitrNotes.push(
      `PITR cluster: a private PostgreSQL 15 (initdb, 127.0.0.1, initdb's defaults but fsync on: ${settings.map((r) => `${r.name} ${r.setting}`).join(', ')}) holding only \`${DB}\`: pgbench -i -s ${SCALE} in ${sec(init.ms)}, pg_database_size ${fmt(size)} bytes (${mbOf(size)}), the whole cluster ${mbOf(clusterSize)} (what a base backup copies and recovery replays into).`,
      `PITR set-up: PitrService as \`serve\` runs it (slot, supervised pg_receivewal --synchronous --compress=gzip, start-up base backup pg_basebackup -Ft -z -X stream -c fast), backups.verify at its default (full); start → ready ${sec(startUp.ms)}; base backup ${base.id}: ${mbOf(baseBytes)} on disk (${fmt(clusterSize / baseBytes, 1)}× smaller than the cluster).`,
      `Write load: \`pgbench -T ${LOAD_SECONDS} -c ${CLIENTS} -j 2\` (TPC-B-like) on \`${DB}\` right after the base backup, once the agent reported a receive lag of 0 (${sec(idleCatchUpMs)} after start-up was ready: see the lag note): ${fmt(tps)} TPS (${fmt(transactions)} transactions in ${sec(loadMs)}); raw WAL ${mbOf(rawWal)} (pg_current_wal_lsn after − before, ${mbOf(walRate, 1)}/s).`,
      `Receive lag: PitrService.check() (PitrMonitor, whose receiveLagBytes is the metric deploy_agent_pitr_receive_lag_bytes: pg_current_wal_lsn − the slot's restart_lsn) every ${SAMPLE_MS} ms during the load: ${lags.length} samples${checkErrors > 0 ? `, ${checkErrors} without a figure` : ''}; p50 ${fmt(quantile(lags, 0.5))}, p99 ${fmt(quantile(lags, 0.99))}, max ${fmt(Math.max(...lags))} bytes; in seconds = bytes ÷ the load's mean WAL rate. After the load the receiver was at 0 again ${sec(loadCatchUpMs)} later; after the baseline's restores (whose WAL it streams too) ${sec(baselineCatchUpMs)} later, before the agent's restore started.`,
      `WAL disk: the WAL dir's files (apparent sizes) grew by ${mbOf(gzWal, 1)} during the load (${walBefore.files} → ${walAfter.files} files, measured once the receiver had caught up), against ${mbOf(rawWal, 1)} of raw WAL: gzip keeps ${fmt((100 * gzWal) / rawWal, 1)} % (${fmt(rawWal / gzWal, 2)}×). Per day at that rate (${fmt(tps)} TPS around the clock): ${fmt(perDay(gzWal) / 1024 ** 3, 1)} GB kept, ${fmt(perDay(rawWal) / 1024 ** 3, 1)} GB raw.`,
      `PITR restore: to "before ${DEPLOY}" (pitr.restorePoint as the pipeline calls it before MIGRATING, after the load; then \`pgbench -t 200 -c 2\`, which first truncates pgbench_history: ${fmt(atPoint)} history rows at the point, ${fmt(afterPoint)} after, ${fmt(atPoint)} again after the restore — checked). PitrService.restore is what POST /v1/backups/pitr/restore runs (the route adds the signature check and the body's checks). WAL replayed from the base backup's start to the point: ${mbOf(replayed)} (${String(segments)} segments laid out). Steps as its onProgress reports them — checks (commit, wait for the receiver, plan, privileges) ${sec(pieces.checks)}; extract the base backup + lay out the WAL ${sec(pieces.extract)}; recovery (start the private instance, replay, promote) ${sec(pieces.recovery)}; pg_dump -Fc from it (+ stop, delete) ${sec(pieces.dump)}; restore of that dump as a backup restore ${sec(pieces.restore)}, of which the pinned pre-restore backup of the live database (pg_dump + verify full) ${prerestore ? `${sec(prerestore.ms)} (${mbOf(prerestore.bytes)})` : 'unknown'}, and pg_restore + swap the rest. Result: ${result.database} restored, ${result.oldDatabase} kept.`,
      `Baseline: \`pg_dump -Fc -f <file> <url>\` of the same database after the point (${sec(dump.ms)}, ${mbOf(dumpBytes)}), then into a fresh database \`pg_restore --no-owner --exit-on-error --dbname=<url> <file>\` (the flags the agent's restore uses, one job): ${sec(plainMs)}; the same with \`-j 2\`: ${sec(parallelMs)}. Each timed alone, the database created before and dropped after, untimed. Dump and pg_restore from PATH (Debian's wrapper: PostgreSQL 15's tools).`,
      `PITR machine: load average (1 / 5 / 15 min) before ${load.map((x) => fmt(x, 1)).join(' / ')}, after ${after.map((x) => fmt(x, 1)).join(' / ')}.`,
    )
    const lagRate = (bytes: number) => `${fmt(bytes)} B (${fmt((bytes / walRate) * 1000)} ms)`
    return [
      {
        figure: `PITR restore of a ${mbOf(size)} database to a point, end to end (${mbOf(replayed)} of WAL replayed)`,
        value: sec(pitrMs),
        baseline: `${sec(plainMs)} (pg_restore of a pg_dump -Fc into a fresh database; -j 2: ${sec(parallelMs)})`,
        ratio: `${fmt(pitrMs / plainMs, 2)}× (${fmt(pitrMs / parallelMs, 2)}× -j 2)`,
        target: '—',
        met: null,
      },
      {
        figure: 'PITR restore steps: recovery / dump from it / restore of that dump (pre-restore backup of it)',
        value: `${sec(pieces.recovery)} / ${sec(pieces.dump)} / ${sec(pieces.restore)} (${prerestore ? sec(prerestore.ms) : '?'})`,
        baseline: `extract + WAL ${sec(pieces.extract)}, checks ${sec(pieces.checks)}`,
        ratio: '—',
        target: '—',
        met: null,
      },
      {
        figure: `PITR receive lag under pgbench -c ${CLIENTS} (${fmt(tps)} TPS), p50 / p99 / max`,
        value: `${lagRate(quantile(lags, 0.5))} / ${lagRate(quantile(lags, 0.99))} / ${lagRate(Math.max(...lags))}`,
        baseline: `${mbOf(walRate, 1)}/s of WAL written`,
        ratio: '—',
        target: '—',
        met: null,
      },
      {
        figure: `PITR WAL disk per day at ${fmt(tps)} TPS (gzip'd, as the receiver keeps it)`,
        value: `${fmt(perDay(gzWal) / 1024 ** 3, 1)} GB/day`,
        baseline: `${fmt(perDay(rawWal) / 1024 ** 3, 1)} GB/day raw WAL`,
        ratio: `${fmt(gzWal / rawWal, 2)}×`,
        target: '—',
        met: null,
      },
    ]
  } finally {
    // Each step on its own: a failed one (logged) must not leave the cluster or the slot's receiver running.
    for (const fn of teardowns.reverse()) await Promise.resolve(fn()).catch((err: unknown) => console.error('PITR bench cleanup:', err))
  }
}

if (process.argv[1] !== undefined && resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  const rows = await benchPitr()
  console.log(`${formatRows(rows)}\n\n${pitrNotes.map((n) => `- ${n}`).join('\n')}`)
}
