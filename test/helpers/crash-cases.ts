// One SIGKILL-and-restart case of the crash recovery tests: start a deploy, kill the agent once the deploy is in a
// given state, start a new agent, and check the end state: the deploy's record, what nginx serves, the containers.
import type { Test } from 'tap'
import type { AgentRig, AgentRigOptions } from './agent-rig.js'
import { SAMPLE_TAGS } from './sample-app.js'

/** Phases slow enough that a poll every 20 ms sees each state; SWITCHING lasts at least the drain. */
export const CRASH_RIG_OPTIONS: AgentRigOptions = {
  proxy: { drainMs: 1500 },
  app: {
    migrate: { command: ['sh', '-c', 'sleep 2 && sh /migrate.sh'], timeoutSec: 30 },
    health: { path: '/healthz', intervalMs: 150, timeoutMs: 1000, healthyAfter: 8, deadlineSec: 10 },
    smoke: [],
    observe: { seconds: 6, intervalMs: 200, maxFailures: 2 },
    keepReleases: 4,
  },
}

export interface CrashCase {
  state: string
  ref: string
  expect: 'SUCCEEDED' | 'FAILED' | 'ROLLED_BACK'
  serves: 'old' | 'new'
  /**
   * SWITCHING is caught once the new upstream file is written: a kill before that is a kill before the switch, whose
   * plan (back to the old release) the unit tests of planRecovery cover; catching it here would make the outcome a race.
   */
  afterUpstreamWrite?: true
}

/** A kill in each state a good deploy passes through (after a first release went live). */
export const DEPLOY_STATE_CASES: readonly CrashCase[] = [
  { state: 'BUILDING', ref: SAMPLE_TAGS.slowBuild, expect: 'FAILED', serves: 'old' },
  { state: 'MIGRATING', ref: SAMPLE_TAGS.good2, expect: 'FAILED', serves: 'old' },
  { state: 'VERIFYING', ref: SAMPLE_TAGS.good2, expect: 'FAILED', serves: 'old' },
  { state: 'SWITCHING', ref: SAMPLE_TAGS.good2, expect: 'SUCCEEDED', serves: 'new', afterUpstreamWrite: true },
  { state: 'OBSERVING', ref: SAMPLE_TAGS.good3, expect: 'SUCCEEDED', serves: 'new' },
]

export async function killDuring(t: Test, rig: AgentRig, c: CrashCase): Promise<void> {
  const before = await rig.served()
  const upstreamBefore = await rig.upstream()
  const id = await rig.startDeploy(c.ref)
  const caught = async (d: { state: string }) => d.state === c.state && (!c.afterUpstreamWrite || (await rig.upstream()) !== upstreamBefore)
  const seen = await rig.waitFor(id, async (d) => (await caught(d)) || d.finishedAt !== null)
  t.equal(seen.state, c.state, `caught the deploy in ${c.state}`)
  await rig.restart('SIGKILL')
  const after = await rig.waitFinished(id)
  t.equal(after.state, c.expect, JSON.stringify(after.error))
  if (c.expect === 'SUCCEEDED') t.equal(after.error, null, 'a recovered success carries no error')
  else t.equal(after.error?.code, 'interrupted', `the record says the agent stopped: ${after.error?.message ?? 'no error'}`)
  t.equal(await rig.served(), c.serves === 'old' ? before : c.ref, `serves the ${c.serves} release`)
  const list = await rig.containers()
  const running = list.filter((l) => l.startsWith('running'))
  t.equal(running.length, 1, `exactly one container runs: ${list.join('; ')}`)
  t.notOk(
    list.some((l) => l.includes(' migrate ')),
    'no migration container is left',
  )
  const ofDeploy = list.filter((l) => l.endsWith(` ${id}`))
  if (c.expect === 'FAILED') t.same(ofDeploy, [], 'the interrupted candidate is removed')
  if (c.expect === 'ROLLED_BACK')
    t.notOk(
      ofDeploy.some((l) => l.startsWith('running')),
      'the rolled-back release does not run',
    )
  if (c.expect === 'SUCCEEDED') t.ok(running[0]?.endsWith(` ${id}`), "the deploy's own container is the one running")
  t.equal(await rig.statusLive(), await rig.served(), 'status reports what nginx serves')
}
