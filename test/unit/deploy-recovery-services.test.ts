// Recovery plans for releases of several services (groups with a stop-first worker), compared as text, and run on
// the fake engine to check that two stop-first workers of the env never run at once on any path.
import t from 'tap'
import { executeSteps } from '../../agent/deploy/execute.js'
import { describePlan, describeSteps, planKeep, planRecovery, type Observed } from '../../agent/deploy/plan.js'
import type { Instance, Member } from '../../agent/deploy/runtime.js'
import type { DeployState } from '../../agent/store/deploys.js'
import { FakeRouter, FakeRuntime } from '../helpers/fake-runtime.js'
import { deployIn } from '../helpers/deploy-record.js'

/** A group on the slot of `port`; `beat` (stop-first) runs when `beatRunning`. */
const group = (release: string, port: number, running: boolean, beatRunning = running): Instance => {
  const member = (service: string, p: number | null, order: Member['order'], on: boolean): Member => ({
    id: `c-${release}-${service}`,
    service,
    kind: p === null ? 'worker' : 'web',
    port: p,
    order,
    stopTimeoutSec: 10,
    running: on,
  })
  return {
    id: `c-${release}-api`,
    release,
    port,
    running: running || beatRunning,
    commit: 'c',
    deployId: `d-${release}`,
    image: 'i',
    created: new Date(0),
    members: [
      member('api', port, null, running),
      member('worker', null, 'start-first', running),
      member('beat', null, 'stop-first', beatRunning),
    ],
  }
}
const deploy = (state: DeployState, kind: 'deploy' | 'rollback' = 'deploy') => deployIn(state, kind)

function scene(o: { routed: number; old: Instance; fresh: Instance; healthy?: boolean }) {
  const observed: Observed = { routedPort: o.routed, candidates: [o.fresh], previous: o.old, candidateHealthy: o.healthy ?? false }
  return observed
}

/** Runs the plan on the fake engine and answers the stop-first workers running after each step. */
async function run(plan: ReturnType<typeof planRecovery>, old: Instance, fresh: Instance, routed: number) {
  const runtime = new FakeRuntime([fresh, old])
  const router = new FakeRouter(routed)
  const seen: string[][] = []
  await executeSteps(plan.steps, {
    runtime,
    router,
    verify: async () => undefined,
    done: () => {
      seen.push(runtime.runningSingletons())
    },
  })
  return { seen, runtime, router }
}

t.test('planRecovery services: a healthy live group succeeds; its stop-first worker starts after the old one stops', async (t) => {
  // A crash in SWITCHING after the switch: the old beat was stopped, the new one not started yet.
  const old = group('v1', 18001, true, false)
  const fresh = group('v2', 18002, true, false)
  const plan = planRecovery(deploy('SWITCHING'), scene({ routed: 18002, old, fresh, healthy: true }))
  t.equal(
    describePlan(plan),
    [
      'switch v2@18002: make sure nginx runs the upstream file',
      'retire v1@18001: replaced by the live release',
      'start-singletons v2@18002: the live release runs its workers',
      '→ SUCCEEDED',
    ].join('\n'),
  )
  const { seen } = await run(plan, old, fresh, 18002)
  t.same(seen.at(-1), ['v2/beat'])
  t.ok(
    seen.every((s) => s.length <= 1),
    'never two stop-first workers',
  )
})

t.test(
  'planRecovery services: back to the old group — the new stop-first worker stops first, the old one starts after the switch',
  async (t) => {
    for (const [state, routed, healthy] of [
      ['OBSERVING', 18002, false],
      ['ROLLING_BACK', 18002, true],
      ['SWITCHING', 18001, false],
    ] as const) {
      const old = group('v1', 18001, false)
      const fresh = group('v2', 18002, true, routed === 18002)
      const plan = planRecovery(deploy(state), scene({ routed, old, fresh, healthy }))
      const text = describePlan(plan)
      t.match(text, /^stop-singletons v2@18002: /, state)
      t.match(text, /switch v1@18001: [^\n]*\nstart-singletons v1@18001: the live release runs its workers\n/, state)
      const { seen, router } = await run(plan, old, fresh, routed)
      t.equal(router.routed, 18001, state)
      t.same(seen.at(-1), ['v1/beat'], state)
      t.ok(
        seen.every((s) => s.length <= 1),
        `${state}: never two stop-first workers (${JSON.stringify(seen)})`,
      )
    }
  },
)

t.test('planRecovery services: a rollback that never switched gives the live group its stop-first worker back', async (t) => {
  const old = group('v1', 18001, true, false)
  const fresh = group('v2', 18002, true, false)
  const plan = planRecovery(deploy('SWITCHING', 'rollback'), scene({ routed: 18001, old, fresh }))
  t.equal(
    describePlan(plan),
    [
      'retire v2@18002: the rollback did not switch to it',
      'start-singletons v1@18001: the live release keeps its workers',
      '→ FAILED (interrupted)',
    ].join('\n'),
  )
  const { seen } = await run(plan, old, fresh, 18001)
  t.same(seen.at(-1), ['v1/beat'])
})

t.test('planKeep services: a live group found stopped gets its stop-first worker back too', async (t) => {
  const live = group('v1', 18001, false)
  const steps = planKeep(
    { instances: [live], routedPort: 18001, live: null, idlePort: 18002 },
    {
      release: 'v1',
      commit: 'c',
      port: 18001,
      deployId: 'd-v1',
      since: '',
    },
  )
  t.same(describeSteps(steps), [
    'revive v1@18001: the live release was found stopped (dockerd restarted?)',
    'start-singletons v1@18001: the live release runs its workers',
  ])
})
