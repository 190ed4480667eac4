// The backup commands: backup, backups (list, verify, prune) and restore. Each parses its flags, calls the agent
// and prints. A manual backup runs in the background on the agent: `backup` waits for it to be listed (and
// verified, when the agent verifies) by polling GET /v1/backups; the agent reports no failure of a background
// backup, so one that never appears within --timeout counts as failed (the agent's log says why).
import { createInterface } from 'node:readline/promises'
import { setTimeout as sleep } from 'node:timers/promises'
import type { Command } from 'commander'
import type { AgentClient } from './client.js'
import { clientFrom, example, UsageError, withClientOptions, type ClientFlags } from './options.js'
import { formatTable } from './table.js'

/** What GET /v1/backups lists: an agent backup (manifest) or a legacy file, which names no app, env or kind. */
export interface BackupView {
  id: string
  legacy: boolean
  app: string | null
  env: string | null
  kind: string | null
  createdAt: string
  file: string
  bytes: number
  sha256: string | null
  verified: { at: string; method: string; ok: boolean; reason?: string } | null
  pinnedBy: string | null
}

interface VerifyBody {
  ok: boolean
  reason?: string
  tables?: Record<string, number>
}

interface PruneBody {
  plan: Array<{ id: string; keep: boolean; reasons: string[] }>
  text: string
  /** For an env with PITR: its base backups and WAL. */
  pitr?: { text: string }
}

interface RestoreBody {
  backup: { id: string; file: string; format: string }
  database: string
  oldDatabase: string
  prerestore: { id: string }
  files?: { restored: { path: string; old: string | null }[]; skipped: string[] } | null
  durationMs: number
}

interface StatusBody {
  apps: Record<string, { envs: Record<string, { lastBackup: { id: string; createdAt: string } | null }> }>
}

const POLL_MS = 500
const DEFAULT_TIMEOUT_SEC = 600

/** What the agent accepts as a backup name: its id, one of its file names, or a legacy file name — never a path. */
const BACKUP_NAME = /^[A-Za-z0-9][A-Za-z0-9._-]{0,200}$/

/** `2024-05-01T12:00:01.123Z` → `2024-05-01 12:00:01Z`. */
const shortTime = (iso: string) => iso.replace('T', ' ').replace(/\.\d+Z$/, 'Z')

const backupPath = (id: string) => `/v1/backups/${encodeURIComponent(id)}`
const envPath = (app: string, env: string) => `/v1/apps/${encodeURIComponent(app)}/envs/${encodeURIComponent(env)}`

/** Bytes for people, in SI units: `512 B`, `1.2 kB`, `34.5 MB`. */
export function humanSize(bytes: number): string {
  if (!Number.isFinite(bytes) || bytes < 1000) return `${bytes} B`
  const units = ['kB', 'MB', 'GB', 'TB', 'PB']
  let value = bytes
  let unit = 'B'
  for (const next of units) {
    if (value < 1000) break
    value /= 1000
    unit = next
  }
  return `${value.toFixed(1)} ${unit}`
}

/** yes / no / - (never verified). */
export function verifiedCell(verified: BackupView['verified']): string {
  if (verified === null) return '-'
  return verified.ok ? 'yes' : 'no'
}

/** An env's PITR as GET /v1/backups lists it (agent/pitr/monitor.ts). */
export interface PitrView {
  app: string
  env: string
  window: {
    earliest: { time: string; lsn: string } | null
    latest: { lsn: string; time: string | null } | null
    /** Absent from an older agent. */
    gaps?: { from: { time: string; lsn: string }; to: { time: string; lsn: string } }[]
  }
  receiver: { streaming: boolean; downSince: string | null }
  walStatus: string | null
  receiveLagBytes: number | null
  walDiskFreeBytes: number | null
  problems: { message: string; hint: string }[]
}

