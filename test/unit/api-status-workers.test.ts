// /v1/status for an app of workers only: its live release has no port (null), and the answer says so.
import t from 'tap'
import type { LiveRelease } from '../../agent/deploy/live.js'
import { buildTestAgent, RecordingDeployments } from '../helpers/agent.js'
import { tempDir } from '../helpers/tmp.js'

class WorkersLive extends RecordingDeployments {
  override liveRelease(): LiveRelease {
    return {
      release: 'v1',
      commit: 'c',
      port: null,
      deployId: 'd-v1',
      since: '2026-12-01T00:00:00.000Z',
      services: [{ name: 'worker', kind: 'worker', port: null, container: 'abc' }],
    }
  }
}

t.test('API status: the live release of an app of workers only is shown with no port', async (t) => {
  const agent = await buildTestAgent(await tempDir(t), { deployments: async () => new WorkersLive() })
  t.teardown(() => agent.close())
  const res = await agent.app.inject({ url: '/v1/status', headers: { authorization: `Bearer ${agent.keys.statusToken}` } })
  t.equal(res.statusCode, 200, res.body)
  const live = Object.values(res.json().apps as Record<string, { envs: Record<string, { live: unknown }> }>)[0]?.envs
  t.match(Object.values(live ?? {})[0], { live: { release: 'v1', port: null, deployId: 'd-v1' } })
})
