// The pure decisions of a PITR restore: LSN arithmetic, WAL segment names, and which base backup and which
// `recovery_target_*` a requested target needs — or why it cannot be reached, before anything is touched.
import { PitrError } from './errors.js'

/** `{ beforeDeploy: <deploy id> }`, `{ time: <ISO 8601 with an explicit offset> }` or `{ lsn: 'X/Y' }`. */
export type PitrTarget = { beforeDeploy: string } | { time: string } | { lsn: string }

/** What a finished base backup recorded: where its WAL starts, where it is consistent, and the server's clock then. */
export interface BaseBackupInfo {
  id: string
  startLsn: string
  endLsn: string
  /** The server's clock just after the backup ended: no earlier time is recoverable from it. */
  endTime: string
  timeline: number
  walSegmentSize: number
}

/** A restore point taken before a deploy's migration, as the deploy record keeps it. */
export interface DeployPoint {
  restorePoint?: string | number | null
  lsn?: string | number | null
}

export interface RecoveryPlan {
  base: BaseBackupInfo
  /** The one recovery_target_* setting, as postgresql.conf takes it. */
  setting: { name: 'recovery_target_lsn' | 'recovery_target_time'; value: string }
  /** recovery_target_inclusive: false for beforeDeploy, whose LSN is where the migration's first record may start. */
  inclusive: boolean
  /** What was asked, in words, for logs. */
  described: string
}

/** A stretch of the recoverable window with no WAL received (window.ts finds them). */
export interface WindowGap {
  /**
   * The end of the last WAL segment received before the gap, and when that file was last written (the receiver
   * writes as the server does, so about the time of the last write before the gap).
   */
  from: { lsn: string; time: string }
  /** The end of the first base backup after the gap: the first recoverable point again. */
  to: { lsn: string; time: string; baseBackup: string }
}

const LSN = /^([0-9A-Fa-f]{1,8})\/([0-9A-Fa-f]{1,8})$/
/** ISO 8601 with seconds and an explicit zone (Z or ±hh:mm): a time without one would be read in the server's zone. */
const TIME = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{1,6})?(Z|[+-]\d{2}:\d{2})$/

export function parseLsn(text: string): bigint | null {
  const m = LSN.exec(text)
  return m ? (BigInt(`0x${m[1]}`) << 32n) | BigInt(`0x${m[2]}`) : null
}

export function formatLsn(lsn: bigint): string {
  return `${(lsn >> 32n).toString(16).toUpperCase()}/${(lsn & 0xffffffffn).toString(16).toUpperCase()}`
}

/** The WAL segment file name holding `lsn`: timeline, then the segment number split in two 8-hex halves. */
export function segmentName(timeline: number, lsn: bigint, segmentSize: number): string {
  const segment = lsn / BigInt(segmentSize)
  const perId = 0x100000000n / BigInt(segmentSize)
  const hex = (n: bigint | number) => n.toString(16).toUpperCase().padStart(8, '0')
  return `${hex(timeline)}${hex(segment / perId)}${hex(segment % perId)}`
}

/** A time for `recovery_target_time`: UTC with `+00:00` (PostgreSQL refuses a `Z` suffix there). */
export function recoveryTime(date: Date): string {
  return date.toISOString().replace('T', ' ').replace('Z', '+00:00')
}

/**
 * The base backup and recovery target for `target`, or a PitrError saying why it cannot be reached: a target after
 * what the receiver has flushed (`flushedLsn`, and for a time the server's clock `serverNow`, which the caller
 * makes covered by a fresh commit) or before the end of the oldest base backup; a deploy unknown or without a
 * restore point. The newest base backup that ends at or before the target is chosen (the shortest replay).
 */
