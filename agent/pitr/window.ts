// The gaps of an env's recoverable window: a pure decision over its base backups and the WAL files on disk. Recovery
// from a base backup replays WAL segment after segment from where the backup ends; the first missing segment ends
// what it can reach. A later base backup starts a new reach. Between the two lies a gap: the WAL there was never
// received (a slot lost to max_slot_wal_keep_size and made again, its old WAL set aside in wal/before-<time>/) or
// was removed by hand. No point inside a gap can be recovered, whatever base backup is used.
import { formatLsn, parseLsn, segmentName, type BaseBackupInfo, type WindowGap } from './target.js'

/** One WAL file as listed (relative to the WAL dir, set-aside ones too) and when it was last written. */
export interface WalFileInfo {
  name: string
  mtime: Date
}

const WAL_FILE = /^([0-9A-F]{8})([0-9A-F]{16})(\.gz)?(\.partial)?$/

/** Segment number → the newest mtime of a file holding it (complete, partial, compressed or not; any dir). */
function segmentsOnDisk(files: readonly WalFileInfo[]): Map<bigint, Date> {
  const segments = new Map<bigint, Date>()
  for (const f of files) {
    const m = WAL_FILE.exec(f.name.slice(f.name.lastIndexOf('/') + 1))
    if (m === null) continue
    const seg = BigInt(`0x${m[2] as string}`)
    const seen = segments.get(seg)
    if (seen === undefined || seen < f.mtime) segments.set(seg, f.mtime)
  }
  return segments
}

/**
 * The gaps between the oldest base backup's end and the newest one's, oldest first. From each base backup's end,
 * the WAL reaches as far as its segments run without a hole; a later base backup that ends past that reach starts
 * after a gap. What follows the newest base backup is not judged here: its WAL is still being received.
 */
export function windowGaps(bases: readonly BaseBackupInfo[], walFiles: readonly WalFileInfo[]): WindowGap[] {
  const byEnd = [...bases].sort((a, b) => ((parseLsn(a.endLsn) ?? 0n) < (parseLsn(b.endLsn) ?? 0n) ? -1 : 1))
  const segments = segmentsOnDisk(walFiles)
  const segmentOf = (b: BaseBackupInfo, lsn: bigint) => BigInt(`0x${segmentName(b.timeline, lsn, b.walSegmentSize).slice(8)}`)
  const gaps: WindowGap[] = []
  // The furthest point reached so far: its LSN, and the segment and file time it ends with.
  let reach: { lsn: bigint; time: Date } | null = null
  for (const base of byEnd) {
    const end = parseLsn(base.endLsn) ?? 0n
    const size = BigInt(base.walSegmentSize)
    if (reach !== null && end > reach.lsn)
      gaps.push({
        from: { lsn: formatLsn(reach.lsn), time: reach.time.toISOString() },
        to: { lsn: base.endLsn, time: base.endTime, baseBackup: base.id },
      })
    // This base backup's own pg_wal reaches its end; the received segments go on from the one holding it.
    let seg = segmentOf(base, end)
    let last: { lsn: bigint; time: Date } = { lsn: end, time: new Date(base.endTime) }
    for (let time = segments.get(seg); time !== undefined; time = segments.get(++seg)) last = { lsn: (seg + 1n) * size, time }
    if (reach === null || last.lsn > reach.lsn) reach = last
  }
  return gaps
}
