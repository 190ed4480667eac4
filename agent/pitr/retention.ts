// Which base backups and WAL files of an env's PITR to keep: a pure decision over what is on disk, so a dry run can
// print it and tests compare it as text.
//
// Rules (`days` = backups.retention.days):
// - the anchor is the newest base backup's end, not the clock (as for dumps: a clock that jumps removes nothing);
// - keep the newest base backup, always, and every one that ended within `days` of the anchor;
// - keep the newest one that ended before that: without it the first part of the window could not be recovered
//   (recovery to a point needs a base backup that ended before it), so the window is never shorter than `days`;
// - remove every WAL file of a segment before the oldest kept base backup's start (whatever its timeline, and a
//   stale `.partial` too); history files and anything that is not a WAL file are kept.
import { parseLsn, segmentName, type BaseBackupInfo } from './target.js'

export interface PitrRetentionPlan {
  /** Newest first. */
  bases: { id: string; keep: boolean; reasons: string[] }[]
  /** WAL file names to remove (relative to the WAL dir, set-aside ones too), sorted. */
  removeWal: string[]
  /** The segment the oldest kept base backup starts in; null without any base backup (then nothing is pruned). */
  keepWalFrom: string | null
}

const DAY_MS = 86_400_000
const WAL_FILE = /^[0-9A-F]{8}([0-9A-F]{16})(\.gz)?(\.partial)?$/

export function planPitrRetention(bases: readonly BaseBackupInfo[], walFiles: readonly string[], days: number): PitrRetentionPlan {
  const newestFirst = [...bases].sort((a, b) => Date.parse(b.endTime) - Date.parse(a.endTime) || (a.id < b.id ? 1 : -1))
  const newest = newestFirst[0]
  if (newest === undefined) return { bases: [], removeWal: [], keepWalFrom: null }
  const cut = Date.parse(newest.endTime) - days * DAY_MS
  const coversStart = newestFirst.find((b) => Date.parse(b.endTime) < cut)
  const decisions = newestFirst.map((b) => {
    const reasons: string[] = []
    if (b === newest) reasons.push('newest')
    if (Date.parse(b.endTime) >= cut) reasons.push(`within ${days} days`)
    if (b === coversStart) reasons.push(`covers the start of the ${days} days`)
    return { id: b.id, keep: reasons.length > 0, reasons: reasons.length > 0 ? reasons : ['expired'] }
  })
  const oldestKept = newestFirst.filter((_, i) => decisions[i]?.keep).at(-1) as BaseBackupInfo
  const keepWalFrom = segmentName(oldestKept.timeline, parseLsn(oldestKept.startLsn) ?? 0n, oldestKept.walSegmentSize)
  // The 16 hex digits after the timeline are the segment number: compared as text they order as numbers.
  const removeWal = walFiles
    .filter((name) => {
      const m = WAL_FILE.exec(name.slice(name.lastIndexOf('/') + 1))
      return m !== null && (m[1] as string) < keepWalFrom.slice(8)
    })
    .sort()
  return { bases: decisions, removeWal, keepWalFrom }
}

/** One line per base backup (`keep   <id>  <reasons>` / `delete <id>  expired`), then one for the WAL. */
export function formatPitrPlan(plan: PitrRetentionPlan): string {
  const lines = plan.bases.map((d) => `${d.keep ? 'keep  ' : 'delete'} ${d.id}  ${d.reasons.join(', ')}`)
  lines.push(
    plan.keepWalFrom === null
      ? 'wal    keep all (no base backup yet)'
      : `wal    delete ${plan.removeWal.length} files before ${plan.keepWalFrom} (the oldest kept base backup starts there)`,
  )
  return lines.join('\n')
}
