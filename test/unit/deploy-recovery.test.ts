// Recovery plans for each state a crash can interrupt, compared as text (the compose way).
import t from 'tap'
import { describePlan, planRecovery, planUnknownEnv, type Observed } from '../../agent/deploy/plan.js'
import type { Instance } from '../../agent/deploy/runtime.js'
import type { DeployState } from '../../agent/store/deploys.js'
import { deployIn } from '../helpers/deploy-record.js'

const instance = (release: string, port: number, running: boolean): Instance => ({
  id: `c-${release}`,
  release,
  port,
  running,
  commit: 'c',
  deployId: 'd',
  image: 'i',
  created: new Date(0),
})
const deploy = (state: DeployState, kind: 'deploy' | 'rollback' = 'deploy') => deployIn(state, kind, { id: 'd_000000000001' })
const old = instance('v1', 18001, true)
const fresh = instance('v2', 18002, true)
const seen = (o: Partial<Observed>): Observed => ({ routedPort: 18001, candidates: [fresh], previous: old, candidateHealthy: false, ...o })

t.test('planRecovery: before the switch the candidate is removed and the deploy fails', async (t) => {
  for (const state of ['RESOLVING', 'BACKING_UP', 'BUILDING', 'MIGRATING', 'STARTING', 'VERIFYING'] as const) {
    t.equal(
      describePlan(planRecovery(deploy(state), seen({}))),
      'remove v2@18002: candidate of an interrupted deploy\n→ FAILED (interrupted)',
      state,
    )
  }
  t.equal(describePlan(planRecovery(deploy('BUILDING'), seen({ candidates: [] }))), '→ FAILED (interrupted)')
})

t.test('planRecovery: queued deploys run again; held ones keep waiting', async (t) => {
  t.equal(describePlan(planRecovery(deploy('QUEUED'), seen({ candidates: [] }))), 'requeue')
  t.equal(describePlan(planRecovery(deploy('AWAITING_APPROVAL'), seen({ candidates: [] }))), '')
})

t.test('planRecovery: after the switch, a live healthy candidate succeeds', async (t) => {
  for (const state of ['SWITCHING', 'OBSERVING'] as const) {
    t.equal(
      describePlan(planRecovery(deploy(state), seen({ routedPort: 18002, candidateHealthy: true }))),
      'switch v2@18002: make sure nginx runs the upstream file\nretire v1@18001: replaced by the live release\n→ SUCCEEDED',
      state,
    )
  }
  t.equal(
    describePlan(
      planRecovery(deploy('OBSERVING'), seen({ routedPort: 18002, candidateHealthy: true, previous: instance('v1', 18001, false) })),
    ),
    'switch v2@18002: make sure nginx runs the upstream file\n→ SUCCEEDED',
  )
})

t.test('planRecovery: a live but unhealthy candidate is rolled back', async (t) => {
  t.equal(
    describePlan(planRecovery(deploy('OBSERVING'), seen({ routedPort: 18002, previous: instance('v1', 18001, false) }))),
    'revive v1@18001: the new release is unhealthy\nverify v1@18001: it must answer before nginx goes back to it\nswitch v1@18001: back to the previous release\nretire v2@18002: unhealthy release, kept stopped for inspection\n→ ROLLING_BACK → ROLLED_BACK (interrupted)',
  )
  t.equal(
    describePlan(planRecovery(deploy('ROLLING_BACK'), seen({ routedPort: 18002, candidateHealthy: true }))),
    'revive v1@18001: the new release is unhealthy\nverify v1@18001: it must answer before nginx goes back to it\nswitch v1@18001: back to the previous release\nretire v2@18002: unhealthy release, kept stopped for inspection\n→ ROLLED_BACK (interrupted)',
    'a rollback under way is finished even if the candidate looks healthy now',
  )
  t.equal(
    describePlan(planRecovery(deploy('OBSERVING'), seen({ routedPort: 18002, previous: null }))),
    '→ ROLLING_BACK → FAILED (rollback_failed)',
  )
})

t.test('planRecovery: nginx still on the old release: the candidate goes, the old one is made to run', async (t) => {
  t.equal(
    describePlan(planRecovery(deploy('SWITCHING'), seen({}))),
    'switch v1@18001: make sure nginx runs the upstream file\nremove v2@18002: candidate of an interrupted deploy\n→ ROLLING_BACK → ROLLED_BACK (interrupted)',
  )
  t.equal(
    describePlan(planRecovery(deploy('ROLLING_BACK'), seen({ previous: instance('v1', 18001, false) }))),
    'revive v1@18001: nginx routes to it but it is stopped\nverify v1@18001: it must answer before nginx is reloaded for it\nswitch v1@18001: make sure nginx runs the upstream file\nremove v2@18002: candidate of an interrupted deploy\n→ ROLLED_BACK (interrupted)',
  )
})

t.test('planRecovery: a manual rollback interrupted before its switch fails and leaves the standby stopped', async (t) => {
  t.equal(
    describePlan(planRecovery(deploy('SWITCHING', 'rollback'), seen({}))),
    'retire v2@18002: the rollback did not switch to it\n→ FAILED (interrupted)',
  )
  t.equal(
    describePlan(planRecovery(deploy('SWITCHING', 'rollback'), seen({ routedPort: 18002, candidateHealthy: true }))),
    'switch v2@18002: make sure nginx runs the upstream file\nretire v1@18001: replaced by the live release\n→ SUCCEEDED',
  )
})

