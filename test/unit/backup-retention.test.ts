import t from 'tap'
import { formatPlan, isoWeek, planRetention, type RetentionCandidate, type RetentionPolicy } from '../../agent/backup/retention.js'

const POLICY: RetentionPolicy = { days: 30, minKeep: 7, weekly: 8, monthly: 6 }
const DAY = 86_400_000
const NO_PINS = new Set<string>()

/** One verified backup per day at `time` (UTC) from `from` to `to` inclusive, id = its ISO date-time. */
function daily(from: string, to: string, time = '03:00:00'): RetentionCandidate[] {
  const out: RetentionCandidate[] = []
  for (let d = Date.parse(`${from}T${time}Z`); d <= Date.parse(`${to}T${time}Z`); d += DAY) {
    out.push(backup(new Date(d).toISOString().slice(0, 19)))
  }
  return out
}

function backup(at: string, extra: Partial<RetentionCandidate> = {}): RetentionCandidate {
  return { id: at, createdAt: new Date(`${at}Z`), verified: true, pinnedBy: null, ...extra }
}

const kept = (plan: ReturnType<typeof planRetention>): string[] => plan.filter((d) => d.keep).map((d) => d.id)
const days = (plan: ReturnType<typeof planRetention>): string[] => kept(plan).map((id) => id.slice(0, 10))
const reasonsOf = (plan: ReturnType<typeof planRetention>, id: string): string[] | undefined => plan.find((d) => d.id === id)?.reasons

t.test('isoWeek: ISO 8601 weeks in UTC across year ends', async (t) => {
  const cases: Array<[string, string]> = [
    ['2027-01-01T12:00:00Z', '2026-W53'], // a Friday; 2026 has 53 weeks
    ['2027-01-04T00:00:00Z', '2027-W01'],
    ['2024-12-30T00:00:00Z', '2025-W01'],
    ['2028-01-01T00:00:00Z', '2027-W52'],
    ['2028-01-02T23:59:59Z', '2027-W52'], // Sunday: still the old week
    ['2028-01-03T00:00:00Z', '2028-W01'],
    ['2028-02-29T03:00:00Z', '2028-W09'],
  ]
  for (const [at, week] of cases) t.equal(isoWeek(new Date(at)), week, at)
})

t.test('planRetention: six months of dailies across a leap day and the DST changes keep the designed set', async (t) => {
  // EU DST ends 2027-10-31 and starts 2028-03-26, US 2027-11-07 and 2028-03-12: UTC days, so nothing special.
  const plan = planRetention(daily('2027-10-01', '2028-03-31'), POLICY, NO_PINS)
  const march = Array.from({ length: 31 }, (_, i) => `2028-03-${String(i + 1).padStart(2, '0')}`)
  t.same(days(plan), [
    ...march.reverse(), // within 30 days of 2028-03-31T03:00, 2028-03-01T03:00 (exactly 30 days) included
    '2028-02-29', // monthly 2028-02: the leap day is February's newest
    '2028-02-27',
    '2028-02-20',
    '2028-02-13', // weekly W08, W07, W06 (W13…W09 are in March)
    '2028-01-31',
    '2027-12-31',
    '2027-11-30',
    '2027-10-31', // monthly: each month's last day
  ])
  t.same(reasonsOf(plan, '2028-03-31T03:00:00'), ['newest 7', 'within 30 days', 'weekly 2028-W13', 'monthly 2028-03'])
  t.same(reasonsOf(plan, '2028-03-01T03:00:00'), ['within 30 days'])
  t.same(reasonsOf(plan, '2028-02-29T03:00:00'), ['monthly 2028-02'])
  t.same(reasonsOf(plan, '2028-02-28T03:00:00'), ['expired'])
  t.equal(plan.length, 183)
  t.equal(plan[0]?.id, '2028-03-31T03:00:00', 'newest first')
})

t.test('planRetention: the days window is inclusive to the millisecond', async (t) => {
  const plan = planRetention(
    [
      backup('2027-06-30T03:00:00'),
      backup('2027-05-31T03:00:00'), // exactly 30 × 24 h before the anchor
      backup('2027-05-31T02:59:59'),
    ],
    { days: 30, minKeep: 1, weekly: 0, monthly: 0 },
    NO_PINS,
  )
  t.same(
    plan.map((d) => [d.id, d.keep]),
    [
      ['2027-06-30T03:00:00', true],
      ['2027-05-31T03:00:00', true],
      ['2027-05-31T02:59:59', false],
    ],
  )
})

t.test('planRetention: month ends and short months: the newest of each month, whatever its length', async (t) => {
  const backups = [
    '2027-01-31T23:59:59',
    '2027-02-01T00:00:00',
    '2027-02-28T23:59:59',
    '2027-03-01T00:00:00',
    '2027-03-31T12:00:00',
    '2027-04-30T23:00:00',
    '2027-04-01T00:00:00',
  ].map((at) => backup(at))
  const plan = planRetention(backups, { days: 1, minKeep: 1, weekly: 0, monthly: 12 }, NO_PINS)
  t.same(kept(plan), ['2027-04-30T23:00:00', '2027-03-31T12:00:00', '2027-02-28T23:59:59', '2027-01-31T23:59:59'])
})

