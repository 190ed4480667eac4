import t from 'tap'
import { PitrError } from '../../agent/pitr/errors.js'
import { formatLsn, parseLsn, planRecovery, recoveryTime, segmentName, type BaseBackupInfo } from '../../agent/pitr/target.js'
import { refused as refusedWith } from '../helpers/refused.js'

const base = (id: string, endLsn: string, endTime: string): BaseBackupInfo => ({
  id,
  startLsn: endLsn,
  endLsn,
  endTime,
  timeline: 1,
  walSegmentSize: 16 * 1024 * 1024,
})
const bases = [base('b2', '0/9000100', '2027-01-02T00:00:00.000Z'), base('b1', '0/3000100', '2027-01-01T00:00:00.000Z')]
const now = new Date('2027-01-03T00:00:00Z')

const refused = (fn: () => unknown) => refusedWith(fn, PitrError)

t.test('PITR target: LSN text and WAL segment names', async (t) => {
  t.equal(parseLsn('1/5C2EB3B0'), 0x15c2eb3b0n)
  t.equal(formatLsn(0x15c2eb3b0n), '1/5C2EB3B0')
  t.equal(parseLsn('1/5C2EB3B0/'), null)
  t.equal(segmentName(1, 0x15c2eb3b0n, 16 * 1024 * 1024), '00000001000000010000005C')
  t.equal(recoveryTime(new Date('2027-01-01T10:00:00+02:00')), '2027-01-01 08:00:00.000+00:00')
})

t.test('PITR target: the newest base backup that ends before the target, and the one recovery setting', async (t) => {
  const before = planRecovery({
    target: { beforeDeploy: 'd_1' },
    bases,
    flushedLsn: '0/A000000',
    serverNow: now,
    deploy: { restorePoint: 'deploy_d_1', lsn: '0/9000200' },
  })
  t.same([before.base.id, before.setting, before.inclusive], ['b2', { name: 'recovery_target_lsn', value: '0/9000200' }, false])
  const lsn = planRecovery({ target: { lsn: '0/5000000' }, bases, flushedLsn: '0/A000000', serverNow: now })
  t.same([lsn.base.id, lsn.setting.value, lsn.inclusive], ['b1', '0/5000000', true])
  const time = planRecovery({ target: { time: '2027-01-01T12:00:00+02:00' }, bases, flushedLsn: '0/A000000', serverNow: now })
  t.same([time.base.id, time.setting], ['b1', { name: 'recovery_target_time', value: '2027-01-01 10:00:00.000+00:00' }])
})

t.test('PITR target: unreachable targets are refused with a reason', async (t) => {
  const plan = (target: Parameters<typeof planRecovery>[0]['target'], deploy?: { lsn?: string }) =>
    refused(() => planRecovery({ target, bases, flushedLsn: '0/A000000', serverNow: now, deploy }))
  t.match(plan({ lsn: '0/B000000' }), /^pitr_target_unreachable: LSN 0\/B000000 is after the last received WAL \(0\/A000000\)/)
  t.match(plan({ lsn: '0/2000000' }), /^pitr_target_unreachable: .*before the end of the oldest base backup \(0\/3000100\)/)
  t.match(plan({ lsn: 'yesterday' }), /^pitr_target_unreachable: "yesterday" is not an LSN/)
  t.match(plan({ time: '2027-01-04T00:00:00Z' }), /^pitr_target_unreachable: time .* is after the last received WAL/)
  t.match(plan({ time: '2026-12-31T00:00:00Z' }), /^pitr_target_unreachable: .*before the end of the oldest base backup/)
  t.match(plan({ time: '2027-01-01T12:00:00' }), /^pitr_target_unreachable: .*explicit offset/)
  t.match(plan({ beforeDeploy: 'd_x' }), /^pitr_unknown_deploy: /)
  t.match(plan({ beforeDeploy: 'd_x' }, {}), /^pitr_target_unreachable: deploy d_x has no restore point/)
  t.match(
    refused(() => planRecovery({ target: { lsn: '0/1' }, bases: [], flushedLsn: null, serverNow: now })),
    /no base backup yet/,
  )
})
