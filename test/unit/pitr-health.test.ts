import t from 'tap'
import { assessHealth, INITIAL_HEALTH, type HealthSample, type HealthState } from '../../agent/pitr/health.js'

const SEG = 16 * 1024 * 1024
const MIN = 60_000
const at = (min: number) => new Date(Date.UTC(2027, 0, 1, 12, 0) + min * MIN)
const sample = (min: number, extra: Partial<HealthSample> = {}): HealthSample => ({
  at: at(min),
  slotName: 'deploy_agent_shop_prod',
  receiverRunning: true,
  slot: { walStatus: 'reserved', active: true },
  walDiskFree: 10 * 1024 * SEG,
  walSegmentSize: SEG,
  ...extra,
})

/** Runs the samples through assessHealth in order: the kinds announced at each, and the last state. */
function run(samples: HealthSample[]): { announced: string[][]; state: HealthState; problems: string[] } {
  let state = INITIAL_HEALTH
  const announced: string[][] = []
  let problems: string[] = []
  for (const s of samples) {
    const r = assessHealth(state, s, { downAfterMs: 5 * MIN })
    state = r.state
    announced.push(r.announce.map((p) => p.kind))
    problems = r.problems.map((p) => p.kind)
  }
  return { announced, state, problems }
}

t.test('PITR health: a healthy env has no problem', async (t) => {
  t.same(run([sample(0), sample(1)]), { announced: [[], []], state: { downSince: null, announced: new Set() }, problems: [] })
})

t.test('PITR health: a receiver down is announced once it stayed down for 5 minutes, once, and again after it came back', async (t) => {
  const down = { receiverRunning: false, slot: { walStatus: 'reserved', active: false } }
  const r = run([
    sample(0),
    sample(1, down),
    sample(3, down),
    sample(6, down),
    sample(9, down),
    sample(10),
    sample(11, down),
    sample(17, down),
  ])
  t.same(r.announced, [[], [], [], ['receiver_down'], [], [], [], ['receiver_down']])
  t.same(r.state.downSince, at(11))
})

t.test('PITR health: a running receiver whose slot is inactive, or a database not read, is not streaming', async (t) => {
  t.same(
    run([sample(0, { slot: { walStatus: 'reserved', active: false } }), sample(5, { slot: { walStatus: 'reserved', active: false } })])
      .announced,
    [[], ['receiver_down']],
  )
  t.same(run([sample(0, { slot: null }), sample(4, { slot: null }), sample(5, { slot: null })]).announced, [[], [], ['receiver_down']])
})

t.test('PITR health: a lost or missing slot is announced at once, once', async (t) => {
  const lost = { slot: { walStatus: 'lost', active: false } }
  t.same(run([sample(0, lost), sample(1, lost), sample(6, lost)]).announced, [['slot_lost'], [], ['receiver_down']])
  const missing = run([sample(0, { slot: 'missing' })])
  t.same(missing.announced, [['slot_lost']])
  const result = assessHealth(INITIAL_HEALTH, sample(0, lost), { downAfterMs: 5 * MIN })
  t.match(result.announce[0], {
    message: /slot deploy_agent_shop_prod is lost/,
    hint: /SELECT pg_drop_replication_slot\('deploy_agent_shop_prod'\), then restart the agent/,
  })
})

t.test('PITR health: a WAL disk with room for less than two segments is full', async (t) => {
  const r = run([sample(0, { walDiskFree: 2 * SEG }), sample(1, { walDiskFree: 2 * SEG - 1 }), sample(2, { walDiskFree: 0 }), sample(3)])
  t.same(r.announced, [[], ['disk_full'], [], []])
  t.same(r.problems, [])
  const full = assessHealth(INITIAL_HEALTH, sample(0, { walDiskFree: 5 * 1024 * 1024 }), { downAfterMs: 5 * MIN })
  t.match(full.problems[0]?.message, /disk is full \(5 MB free, less than two 16 MB segments\)/)
})