/** One row per env: the window's earliest and latest point, the receiver, the slot, the disk; then any problem. */
export function formatPitr(list: readonly PitrView[]): string {
  const point = (p: { time: string | null; lsn: string } | null) => (p === null ? '-' : `${p.time ? shortTime(p.time) : '?'} (${p.lsn})`)
  const size = (n: number | null) => (n === null ? '-' : humanSize(n))
  const rows = [['APP', 'ENV', 'EARLIEST', 'LATEST', 'RECEIVER', 'LAG', 'SLOT', 'DISK FREE']]
  for (const p of list) {
    const receiver = p.receiver.streaming ? 'streaming' : `down since ${p.receiver.downSince ? shortTime(p.receiver.downSince) : '?'}`
    rows.push([
      p.app,
      p.env,
      point(p.window.earliest),
      point(p.window.latest),
      receiver,
      size(p.receiveLagBytes),
      p.walStatus ?? '-',
      size(p.walDiskFreeBytes),
    ])
  }
  const gaps = list.flatMap((p) =>
    (p.window.gaps ?? []).map(
      (g) => `${p.app}/${p.env}: cannot recover between ${point(g.from)} and ${point(g.to)}: no WAL was received there (a slot lost)`,
    ),
  )
  const problems = list.flatMap((p) => p.problems.map((x) => `${p.app}/${p.env}: ${x.message} (${x.hint})`))
  return [formatTable(rows), ...gaps, ...problems].join('\n')
}

function checkBackupName(id: string): string {
  if (!BACKUP_NAME.test(id) || id.includes('..')) {
    throw new UsageError(
      `"${id}" is not a backup name: give a backup id (see \`deploy-agent backups\`) or a plain file name in the backup directory, never a path`,
    )
  }
  return id
}

function parseTimeout(value: string): number {
  if (!/^[0-9]{1,6}(\.[0-9]+)?$/.test(value) || Number(value) <= 0)
    throw new UsageError(`--timeout must be a number of seconds above 0, not "${value}"`)
  return Number(value)
}

/** One line per backup for the human output of `backup`. */
function describeBackup(b: BackupView): string {
  const verified =
    b.verified === null
      ? 'not verified'
      : b.verified.ok
        ? `verified (${b.verified.method})`
        : `verification FAILED: ${b.verified.reason ?? 'no reason given'}`
  return `${b.id}  ${b.app ?? '-'}/${b.env ?? '-'}  ${humanSize(b.bytes)}  ${verified}`
}

/**
 * Polls the list until backup `id` is there and settled: verified (either way), or reported by the status as the
 * env's last backup (an agent that does not verify). Returns what was last seen of it, and whether it settled.
 */
async function waitForBackup(
  client: AgentClient,
  id: string,
  app: string,
  env: string,
  timeoutMs: number,
): Promise<{ backup: BackupView | null; settled: boolean; error?: { code: string; message: string } }> {
  const deadline = Date.now() + timeoutMs
  let seen: BackupView | null
  // The status said it settled after the list was read: the list is read once more (a verification that ended in
  // between shows there), then that is the answer.
  let settledByStatus = false
  for (;;) {
    const { backups, failures = [] } = await client.get<{
      backups: BackupView[]
      failures?: Array<{ id: string | null; error: { code: string; message: string } }>
    }>('/v1/backups')
    const failure = failures.find((f) => f.id === id)
    if (failure) return { backup: null, settled: true, error: failure.error }
    seen = backups.find((b) => !b.legacy && b.id === id) ?? null
    if (seen !== null) {
      if (seen.verified !== null || settledByStatus) return { backup: seen, settled: true }
      const status = await client.get<StatusBody>('/v1/status')
      const last = status.apps[app]?.envs[env]?.lastBackup ?? null
      if (last !== null && (last.id === id || last.createdAt > seen.createdAt)) {
        settledByStatus = true
        continue
      }
    }
    const left = deadline - Date.now()
    if (left <= 0) return { backup: seen, settled: false }
    await sleep(Math.min(POLL_MS, left))
  }
}

/** Asks on the terminal for the backup id; true only when the answer repeats it exactly. */
async function confirmOnTty(id: string, what: string, label = 'the backup id'): Promise<boolean> {
  const rl = createInterface({ input: process.stdin, output: process.stderr })
  try {
    process.stderr.write(`${what}\nThe live database is replaced (the current one is kept under another name, and backed up first).\n`)
    const answer = await rl.question(`Type ${label} to confirm (${id}): `)
    return answer.trim() === id
  } finally {
    rl.close()
  }
}

