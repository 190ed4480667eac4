// The health of an env's PITR, decided from one sample (what the slot, the receiver and the WAL dir's disk showed):
// the problems it has now and which of them to announce. Each problem is announced once when it starts (and again
// only after it cleared), so a lasting one is one notification, not one per check.
export type PitrProblemKind = 'slot_lost' | 'receiver_down' | 'disk_full'

export interface PitrProblem {
  kind: PitrProblemKind
  message: string
  hint: string
}

export interface HealthSample {
  /** The agent's clock when sampled. */
  at: Date
  slotName: string
  /** pg_receivewal's process is alive. */
  receiverRunning: boolean
  /** The slot as pg_replication_slots shows it; 'missing' when it has no row, null when the database was not read. */
  slot: { walStatus: string | null; active: boolean } | 'missing' | null
  /** Free bytes on the WAL dir's filesystem (for an unprivileged user), null when not read. */
  walDiskFree: number | null
  walSegmentSize: number
}

export interface HealthState {
  /** Since when the receiver has not been streaming (null while it streams). */
  downSince: Date | null
  /** The problems already announced. */
  announced: ReadonlySet<PitrProblemKind>
}

export const INITIAL_HEALTH: HealthState = { downSince: null, announced: new Set() }

const MB = 1024 * 1024

/**
 * The problems of `sample` and the ones to announce. Streaming means pg_receivewal runs and the slot is active (only
 * the agent's receiver uses it); a receiver not streaming for `downAfterMs` is down. The disk is full when it has
 * room for less than two WAL segments (the receiver writes one at a time, and cannot start the next).
 */
export function assessHealth(
  prev: HealthState,
  sample: HealthSample,
  o: { downAfterMs: number },
): { state: HealthState; problems: PitrProblem[]; announce: PitrProblem[] } {
  const problems: PitrProblem[] = []
  const slot = sample.slot
  const restart = 'restart the agent: it creates the slot again and takes a new base backup'
  if (slot === 'missing')
    problems.push({
      kind: 'slot_lost',
      message: `replication slot ${sample.slotName} does not exist: WAL written since it went is not received`,
      hint: restart,
    })
  else if (slot?.walStatus === 'lost')
    problems.push({
      kind: 'slot_lost',
      message: `replication slot ${sample.slotName} is lost (the server removed WAL the receiver had not received, max_slot_wal_keep_size): points after the loss cannot be recovered`,
      hint: `SELECT pg_drop_replication_slot('${sample.slotName}'), then ${restart}`,
    })
  const streaming = sample.receiverRunning && slot !== null && slot !== 'missing' && slot.active
  const downSince = streaming ? null : (prev.downSince ?? sample.at)
  if (downSince !== null && sample.at.getTime() - downSince.getTime() >= o.downAfterMs)
    problems.push({
      kind: 'receiver_down',
      message: `pg_receivewal has not streamed from slot ${sample.slotName} since ${downSince.toISOString()} (${Math.round((sample.at.getTime() - downSince.getTime()) / 60_000)} min)`,
      hint: "the slot keeps the server's WAL meanwhile and fills its disk; see the agent's log for pg_receivewal's errors",
    })
  if (sample.walDiskFree !== null && sample.walDiskFree < 2 * sample.walSegmentSize)
    problems.push({
      kind: 'disk_full',
      message: `the WAL dir's disk is full (${Math.floor(sample.walDiskFree / MB)} MB free, less than two ${sample.walSegmentSize / MB} MB segments)`,
      hint: 'free space there (or lower backups.retention.days): the receiver cannot write WAL, and the slot keeps it on the server meanwhile',
    })
  const announce = problems.filter((p) => !prev.announced.has(p.kind))
  return { state: { downSince, announced: new Set(problems.map((p) => p.kind)) }, problems, announce }
}
