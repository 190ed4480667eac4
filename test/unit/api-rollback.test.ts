// A rollback is authorised like a deploy of the release's ref: the route hands the signing key's policy to the
// deploy side, which asks it about the release it really resolved (the default target included).
import t from 'tap'
import type { RollbackInput } from '../../agent/deploy/coordinator.js'
import { buildTestAgent, RecordingDeployments, signedInject } from '../helpers/agent.js'
import { tempDir } from '../helpers/tmp.js'

t.test("API: a rollback checks the release's ref against the signing key's allow.refs", async (t) => {
  const agent = await buildTestAgent(await tempDir(t))
  t.teardown(() => agent.close())
  const res = await signedInject(agent, { url: '/v1/apps/web/envs/staging/rollback', body: {} })
  t.equal(res.statusCode, 202, res.body)
  const [call] = (agent.deployments as RecordingDeployments).calls
  const input = call?.input as RollbackInput
  t.match(input, { app: 'web', env: 'staging', keyId: 'ci' })
  t.type(input.checkRelease, 'function', "the key's policy goes with the request")
  // The test key `ci` may deploy refs v* and main.
  t.doesNotThrow(() => input.checkRelease?.({ release: '0123456789ab', ref: 'main' }), 'a release built from main')
  t.throws(
    () => input.checkRelease?.({ release: '0123456789ab', ref: 'feature/x' }),
    { code: 'forbidden', statusCode: 403 },
    'a release built from another branch',
  )
  t.throws(() => input.checkRelease?.({ release: '0123456789ab', ref: null }), { code: 'forbidden' }, 'a release no record ties to a ref')
})

t.test('API: a rollback body may carry force and a reason, which go to the deploy side', async (t) => {
  const agent = await buildTestAgent(await tempDir(t))
  t.teardown(() => agent.close())
  const res = await signedInject(agent, {
    url: '/v1/apps/web/envs/staging/rollback',
    body: { to: 'v1.0.0', force: true, reason: 'the migration was reverted by hand' },
  })
  t.equal(res.statusCode, 202, res.body)
  const input = (agent.deployments as RecordingDeployments).calls[0]?.input as RollbackInput
  t.match(input, { to: 'v1.0.0', force: true, reason: 'the migration was reverted by hand' })
  const bad = await signedInject(agent, { url: '/v1/apps/web/envs/staging/rollback', body: { force: 'yes' } })
  t.equal(bad.statusCode, 400, 'force is a boolean')
  t.match(bad.body, /force/)
})
