// Crash recovery on a swarm: the agent SIGKILLed in each state of a deploy, started again, converges as on one box,
// from the services' labels and tasks alone — the deploy ends as the rules say, nginx serves the release it should,
// and exactly one colour runs (an interrupted candidate's services are gone). Two-node rig, real agent process.
import { join } from 'node:path'
import t from 'tap'
import { startAgentRig } from '../helpers/agent-rig.js'
import { CRASH_RIG_OPTIONS } from '../helpers/crash-cases.js'
import { ensureBaseImage } from '../helpers/docker.js'
import { skipUnless } from '../helpers/engines.js'
import { makeSwarmRepo, SWARM_TAGS, swarmServices } from '../helpers/sample-swarm.js'
import { canRunSwarmRig, startSwarmRig } from '../helpers/swarm.js'

// The swarm suite runs its files one at a time (`npm run test:swarm`); the rig's lock still guards a run beside it.
t.setTimeout(1_500_000)
const skip = skipUnless(await canRunSwarmRig(), 'the two-node swarm rig (root, dockerd, iproute2, util-linux, docker-registry)')

const CASES = [
  { state: 'BUILDING', ref: SWARM_TAGS.slowBuild, expect: 'FAILED', serves: 'old' },
  { state: 'MIGRATING', ref: SWARM_TAGS.v2, expect: 'FAILED', serves: 'old' },
  // A kill while the idle colour is being made (pushed, created, its tasks starting on both nodes).
  { state: 'STARTING', ref: SWARM_TAGS.v2, expect: 'FAILED', serves: 'old' },
  { state: 'VERIFYING', ref: SWARM_TAGS.v2, expect: 'FAILED', serves: 'old' },
  { state: 'SWITCHING', ref: SWARM_TAGS.v2, expect: 'SUCCEEDED', serves: 'new', afterUpstreamWrite: true },
  { state: 'OBSERVING', ref: SWARM_TAGS.v3, expect: 'SUCCEEDED', serves: 'new' },
] as const

t.test('Swarm recovery: SIGKILL in each deploy state converges after restart', { skip, timeout: 900_000 }, async (t) => {
  await ensureBaseImage()
  const rig = await startSwarmRig(t, { heartbeatSeconds: 1 })
  const agent = await startAgentRig(t, {
    ...CRASH_RIG_OPTIONS,
    repo: (dir) => makeSwarmRepo(join(dir, 'repo'), rig.workerAddr).then((r) => r.path),
    env: { runtime: 'swarm', swarm: { replicas: 2, registry: rig.registry } },
  })
  const first = await agent.waitFinished(await agent.startDeploy(SWARM_TAGS.v1), 180_000)
  t.equal(first.state, 'SUCCEEDED', JSON.stringify(first.error))

  for (const c of CASES)
    await t.test(`SIGKILL during ${c.state}`, async (t) => {
      const before = await agent.served()
      const upstreamBefore = await agent.upstream()
      const id = await agent.startDeploy(c.ref)
      const seen = await agent.waitFor(
        id,
        async (d) =>
          (d.state === c.state && (!('afterUpstreamWrite' in c) || (await agent.upstream()) !== upstreamBefore)) || d.finishedAt !== null,
        180_000,
      )
      t.equal(seen.state, c.state, `caught the deploy in ${c.state}`)
      await agent.restart('SIGKILL')
      const after = await agent.waitFinished(id, 180_000)
      t.equal(after.state, c.expect, JSON.stringify(after.error))
      if (c.expect === 'FAILED') t.equal(after.error?.code, 'interrupted', after.error?.message ?? 'no error')
      t.equal(await agent.served(), c.serves === 'old' ? before : c.ref, `serves the ${c.serves} release`)
      const services = await swarmServices(agent)
      t.equal(services.filter((s) => !s.endsWith(' 0/0')).length, 1, `exactly one colour runs: ${services.join('; ')}`)
      t.ok(
        services.some((s) => s.endsWith(' 2/2')),
        `the live colour runs on both nodes: ${services.join('; ')}`,
      )
      t.equal(await agent.statusLive(), await agent.served(), 'status reports what nginx serves')
    })
})