export function planRecovery(input: {
  target: PitrTarget
  bases: readonly BaseBackupInfo[]
  flushedLsn: string | null
  serverNow: Date
  /** The deploy `beforeDeploy` names: undefined when there is none of this env. */
  deploy?: DeployPoint
  /** The window's gaps (window.ts): a target inside one is refused. */
  gaps?: readonly WindowGap[]
}): RecoveryPlan {
  const { target, bases } = input
  const flushed = input.flushedLsn === null ? null : parseLsn(input.flushedLsn)
  const unreachable = (message: string) => new PitrError('pitr_target_unreachable', message)
  const inGap = (described: string, g: WindowGap) =>
    unreachable(
      `${described} is in a gap of the recoverable window: no WAL was received from ${g.from.lsn} (${g.from.time}) until base backup ${g.to.baseBackup} ended at ${g.to.lsn} (${g.to.time}), e.g. after a replication slot was lost; recover to a point up to the first or from the second`,
    )
  if (bases.length === 0) throw unreachable('there is no base backup yet: nothing can be recovered to a point')
  const byEnd = [...bases].sort((a, b) => ((parseLsn(a.endLsn) ?? 0n) < (parseLsn(b.endLsn) ?? 0n) ? -1 : 1))
  const earliest = byEnd[0] as BaseBackupInfo

  if ('time' in target) {
    if (!TIME.test(target.time))
      throw new PitrError(
        'pitr_target_unreachable',
        `time "${target.time}" must be an ISO 8601 time with seconds and an explicit offset, e.g. 2027-06-01T12:00:00+02:00`,
      )
    const at = new Date(target.time)
    if (Number.isNaN(at.getTime())) throw unreachable(`time "${target.time}" is not a valid time`)
    if (at.getTime() > input.serverNow.getTime())
      throw unreachable(
        `time ${target.time} is after the last received WAL (the database server's clock says ${input.serverNow.toISOString()})`,
      )
    const base = byEnd.filter((b) => new Date(b.endTime).getTime() <= at.getTime()).at(-1)
    if (!base)
      throw unreachable(
        `time ${target.time} is before the end of the oldest base backup (${earliest.endTime}): the earliest recoverable point`,
      )
    const gap = gapAtTime(input.gaps ?? [], at)
    if (gap) throw inGap(`time ${target.time}`, gap)
    return { base, setting: { name: 'recovery_target_time', value: recoveryTime(at) }, inclusive: true, described: `time ${target.time}` }
  }

  let lsnText: string
  let described: string
  if ('beforeDeploy' in target) {
    if (input.deploy === undefined) throw new PitrError('pitr_unknown_deploy', `no deploy ${target.beforeDeploy} of this env`)
    const lsn = input.deploy.lsn
    if (typeof lsn !== 'string')
      throw unreachable(`deploy ${target.beforeDeploy} has no restore point (it ran no migration, or PITR was off then)`)
    lsnText = lsn
    described = `before deploy ${target.beforeDeploy} (restore point ${String(input.deploy.restorePoint)} at ${lsn})`
  } else {
    lsnText = target.lsn
    described = `LSN ${target.lsn}`
  }
  const lsn = parseLsn(lsnText)
  if (lsn === null) throw unreachable(`"${lsnText}" is not an LSN such as 0/3000060`)
  if (flushed === null || lsn > flushed)
    throw unreachable(`${described} is after the last received WAL (${flushed === null ? 'none yet' : formatLsn(flushed)})`)
  const base = byEnd.filter((b) => (parseLsn(b.endLsn) ?? 0n) <= lsn).at(-1)
  if (!base)
    throw unreachable(`${described} is before the end of the oldest base backup (${earliest.endLsn}): the earliest recoverable point`)
  const gap = gapAtLsn(input.gaps ?? [], lsn)
  if (gap) throw inGap(described, gap)
  return { base, setting: { name: 'recovery_target_lsn', value: formatLsn(lsn) }, inclusive: !('beforeDeploy' in target), described }
}

/** The gap `lsn` falls in (strictly between its ends), if any. */
export function gapAtLsn(gaps: readonly WindowGap[], lsn: bigint): WindowGap | undefined {
  return gaps.find((g) => lsn > (parseLsn(g.from.lsn) ?? 0n) && lsn < (parseLsn(g.to.lsn) ?? 0n))
}

/** The gap the time `at` falls in (strictly between its ends), if any. */
export function gapAtTime(gaps: readonly WindowGap[], at: Date): WindowGap | undefined {
  return gaps.find((g) => at.getTime() > Date.parse(g.from.time) && at.getTime() < Date.parse(g.to.time))
}