export function addBackupCommands(program: Command): void {
  withClientOptions(
    program
      .command('backup')
      .description("take a manual backup of an app env's database; waits until it is stored (and verified, when the agent verifies)")
      .argument('<app>', 'app name from the agent config')
      .argument('<env>', 'env of that app (one with a database)')
      .option('--no-wait', 'return once the agent has accepted the backup (202), printing its id')
      .option('--timeout <seconds>', `how long to wait for the backup to appear (default ${DEFAULT_TIMEOUT_SEC})`)
      .option('--json', 'print JSON (the backup as listed; with --no-wait, { id })'),
  )
    .addHelpText('after', example('deploy-agent backup shop production', 'deploy-agent backup shop production --no-wait --json'))
    .action(async (app: string, env: string, opts: ClientFlags & { wait: boolean; timeout?: string }) => {
      const timeoutSec = opts.timeout === undefined ? DEFAULT_TIMEOUT_SEC : parseTimeout(opts.timeout)
      const client = await clientFrom(opts)
      const { id } = await client.post<{ id: string }>('/v1/backups', { app, env })
      if (!opts.wait) {
        if (opts.json) console.log(JSON.stringify({ id }))
        else console.log(`${id}  ${app}/${env}  started (see \`deploy-agent backups --app ${app} --env ${env}\`)`)
        return
      }
      const { backup, settled, error } = await waitForBackup(client, id, app, env, timeoutSec * 1000)
      if (error) {
        if (opts.json) console.log(JSON.stringify({ id, ok: false, error }))
        console.error(`error: backup ${id} of ${app}/${env} failed: ${error.code}: ${error.message}`)
        process.exitCode = 1
        return
      }
      if (backup === null) {
        if (opts.json) console.log(JSON.stringify({ id, ok: false, error: 'not_listed' }))
        console.error(
          `error: backup ${id} of ${app}/${env} did not appear within ${timeoutSec} s: it failed or is still running (the agent's log says which)`,
        )
        process.exitCode = 1
        return
      }
      if (opts.json) console.log(JSON.stringify(backup, null, 2))
      else console.log(describeBackup(backup))
      if (backup.verified?.ok === false) {
        console.error(`error: backup ${id} failed verification: ${backup.verified.reason ?? 'no reason given'}`)
        process.exitCode = 1
      } else if (!settled) {
        console.error(`error: backup ${id} was stored but its verification did not finish within ${timeoutSec} s`)
        process.exitCode = 1
      }
    })

  const backups = withClientOptions(
    program
      .command('backups')
      .description('stored backups, newest first (needs the status token); subcommands verify and prune')
      .option('--app <app>', 'only this app')
      .option('--env <env>', 'only this env')
      .option('--json', 'print JSON'),
  )
    // Options after `verify`/`prune` belong to them, not to the list.
    .enablePositionalOptions()
    .addHelpText(
      'after',
      example(
        'deploy-agent backups --app shop --env production',
        'deploy-agent backups verify 1a2b3c4d',
        'deploy-agent backups prune shop production --dry-run',
      ),
    )
    .action(async (opts: ClientFlags & { app?: string; env?: string }) => {
      const body = await (await clientFrom(opts)).get<{ backups: BackupView[]; pitr?: PitrView[] }>('/v1/backups')
      const wanted = (b: { app: string | null; env: string | null }) =>
        (opts.app === undefined || b.app === opts.app) && (opts.env === undefined || b.env === opts.env)
      const list = body.backups.filter(wanted)
      const pitr = (body.pitr ?? []).filter(wanted)
      if (opts.json) {
        console.log(JSON.stringify({ backups: list, pitr }, null, 2))
        return
      }
      const rows = [['ID', 'APP', 'ENV', 'KIND', 'CREATED', 'SIZE', 'VERIFIED', 'PINNED']]
      for (const b of list) {
        rows.push([
          b.id,
          b.app ?? '-',
          b.env ?? '-',
          b.kind ?? (b.legacy ? 'legacy' : '-'),
          shortTime(b.createdAt),
          humanSize(b.bytes),
          verifiedCell(b.verified),
          b.pinnedBy ?? '-',
        ])
      }
      console.log(formatTable(rows))
      if (pitr.length > 0) console.log(`\npoint-in-time recovery (recoverable window per env):\n${formatPitr(pitr)}`)
    })

  withClientOptions(
    backups
      .command('verify')
      .description('re-check a stored backup on the agent (sha256 and a full read); exit 0 only when it is sound')
      .argument('<id>', 'backup id (or one of its file names)')
      .option('--json', 'print JSON'),
  )
    .addHelpText('after', example('deploy-agent backups verify 1a2b3c4d'))
    .action(async (id: string, opts: ClientFlags) => {
      checkBackupName(id)
      const result = await (await clientFrom(opts)).post<VerifyBody>(`${backupPath(id)}/verify`, {})
      if (opts.json) console.log(JSON.stringify(result, null, 2))
      else if (result.ok) console.log(`${id}  ok`)
      else console.log(`${id}  FAILED: ${result.reason ?? 'no reason given'}`)
      if (!result.ok) {
        if (opts.json) console.error(`error: backup ${id} failed verification: ${result.reason ?? 'no reason given'}`)
        process.exitCode = 1
      }
    })

  withClientOptions(
    backups
      .command('prune')
      .description("apply the retention policy to an app env's backups; --dry-run only prints the plan")
      .argument('<app>', 'app name from the agent config')
      .argument('<env>', 'env of that app')
      .option('--dry-run', 'print what would be kept and deleted; delete nothing')
      .option('--json', 'print JSON'),
  )
    .addHelpText('after', example('deploy-agent backups prune shop production --dry-run'))
    .action(async (app: string, env: string, opts: ClientFlags & { dryRun?: boolean }) => {
      const result = await (await clientFrom(opts)).post<PruneBody>(`${envPath(app, env)}/backups/prune`, { dryRun: opts.dryRun === true })
      if (opts.json) {
        console.log(JSON.stringify(result, null, 2))
        return
      }
      if (result.plan.length === 0) console.log(`no backups of ${app}/${env} to plan for`)
      else console.log(result.text)
      if (result.pitr) console.log(`point-in-time recovery (base backups and WAL):\n${result.pitr.text}`)
      if (opts.dryRun) console.log('(dry run: nothing was deleted)')
    })

  withClientOptions(
    program
      .command('restore')
      .description(
        "restore a backup into its env's database: the agent verifies it, backs up the live database, restores beside it and swaps names; with --pitr, restore the env's database to a point in time instead",
      )
      .argument('[id]', 'backup id, one of its file names, or a legacy file name (not with --pitr)')
      .option('--app <app>', 'for a legacy file or --pitr: the app to restore into')
      .option('--env <env>', 'for a legacy file or --pitr: the env to restore into')
      .option('--pitr', 'point-in-time recovery (needs --app, --env and one of the three targets below)')
      .option('--before-deploy <id>', "with --pitr: the instant before that deploy's migration")
      .option('--to-time <time>', 'with --pitr: an ISO 8601 time with an explicit offset, e.g. 2027-06-01T12:00:00+02:00')
      .option('--to-lsn <lsn>', 'with --pitr: a WAL position such as 0/3000060')
      .option('-y, --yes', 'do not ask; required when stdin is not a terminal')
      .option('--json', 'print JSON'),
  )
    .addHelpText(
      'after',
      example(
        'deploy-agent restore 1a2b3c4d',
        'deploy-agent restore backup_20240501_030000.sql.gz --app shop --env production --yes',
        'deploy-agent restore --pitr --app shop --env production --before-deploy d_abcdefghijkl',
      ),
    )
    .action(async (id: string | undefined, opts: ClientFlags & RestoreFlags) => {
      if ((opts.app === undefined) !== (opts.env === undefined)) throw new UsageError('--app and --env go together')
      if (opts.pitr) return restorePitr(id, opts)
      if (id === undefined) throw new UsageError('restore needs a backup id (or --pitr)')
      checkBackupName(id)
      if (!opts.yes) {
        if (!process.stdin.isTTY) throw new UsageError('restore replaces a live database: pass --yes (stdin is not a terminal to ask on)')
        const target = opts.app !== undefined ? ` into ${opts.app}/${opts.env}` : ''
        if (!(await confirmOnTty(id, `Restore backup ${id}${target}.`))) {
          console.error('error: the answer did not repeat the backup id; nothing was restored')
          process.exitCode = 1
          return
        }
      }
      const body = { confirm: id, ...(opts.app !== undefined && { app: opts.app }), ...(opts.env !== undefined && { env: opts.env }) }
      const result = await (await clientFrom(opts)).post<RestoreBody>(`${backupPath(id)}/restore`, body)
      if (opts.json) {
        console.log(JSON.stringify(result, null, 2))
        return
      }
      console.log(`restored ${result.backup.id} into ${result.database} in ${(result.durationMs / 1000).toFixed(1)} s`)
      console.log(`old database kept as ${result.oldDatabase} (drop it once it is no longer needed)`)
      for (const f of result.files?.restored ?? [])
        console.log(`restored ${f.path}${f.old === null ? '' : `; old content kept as ${f.old} (remove it once no longer needed)`}`)
      for (const path of result.files?.skipped ?? []) console.log(`not restored: ${path} (no longer in the env's files)`)
      console.log(`pre-restore backup: ${result.prerestore.id} (\`deploy-agent restore ${result.prerestore.id}\` goes back)`)
    })
}

