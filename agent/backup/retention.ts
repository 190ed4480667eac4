// Which backups to keep: a pure decision over what is on disk, each kept backup with its reasons, so a dry run can
// print the plan and tests can compare it as text.
//
// Rules (over verified backups only; an unverified backup is never deleted here and counts for nothing):
// - the anchor is the newest verified backup's time, not the clock;
// - keep the `minKeep` newest;
// - keep every backup within `days` of the anchor, inclusive: one exactly `days` × 24 h older is kept;
// - keep the newest backup of each of the `weekly` most recent ISO weeks (UTC) that have backups, and of each of the
//   `monthly` most recent calendar months (UTC) that have backups — periods without backups do not use up a slot,
//   as in restic's --keep-weekly/--keep-monthly, so a server that was off for a while still keeps its history;
// - keep every backup pinned by a release that is still kept.
//
// Clock jumps: a backup dated far in the future (a clock that jumped ahead) becomes the anchor, so the `days` window
// moves away from the real backups — but it takes only one of the minKeep, weekly and monthly slots, and the real
// backups keep the rest; nothing real is deleted merely because of it. Once the clock is right again the future
// backup stays the anchor until it is deleted by hand (it is listed, with its date, for the operator to see).

export interface RetentionPolicy {
  days: number
  minKeep: number
  weekly: number
  monthly: number
}

export interface RetentionCandidate {
  id: string
  createdAt: Date
  verified: boolean
  pinnedBy: string | null
}

export interface RetentionDecision {
  id: string
  keep: boolean
  reasons: string[]
}

const DAY_MS = 86_400_000

/** The ISO 8601 week of `date` in UTC, e.g. `2027-W01` (the week with the year's first Thursday). */
export function isoWeek(date: Date): string {
  const thursday = new Date(Date.UTC(date.getUTCFullYear(), date.getUTCMonth(), date.getUTCDate()))
  thursday.setUTCDate(thursday.getUTCDate() + 4 - (thursday.getUTCDay() || 7))
  const year = thursday.getUTCFullYear()
  const week = Math.ceil(((thursday.getTime() - Date.UTC(year, 0, 1)) / DAY_MS + 1) / 7)
  return `${year}-W${String(week).padStart(2, '0')}`
}

export function utcMonth(date: Date): string {
  return date.toISOString().slice(0, 7)
}

/** The plan for `backups`, newest first. */
export function planRetention(
  backups: readonly RetentionCandidate[],
  policy: RetentionPolicy,
  keptReleasePins: ReadonlySet<string>,
): RetentionDecision[] {
  const newestFirst = [...backups].sort((a, b) => b.createdAt.getTime() - a.createdAt.getTime() || (a.id < b.id ? 1 : a.id > b.id ? -1 : 0))
  const reasons = new Map<RetentionCandidate, string[]>(newestFirst.map((b) => [b, []]))
  const add = (b: RetentionCandidate, reason: string): void => void reasons.get(b)?.push(reason)

  const counted = newestFirst.filter((b) => b.verified)
  const anchor = counted[0]?.createdAt.getTime()
  counted.slice(0, policy.minKeep).forEach((b) => add(b, `newest ${policy.minKeep}`))
  if (anchor !== undefined) {
    const from = anchor - policy.days * DAY_MS
    for (const b of counted) if (b.createdAt.getTime() >= from) add(b, `within ${policy.days} days`)
  }
  keepNewestPerPeriod(counted, policy.weekly, isoWeek, (b, week) => add(b, `weekly ${week}`))
  keepNewestPerPeriod(counted, policy.monthly, utcMonth, (b, month) => add(b, `monthly ${month}`))
  for (const b of newestFirst) {
    if (!b.verified) add(b, 'unverified')
    if (b.pinnedBy !== null && keptReleasePins.has(b.pinnedBy)) add(b, `pinned by ${b.pinnedBy}`)
  }

  return newestFirst.map((b) => {
    const why = reasons.get(b) ?? []
    return why.length > 0 ? { id: b.id, keep: true, reasons: why } : { id: b.id, keep: false, reasons: ['expired'] }
  })
}

function keepNewestPerPeriod(
  newestFirst: readonly RetentionCandidate[],
  slots: number,
  period: (d: Date) => string,
  keep: (b: RetentionCandidate, period: string) => void,
): void {
  const seen = new Set<string>()
  for (const b of newestFirst) {
    const p = period(b.createdAt)
    if (seen.has(p)) continue
    if (seen.size >= slots) return
    seen.add(p)
    keep(b, p)
  }
}

/** One line per backup: `keep   <id>  <reasons>` / `delete <id>  expired`, newest first, for `--dry-run`. */
export function formatPlan(plan: readonly RetentionDecision[]): string {
  return plan.map((d) => `${d.keep ? 'keep  ' : 'delete'} ${d.id}  ${d.reasons.join(', ')}`).join('\n')
}
