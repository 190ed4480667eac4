// Watches one env's PITR: every check reads its slot (wal_status, safe_wal_size, active, what was flushed), the WAL
// position and clock of the server, the receiver's process and the WAL dir's free disk; keeps the result for the
// status and metrics, and announces a problem (an error log line and a notification) when it starts.
import { statfs } from 'node:fs/promises'
import type { Notice } from '../notify/notifier.js'
import type { Logger } from '../observability/logger.js'
import type { Connection } from '../pg/connection.js'
import { listBaseBackups } from './base-backup.js'
import { assessHealth, INITIAL_HEALTH, type HealthState, type PitrProblem } from './health.js'
import { listWalFileInfos, type PitrPaths } from './paths.js'
import { slotHealth, type SlotHealth } from './pg.js'
import type { WalReceiver } from './receiver.js'
import { parseLsn, type WindowGap } from './target.js'
import { windowGaps } from './window.js'

/** What GET /v1/status and GET /v1/backups show of an env's PITR. */
export interface PitrEnvStatus {
  slot: string
  /** The recoverable window: from the oldest kept base backup's end to what the receiver has flushed. */
  window: {
    earliest: { time: string; lsn: string; baseBackup: string } | null
    /** `time`: every write the server made up to then was received (the last check that saw it; null if unknown). */
    latest: { lsn: string; time: string | null } | null
    /** Stretches inside the window that cannot be recovered (no WAL received there: a slot lost), oldest first. */
    gaps: WindowGap[]
  }
  receiver: { running: boolean; streaming: boolean; restarts: number; downSince: string | null }
  /** The slot's wal_status (reserved, extended, unreserved, lost), `missing` without a slot, null when not read. */
  walStatus: string | null
  /** pg_replication_slots.safe_wal_size: null without max_slot_wal_keep_size. */
  safeWalSize: number | null
  /** WAL the server wrote that the receiver has not flushed yet. */
  receiveLagBytes: number | null
  walDiskFreeBytes: number | null
  problems: PitrProblem[]
  /** Why the database could not be read at the last check, if it could not. */
  error: string | null
  checkedAt: string
}

export interface MonitorOptions {
  app: string
  env: string
  slot: string
  paths: PitrPaths
  conn: () => Promise<Connection>
  receiver: () => WalReceiver | null
  logger: Logger
  notify?: (notice: Notice) => void
  downAfterMs: number
}

/** How many checks' (clock, WAL position) pairs are kept to date what the receiver flushed. */
const HISTORY = 240
const DEFAULT_SEGMENT = 16 * 1024 * 1024

export class PitrMonitor {
  private health: HealthState = INITIAL_HEALTH
  private history: { at: Date; lsn: bigint }[] = []
  private checking: Promise<PitrEnvStatus> | null = null
  status: PitrEnvStatus | null = null

  constructor(private readonly o: MonitorOptions) {}

  /** One check (a check under way is joined, not doubled). */
  check(): Promise<PitrEnvStatus> {
    this.checking ??= this.run().finally(() => (this.checking = null))
    return this.checking
  }

  private async run(): Promise<PitrEnvStatus> {
    const at = new Date()
    let read: SlotHealth | null = null
    let error: string | null = null
    try {
      read = await slotHealth(await this.o.conn(), this.o.slot)
    } catch (err) {
      error = err instanceof Error ? err.message : String(err)
    }
    const bases = await listBaseBackups(this.o.paths.base)
    const free = await statfs(this.o.paths.wal).then(
      (s) => s.bavail * s.bsize,
      () => null,
    )
    const receiver = this.o.receiver()
    const slot = read === null ? null : read.slot === null ? ('missing' as const) : read.slot
    const { state, problems, announce } = assessHealth(
      this.health,
      {
        at,
        slotName: this.o.slot,
        receiverRunning: receiver?.running ?? false,
        slot,
        walDiskFree: free,
        walSegmentSize: bases.at(-1)?.walSegmentSize ?? DEFAULT_SEGMENT,
      },
      { downAfterMs: this.o.downAfterMs },
    )
    const flushed = typeof slot === 'object' && slot?.restartLsn ? parseLsn(slot.restartLsn) : null
    const current = read ? parseLsn(read.currentLsn) : null
    if (read && current !== null) this.history = [...this.history.slice(-(HISTORY - 1)), { at: read.serverNow, lsn: current }]
    const caughtUp = flushed === null ? undefined : this.history.filter((h) => h.lsn <= flushed).at(-1)
    const oldest = bases[0]
    this.status = {
      slot: this.o.slot,
      window: {
        earliest: oldest ? { time: oldest.endTime, lsn: oldest.endLsn, baseBackup: oldest.id } : null,
        latest: flushed === null ? null : { lsn: (slot as { restartLsn: string }).restartLsn, time: caughtUp?.at.toISOString() ?? null },
        gaps: windowGaps(bases, await listWalFileInfos(this.o.paths.wal).catch(() => [])),
      },
      receiver: {
        running: receiver?.running ?? false,
        streaming: state.downSince === null,
        restarts: receiver?.restarts ?? 0,
        downSince: state.downSince?.toISOString() ?? null,
      },
      walStatus: slot === null ? null : slot === 'missing' ? 'missing' : slot.walStatus,
      safeWalSize: typeof slot === 'object' && slot !== null ? slot.safeWalSize : null,
      receiveLagBytes: flushed !== null && current !== null ? Number(current > flushed ? current - flushed : 0n) : null,
      walDiskFreeBytes: free,
      problems,
      error,
      checkedAt: at.toISOString(),
    }
    // Announced once the status shows it: whoever reads the status on a notification finds the problem there.
    for (const p of announce) {
      // Never silent: the log has it whether or not any notification target is configured.
      this.o.logger.error({ problem: p.kind, hint: p.hint }, p.message)
      this.o.notify?.({ event: `pitr.${p.kind}`, app: this.o.app, env: this.o.env, reason: p.message, hint: p.hint })
    }
    for (const kind of this.health.announced) if (!state.announced.has(kind)) this.o.logger.info({ problem: kind }, 'PITR problem cleared')
    this.health = state
    return this.status
  }
}