interface RestoreFlags {
  app?: string
  env?: string
  yes?: boolean
  json?: boolean
  pitr?: boolean
  beforeDeploy?: string
  toTime?: string
  toLsn?: string
}

interface PitrRestoreBody {
  target: string
  baseBackup: string
  database: string
  oldDatabase: string
  prerestore: string
  durationMs: number
}

/** `restore --pitr`: one target, confirmed by repeating `<app>/<env>`; the agent checks the target before changing anything. */
async function restorePitr(id: string | undefined, opts: ClientFlags & RestoreFlags): Promise<void> {
  if (id !== undefined)
    throw new UsageError('restore --pitr takes no backup id: name the point with --before-deploy, --to-time or --to-lsn')
  if (opts.app === undefined || opts.env === undefined) throw new UsageError('restore --pitr needs --app and --env')
  const targets = [
    opts.beforeDeploy !== undefined && { beforeDeploy: opts.beforeDeploy },
    opts.toTime !== undefined && { time: opts.toTime },
    opts.toLsn !== undefined && { lsn: opts.toLsn },
  ].filter((x) => x !== false)
  if (targets.length !== 1) throw new UsageError('restore --pitr needs exactly one of --before-deploy, --to-time, --to-lsn')
  const confirm = `${opts.app}/${opts.env}`
  if (!opts.yes) {
    if (!process.stdin.isTTY) throw new UsageError('restore replaces a live database: pass --yes (stdin is not a terminal to ask on)')
    if (!(await confirmOnTty(confirm, `Restore ${confirm} to ${JSON.stringify(targets[0])}.`, 'the app/env'))) {
      console.error(`error: the answer did not repeat ${confirm}; nothing was restored`)
      process.exitCode = 1
      return
    }
  }
  if (!opts.json) console.error(`recovering ${confirm} to ${JSON.stringify(targets[0])} (progress is in the agent's log)…`)
  const result = await (
    await clientFrom(opts)
  ).post<PitrRestoreBody>('/v1/backups/pitr/restore', {
    app: opts.app,
    env: opts.env,
    target: targets[0],
    confirm,
  })
  if (opts.json) {
    console.log(JSON.stringify(result, null, 2))
    return
  }
  console.log(
    `restored ${result.database} to ${result.target} (base backup ${result.baseBackup}) in ${(result.durationMs / 1000).toFixed(1)} s`,
  )
  console.log(`old database kept as ${result.oldDatabase} (drop it once it is no longer needed)`)
  console.log(`pre-restore backup: ${result.prerestore} (\`deploy-agent restore ${result.prerestore}\` goes back)`)
}
