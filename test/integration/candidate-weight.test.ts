// A candidate runs at a build's CPU weight until it serves, on the real engine: while it is checked it must not take
// the CPU from the live release (under host load the live one would stop answering in time); once switched in it
// gets a serving release's weight.
import t from 'tap'
import { startAgentRig } from '../helpers/agent-rig.js'
import { SAMPLE_TAGS } from '../helpers/sample-app.js'

t.test('Candidate CPU weight: 128 while it is checked, 1024 once it serves', async (t) => {
  const rig = await startAgentRig(t)
  const weightOf = async (deployId: string) =>
    (await rig.docker(['ps', '--all', '--quiet', '--filter', `label=deploy-agent.deploy=${deployId}`]))
      .split('\n')
      .filter(Boolean)
      .map(async (id) => Number((await rig.docker(['inspect', '--format', '{{.HostConfig.CpuShares}}', id])).trim()))

  const live = await rig.waitFinished(await rig.startDeploy(SAMPLE_TAGS.good))
  t.equal(live.state, 'SUCCEEDED', JSON.stringify(live.error))
  t.same(await Promise.all(await weightOf(live.id)), [1024], 'the live release has the weight of a serving one')

  const candidate = await rig.startDeploy(SAMPLE_TAGS.neverHealthy)
  await rig.waitFor(candidate, (d) => d.state === 'VERIFYING')
  t.same(await Promise.all(await weightOf(candidate)), [128], 'the candidate, while it is checked, a build’s')
  t.same(await Promise.all(await weightOf(live.id)), [1024], 'the live release keeps its weight')
  const failed = await rig.waitFinished(candidate)
  t.equal(failed.state, 'FAILED')
})