t.test('planRetention: periods are UTC: a Sunday 23:30Z and a Monday 00:30Z on DST weekends fall in different weeks', async (t) => {
  const plan = planRetention(
    [
      backup('2027-11-01T00:30:00'), // Monday, W44
      backup('2027-10-31T23:30:00'), // Sunday of the EU change, W43
      backup('2027-10-31T00:30:00'), // same week, older
      backup('2027-03-28T01:30:00'), // Sunday of the EU spring change, 2027-W12
    ],
    { days: 0, minKeep: 1, weekly: 3, monthly: 0 },
    NO_PINS,
  )
  t.same(
    plan.map((d) => `${d.keep ? '+' : '-'} ${d.id} ${d.reasons.join(',')}`),
    [
      '+ 2027-11-01T00:30:00 newest 1,within 0 days,weekly 2027-W44',
      '+ 2027-10-31T23:30:00 weekly 2027-W43',
      '- 2027-10-31T00:30:00 expired',
      '+ 2027-03-28T01:30:00 weekly 2027-W12',
    ],
  )
})

t.test('planRetention: weeks and months without backups use up no slot', async (t) => {
  // The server was off from March to September: weekly still reaches back past the gap.
  const backups = [...daily('2027-09-01', '2027-09-03'), ...daily('2027-02-01', '2027-02-28')]
  const plan = planRetention(backups, { days: 1, minKeep: 1, weekly: 4, monthly: 2 }, NO_PINS)
  t.same(days(plan), ['2027-09-03', '2027-09-02', '2027-02-28', '2027-02-21', '2027-02-14'])
  t.same(reasonsOf(plan, '2027-02-28T03:00:00'), ['weekly 2027-W08', 'monthly 2027-02'])
})

t.test('planRetention: minKeep keeps the newest when everything else has expired', async (t) => {
  const backups = Array.from({ length: 10 }, (_, i) => backup(new Date(Date.UTC(2020, 0, 1) + i * 10 * DAY).toISOString().slice(0, 19)))
  const plan = planRetention(backups, { days: 1, minKeep: 3, weekly: 0, monthly: 0 }, NO_PINS)
  t.same(kept(plan), ['2020-03-31T00:00:00', '2020-03-21T00:00:00', '2020-03-11T00:00:00'])
  t.same(reasonsOf(plan, '2020-03-11T00:00:00'), ['newest 3'])
})

t.test('planRetention: a backup dated far in the future (clock jump) takes one slot of each rule, not the history', async (t) => {
  const real = daily('2027-01-01', '2027-06-30')
  const plan = planRetention([...real, backup('2099-01-01T03:00:00')], POLICY, NO_PINS)
  t.same(reasonsOf(plan, '2099-01-01T03:00:00'), ['newest 7', 'within 30 days', 'weekly 2099-W01', 'monthly 2099-01'])
  t.same(
    days(plan),
    [
      '2099-01-01',
      '2027-06-30',
      '2027-06-29',
      '2027-06-28',
      '2027-06-27',
      '2027-06-26',
      '2027-06-25', // the 6 other newest
      // 7 weekly slots: W26 (June 30) and W25 (June 27) are among the newest already
      '2027-06-20',
      '2027-06-13',
      '2027-06-06',
      '2027-05-30',
      '2027-05-23',
      // 5 monthly slots: June (June 30, already kept) then each month's last day
      '2027-05-31',
      '2027-04-30',
      '2027-03-31',
      '2027-02-28',
    ]
      .sort()
      .reverse(),
  )
  // Anchored at the clock (2099) instead, only minKeep would survive: the anchor-at-newest rule does better.
})

t.test('planRetention: unverified backups are never deleted and count for nothing', async (t) => {
  const plan = planRetention(
    [
      backup('2027-06-30T03:00:00', { verified: false }), // newest, but not the anchor and not in minKeep
      backup('2027-06-01T03:00:00'),
      backup('2027-05-01T03:00:00'),
      backup('2020-01-01T03:00:00', { verified: false }),
    ],
    { days: 1, minKeep: 1, weekly: 0, monthly: 0 },
    NO_PINS,
  )
  t.same(
    plan.map((d) => [d.id, d.keep, d.reasons]),
    [
      ['2027-06-30T03:00:00', true, ['unverified']],
      ['2027-06-01T03:00:00', true, ['newest 1', 'within 1 days']],
      ['2027-05-01T03:00:00', false, ['expired']],
      ['2020-01-01T03:00:00', true, ['unverified']],
    ],
  )
  t.same(
    planRetention([backup('2027-01-01T00:00:00', { verified: false })], POLICY, NO_PINS).map((d) => d.keep),
    [true],
  )
  t.same(planRetention([], POLICY, NO_PINS), [])
})

t.test('planRetention: a backup pinned by a kept release is kept; a pin of a pruned release protects nothing', async (t) => {
  const plan = planRetention(
    [
      backup('2027-06-30T03:00:00'),
      backup('2027-01-01T03:00:00', { pinnedBy: 'v1.4.0' }),
      backup('2026-12-01T03:00:00', { pinnedBy: 'v1.3.0' }),
    ],
    { days: 1, minKeep: 1, weekly: 0, monthly: 0 },
    new Set(['v1.4.0', 'v1.5.0']),
  )
  t.equal(
    formatPlan(plan),
    [
      'keep   2027-06-30T03:00:00  newest 1, within 1 days',
      'keep   2027-01-01T03:00:00  pinned by v1.4.0',
      'delete 2026-12-01T03:00:00  expired',
    ].join('\n'),
  )
})

t.test('planRetention: the input order does not matter; ties break on id', async (t) => {
  const backups = [
    backup('2027-06-30T03:00:00', { id: 'b' }),
    backup('2027-06-30T03:00:00', { id: 'a' }),
    ...daily('2027-06-01', '2027-06-29'),
  ]
  const shuffled = [...backups].reverse()
  t.same(planRetention(shuffled, POLICY, NO_PINS), planRetention(backups, POLICY, NO_PINS))
  t.same(
    planRetention(backups, POLICY, NO_PINS)
      .slice(0, 2)
      .map((d) => d.id),
    ['b', 'a'],
  )
})
