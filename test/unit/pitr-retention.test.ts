import t from 'tap'
import { formatPitrPlan, planPitrRetention } from '../../agent/pitr/retention.js'
import type { BaseBackupInfo } from '../../agent/pitr/target.js'

const SEG = 16 * 1024 * 1024
/** A base backup whose WAL starts in segment `seg` (hex) and that ended on `day` (UTC). */
const base = (day: string, seg: number): BaseBackupInfo => ({
  id: `${day.replace(/-/g, '')}T020000Z`,
  startLsn: `0/${(seg * SEG + 0x28).toString(16).toUpperCase()}`,
  endLsn: `0/${(seg * SEG + 0x100).toString(16).toUpperCase()}`,
  endTime: `${day}T02:00:05.000Z`,
  timeline: 1,
  walSegmentSize: SEG,
})
const wal = (seg: number, suffix = '.gz') => `00000001000000000000${seg.toString(16).toUpperCase().padStart(4, '0')}${suffix}`

// Weekly base backups (segments 0x10, 0x20 … 0x60) and the WAL from segment 0x0E on; the last one still .partial.
const bases = [
  base('2027-01-01', 0x10),
  base('2027-01-08', 0x20),
  base('2027-01-15', 0x30),
  base('2027-01-22', 0x40),
  base('2027-01-29', 0x50),
  base('2027-02-05', 0x60),
]
const walFiles = [
  ...Array.from({ length: 0x62 - 0x0e }, (_, i) => wal(0x0e + i)),
  wal(0x62, '.gz.partial'),
  '00000001.history',
  '00000002.history',
  'stray-file',
]

t.test('PITR retention: keeps the days window, the base backup that covers its start, and the WAL from it on', async (t) => {
  const plan = planPitrRetention(bases, walFiles, 14)
  t.equal(
    formatPitrPlan(plan),
    [
      'keep   20270205T020000Z  newest, within 14 days',
      'keep   20270129T020000Z  within 14 days',
      'keep   20270122T020000Z  within 14 days',
      'keep   20270115T020000Z  covers the start of the 14 days',
      'delete 20270108T020000Z  expired',
      'delete 20270101T020000Z  expired',
      'wal    delete 34 files before 000000010000000000000030 (the oldest kept base backup starts there)',
    ].join('\n'),
  )
  t.equal(plan.removeWal[0], '00000001000000000000000E.gz')
  t.equal(plan.removeWal.at(-1), '00000001000000000000002F.gz')
  t.notOk(
    plan.removeWal.some((f) => f.endsWith('.history') || f === 'stray-file'),
    'history files and files that are not WAL are never removed',
  )
})

t.test('PITR retention: a window that reaches before every base backup keeps them all, and the WAL they need', async (t) => {
  const plan = planPitrRetention(bases, walFiles, 60)
  t.same(
    plan.bases.filter((b) => !b.keep),
    [],
  )
  t.same(plan.removeWal, [wal(0x0e), wal(0x0f)], 'only the WAL before the oldest base backup goes')
})

t.test('PITR retention: the newest base backup is never removed, however old; none means nothing is pruned', async (t) => {
  const plan = planPitrRetention([base('2020-01-01', 0x10)], walFiles, 1)
  t.same(plan.bases, [{ id: '20200101T020000Z', keep: true, reasons: ['newest', 'within 1 days'] }])
  t.same(plan.keepWalFrom, '000000010000000000000010')
  const none = planPitrRetention([], walFiles, 1)
  t.same(none, { bases: [], removeWal: [], keepWalFrom: null }, 'without a base backup every WAL file may still be needed')
})

t.test('PITR retention: the WAL of a newer timeline before the cut goes too; a .partial before it as well', async (t) => {
  const plan = planPitrRetention(
    [base('2027-01-01', 0x10)],
    ['00000002000000000000000F.gz', '00000001000000000000000A.partial', wal(0x10)],
    30,
  )
  t.same(plan.removeWal, ['00000001000000000000000A.partial', '00000002000000000000000F.gz'])
})

t.test('PITR retention: WAL set aside when a new slot started a new stream is pruned the same way', async (t) => {
  const plan = planPitrRetention(
    [base('2027-01-01', 0x10)],
    ['before-20261201T000000Z/00000001000000000000000F.gz', 'before-20261201T000000Z/000000010000000000000010.gz.partial', wal(0x11)],
    30,
  )
  t.same(plan.removeWal, ['before-20261201T000000Z/00000001000000000000000F.gz'])
})
