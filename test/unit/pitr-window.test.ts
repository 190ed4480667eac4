import t from 'tap'
import { PitrError } from '../../agent/pitr/errors.js'
import { planRecovery, type BaseBackupInfo } from '../../agent/pitr/target.js'
import { windowGaps, type WalFileInfo } from '../../agent/pitr/window.js'
import { refused as refusedWith } from '../helpers/refused.js'

const base = (id: string, startLsn: string, endLsn: string, endTime: string): BaseBackupInfo => ({
  id,
  startLsn,
  endLsn,
  endTime,
  timeline: 1,
  walSegmentSize: 16 * 1024 * 1024,
})
/** Segment files 00000001 00000000 000000<hex> for each `n`, written at minute `n` of 2027-01-01. */
const wal = (dir: string, ...segments: number[]): WalFileInfo[] =>
  segments.map((n) => ({
    name: `${dir}000000010000000000000${n.toString(16).toUpperCase().padStart(3, '0')}.gz`,
    mtime: new Date(Date.UTC(2027, 0, 1, 0, n)),
  }))

const b1 = base('20270101T000100Z', '0/1000028', '0/1000138', '2027-01-01T00:01:00.000Z')
// A new slot at minute 20: its stream starts in segment 0x14, its base backup ends in it.
const b2 = base('20270101T002000Z', '0/14000028', '0/14000138', '2027-01-01T00:20:00.000Z')

const refused = (fn: () => unknown) => refusedWith(fn, PitrError)

t.test('PITR window: WAL without a hole from every base backup on has no gap', async (t) => {
  t.same(windowGaps([b1, b2], wal('', ...Array.from({ length: 0x16 }, (_, i) => i + 1))), [])
  t.same(windowGaps([b1], wal('', 1, 2, 3)), [], 'one base backup: what follows it is still being received')
  t.same(windowGaps([], wal('', 1, 2)), [])
})

t.test(
  'PITR window: a lost slot (old WAL set aside, a new stream and base backup) is a gap from the last WAL to the new base',
  async (t) => {
    // The old stream reached segment 5 (set aside when the slot was made again); the new one starts at 0x14.
    const files = [...wal('before-20270101T002000Z/', 1, 2, 3, 4, 5), ...wal('', 0x14, 0x15)]
    t.same(windowGaps([b2, b1], files), [
      {
        from: { lsn: '0/6000000', time: '2027-01-01T00:05:00.000Z' },
        to: { lsn: '0/14000138', time: '2027-01-01T00:20:00.000Z', baseBackup: b2.id },
      },
    ])
    // A segment missing in the middle ends the reach there, wherever the files are.
    t.same(
      windowGaps([b1, b2], [...wal('', 1, 2, 4, 5), ...wal('', 0x14)]).map((g) => g.from.lsn),
      ['0/3000000'],
    )
    // A `.partial` counts as received (recovery reads it up to its last valid record).
    const partial = { name: '000000010000000000000003.gz.partial', mtime: new Date('2027-01-01T00:03:30Z') }
    t.same(
      windowGaps([b1, b2], [...wal('', 1, 2), partial, ...wal('', 0x14)]).map((g) => g.from),
      [{ lsn: '0/4000000', time: '2027-01-01T00:03:30.000Z' }],
    )
  },
)

t.test('PITR window: a target inside a gap is refused up front, one on either side is planned', async (t) => {
  const gaps = windowGaps([b1, b2], [...wal('before-20270101T002000Z/', 1, 2, 3, 4, 5), ...wal('', 0x14, 0x15)])
  const plan = (target: Parameters<typeof planRecovery>[0]['target']) =>
    planRecovery({ target, bases: [b1, b2], flushedLsn: '0/15800000', serverNow: new Date('2027-01-01T00:30:00Z'), gaps })
  t.equal(
    refused(() => plan({ lsn: '0/A000000' })),
    'pitr_target_unreachable: LSN 0/A000000 is in a gap of the recoverable window: no WAL was received from 0/6000000 (2027-01-01T00:05:00.000Z) until base backup 20270101T002000Z ended at 0/14000138 (2027-01-01T00:20:00.000Z), e.g. after a replication slot was lost; recover to a point up to the first or from the second',
  )
  t.match(
    refused(() => plan({ time: '2027-01-01T00:10:00+00:00' })),
    /^pitr_target_unreachable: time 2027-01-01T00:10:00\+00:00 is in a gap/,
  )
  t.match(
    refused(() =>
      planRecovery({
        target: { beforeDeploy: 'd_1' },
        bases: [b1, b2],
        flushedLsn: '0/15800000',
        serverNow: new Date('2027-01-01T00:30:00Z'),
        gaps,
        deploy: { restorePoint: 'deploy_d_1', lsn: '0/10000000' },
      }),
    ),
    /^pitr_target_unreachable: before deploy d_1 .* is in a gap/,
  )
  t.match(plan({ lsn: '0/5000000' }), { base: { id: b1.id } }, 'before the gap: the old base backup')
  t.match(plan({ time: '2027-01-01T00:04:00+00:00' }), { base: { id: b1.id } })
  t.match(plan({ lsn: '0/15000000' }), { base: { id: b2.id } }, 'after it: the new one')
  t.match(plan({ time: '2027-01-01T00:25:00+00:00' }), { base: { id: b2.id } })
})
