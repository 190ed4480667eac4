// Recovery plans for each state a crash can interrupt, compared as text (the compose way).
import t from 'tap'
import { describePlan, planRecovery, type Observed } from '../../agent/deploy/recovery.js'
import type { Instance } from '../../agent/deploy/runtime.js'
import type { Deploy } from '../../agent/store/deploys.js'

const instance = (release: string, port: number, running: boolean): Instance => ({
  id: `c-${release}`, release, port, running, commit: 'c', deployId: 'd', image: 'i', created: new Date(0),
})
const deploy = (state: string, kind: 'deploy' | 'rollback' = 'deploy'): Deploy => ({
  id: 'd_000000000001', kind, app: 'shop', env: 'prod', ref: 'v2', commit: null, release: 'v2', reason: null, keyId: null,
  state, states: [], error: null, createdAt: '', finishedAt: null, details: { candidatePort: 18002, previousPort: 18001 },
})
const old = instance('v1', 18001, true)
const fresh = instance('v2', 18002, true)
const seen = (o: Partial<Observed>): Observed => ({ routedPort: 18001, candidates: [fresh], previous: old, candidateHealthy: false, ...o })

t.test('planRecovery: before the switch the candidate is removed and the deploy fails', async (t) => {
  for (const state of ['RESOLVING', 'BACKING_UP', 'BUILDING', 'MIGRATING', 'STARTING', 'VERIFYING']) {
    t.equal(describePlan(planRecovery(deploy(state), seen({}))), 'remove v2@18002: candidate of an interrupted deploy\n→ FAILED (interrupted)', state)
  }
  t.equal(describePlan(planRecovery(deploy('BUILDING'), seen({ candidates: [] }))), '→ FAILED (interrupted)')
})

t.test('planRecovery: queued deploys run again; held ones keep waiting', async (t) => {
  t.equal(describePlan(planRecovery(deploy('QUEUED'), seen({ candidates: [] }))), 'requeue')
  t.equal(describePlan(planRecovery(deploy('AWAITING_APPROVAL'), seen({ candidates: [] }))), '')
})

t.test('planRecovery: after the switch, a live healthy candidate succeeds', async (t) => {
  for (const state of ['SWITCHING', 'OBSERVING']) {
    t.equal(describePlan(planRecovery(deploy(state), seen({ routedPort: 18002, candidateHealthy: true }))), 'switch v2@18002: make sure nginx runs the upstream file\nretire v1@18001: replaced by the live release\n→ SUCCEEDED', state)
  }
  t.equal(describePlan(planRecovery(deploy('OBSERVING'), seen({ routedPort: 18002, candidateHealthy: true, previous: instance('v1', 18001, false) }))), 'switch v2@18002: make sure nginx runs the upstream file\n→ SUCCEEDED')
})

t.test('planRecovery: a live but unhealthy candidate is rolled back', async (t) => {
  t.equal(
    describePlan(planRecovery(deploy('OBSERVING'), seen({ routedPort: 18002, previous: instance('v1', 18001, false) }))),
    'revive v1@18001: the new release is unhealthy\nswitch v1@18001: back to the previous release\nretire v2@18002: unhealthy release, kept stopped for inspection\n→ ROLLING_BACK → ROLLED_BACK (interrupted)',
  )
  t.equal(
    describePlan(planRecovery(deploy('ROLLING_BACK'), seen({ routedPort: 18002, candidateHealthy: true }))),
    'revive v1@18001: the new release is unhealthy\nswitch v1@18001: back to the previous release\nretire v2@18002: unhealthy release, kept stopped for inspection\n→ ROLLED_BACK (interrupted)',
    'a rollback under way is finished even if the candidate looks healthy now',
  )
  t.equal(describePlan(planRecovery(deploy('OBSERVING'), seen({ routedPort: 18002, previous: null }))), '→ ROLLING_BACK → FAILED (rollback_failed)')
})

t.test('planRecovery: nginx still on the old release: the candidate goes, the old one is made to run', async (t) => {
  t.equal(
    describePlan(planRecovery(deploy('SWITCHING'), seen({}))),
    'switch v1@18001: make sure nginx runs the upstream file\nremove v2@18002: candidate of an interrupted deploy\n→ ROLLING_BACK → ROLLED_BACK (interrupted)',
  )
  t.equal(
    describePlan(planRecovery(deploy('ROLLING_BACK'), seen({ previous: instance('v1', 18001, false) }))),
    'revive v1@18001: nginx routes to it but it is stopped\nswitch v1@18001: make sure nginx runs the upstream file\nremove v2@18002: candidate of an interrupted deploy\n→ ROLLED_BACK (interrupted)',
  )
})

t.test('planRecovery: a manual rollback interrupted before its switch fails and leaves the standby stopped', async (t) => {
  t.equal(describePlan(planRecovery(deploy('SWITCHING', 'rollback'), seen({}))), 'retire v2@18002: the rollback did not switch to it\n→ FAILED (interrupted)')
  t.equal(describePlan(planRecovery(deploy('SWITCHING', 'rollback'), seen({ routedPort: 18002, candidateHealthy: true }))), 'switch v2@18002: make sure nginx runs the upstream file\nretire v1@18001: replaced by the live release\n→ SUCCEEDED')
})