// Regression: recovery looked at "before the switch" before "is this a rollback", so a manual rollback killed in
// STARTING or VERIFYING removed the kept standby container it had revived (the normal path only stops it).
t.test('planRecovery: a manual rollback in every state', async (t) => {
  const standby = instance('v2', 18002, true)
  const cases: Array<[DeployState, Partial<Observed>, string]> = [
    ['QUEUED', { candidates: [] }, 'requeue'],
    ['STARTING', { candidates: [standby] }, 'retire v2@18002: the rollback did not switch to it\n→ FAILED (interrupted)'],
    ['VERIFYING', { candidates: [standby] }, 'retire v2@18002: the rollback did not switch to it\n→ FAILED (interrupted)'],
    ['VERIFYING', { candidates: [instance('v2', 18002, false)] }, '→ FAILED (interrupted)'],
    ['SWITCHING', { candidates: [standby] }, 'retire v2@18002: the rollback did not switch to it\n→ FAILED (interrupted)'],
    [
      'SWITCHING',
      { candidates: [standby], routedPort: 18002, candidateHealthy: true },
      'switch v2@18002: make sure nginx runs the upstream file\nretire v1@18001: replaced by the live release\n→ SUCCEEDED',
    ],
    [
      'SWITCHING',
      { candidates: [standby], routedPort: 18002, candidateHealthy: false },
      'revive v1@18001: the new release is unhealthy\nverify v1@18001: it must answer before nginx goes back to it\nswitch v1@18001: back to the previous release\nretire v2@18002: unhealthy release, kept stopped for inspection\n→ ROLLING_BACK → ROLLED_BACK (interrupted)',
    ],
  ]
  for (const [state, o, plan] of cases)
    t.equal(describePlan(planRecovery(deploy(state, 'rollback'), seen(o))), plan, `${state} ${JSON.stringify(o.routedPort ?? 18001)}`)
  for (const state of ['STARTING', 'VERIFYING'] as const) {
    t.notMatch(
      describePlan(planRecovery(deploy(state, 'rollback'), seen({ candidates: [standby] }))),
      /remove/,
      `${state}: the standby is never removed`,
    )
  }
})

// A manual rollback is observed like a deploy: killed in OBSERVING (or rolling back again), it is recovered like a
// deploy there, except that the kept release it switched to is stopped as a standby, never removed.
t.test('planRecovery: a manual rollback in its observe window or rolling back again', async (t) => {
  const standby = instance('v2', 18002, true)
  const cases: Array<[DeployState, Partial<Observed>, string]> = [
    [
      'OBSERVING',
      { candidates: [standby], routedPort: 18002, candidateHealthy: true },
      'switch v2@18002: make sure nginx runs the upstream file\nretire v1@18001: replaced by the live release\n→ SUCCEEDED',
    ],
    [
      'OBSERVING',
      { candidates: [standby], routedPort: 18002, candidateHealthy: false, previous: instance('v1', 18001, false) },
      'revive v1@18001: the new release is unhealthy\nverify v1@18001: it must answer before nginx goes back to it\nswitch v1@18001: back to the previous release\nretire v2@18002: unhealthy release, kept stopped for inspection\n→ ROLLING_BACK → ROLLED_BACK (interrupted)',
    ],
    [
      'OBSERVING',
      { candidates: [standby], routedPort: 18002, candidateHealthy: false, previous: null },
      '→ ROLLING_BACK → FAILED (rollback_failed)',
    ],
    // Killed after the switch back: the release live before the rollback serves again; the rollback ends ROLLED_BACK.
    [
      'ROLLING_BACK',
      { candidates: [standby], routedPort: 18001 },
      'switch v1@18001: make sure nginx runs the upstream file\nretire v2@18002: kept release of an interrupted rollback, back to standby\n→ ROLLED_BACK (interrupted)',
    ],
    [
      'ROLLING_BACK',
      { candidates: [standby], routedPort: 18002, candidateHealthy: true },
      'revive v1@18001: the new release is unhealthy\nverify v1@18001: it must answer before nginx goes back to it\nswitch v1@18001: back to the previous release\nretire v2@18002: unhealthy release, kept stopped for inspection\n→ ROLLED_BACK (interrupted)',
    ],
  ]
  for (const [state, o, plan] of cases)
    t.equal(describePlan(planRecovery(deploy(state, 'rollback'), seen(o))), plan, `${state} routed to ${o.routedPort}`)
})

t.test('planUnknownEnv: an env that left the config ends waiting deploys CANCELLED and the rest FAILED', async (t) => {
  for (const state of ['QUEUED', 'AWAITING_APPROVAL'] as const)
    t.equal(describePlan(planUnknownEnv(deploy(state))), '→ CANCELLED (unknown_env)', state)
  for (const state of ['BUILDING', 'SWITCHING', 'OBSERVING', 'ROLLING_BACK'] as const)
    t.equal(describePlan(planUnknownEnv(deploy(state))), '→ FAILED (unknown_env)', state)
})
