// Approval is a permission of its own: a key with `allow.approve: true`, not the requesting key, allowed for the env.
import t from 'tap'
import { buildTestAgent, RecordingDeployments, signedInject, type TestAgent } from '../helpers/agent.js'
import { tempDir } from '../helpers/tmp.js'

let agent: TestAgent
t.before(async () => {
  const dir = await tempDir(t)
  agent = await buildTestAgent(dir, {
    extra: {
      // All keys share the test Ed25519 pair: only the id (and so the policy) differs.
      keys: [
        { id: 'ci', alg: 'ed25519', publicKeyFile: 'keys/ci.pub', allow: { envs: ['staging', 'production'], refs: ['v*', 'main'] } },
        { id: 'ci-approver', alg: 'ed25519', publicKeyFile: 'keys/ci.pub', allow: { envs: ['production'], approve: true } },
        { id: 'release-manager', alg: 'ed25519', publicKeyFile: 'keys/ci.pub', allow: { envs: ['production'], approve: true } },
        { id: 'staging-approver', alg: 'ed25519', publicKeyFile: 'keys/ci.pub', allow: { envs: ['staging'], approve: true } },
        { id: 'no-approve', alg: 'ed25519', publicKeyFile: 'keys/ci.pub', allow: { envs: ['production'] } },
      ],
    },
  })
})
t.teardown(() => agent.close())

const code = (body: string) => JSON.parse(body).error.code as string
const held = (keyId: string) => agent.deploys.create({ app: 'web', env: 'production', ref: 'v1.0.0', keyId, state: 'AWAITING_APPROVAL' })
const approve = (id: string, keyId: string) => signedInject(agent, { url: `/v1/deploys/${id}/approve`, body: {}, keyId })

// Each refused approval: who requested the held deploy, who tries to approve it, and the code.
const refusals: Array<[string, string, string, string]> = [
  ['approving needs a key with allow.approve', 'ci', 'no-approve', 'approve_not_allowed'],
  ['the key that requested a deploy cannot approve it', 'ci-approver', 'ci-approver', 'self_approval'],
  ["an approver must be allowed for the deploy's env", 'ci', 'staging-approver', 'approve_not_allowed'],
]
for (const [what, requester, approver, expected] of refusals) {
  t.test(`API: ${what} (403 ${expected})`, async (t) => {
    const deploy = await held(requester)
    const res = await approve(deploy.id, approver)
    t.equal(res.statusCode, 403, res.body)
    t.equal(code(res.body), expected)
    t.same((agent.deployments as RecordingDeployments).calls, [], 'nothing was approved')
  })
}

t.test('API: another key with allow.approve for the env approves, and is named as approvedBy', async (t) => {
  const deploy = await held('ci')
  const res = await approve(deploy.id, 'release-manager')
  t.equal(res.statusCode, 202, res.body)
  t.same((agent.deployments as RecordingDeployments).calls, [{ op: 'approve', input: { id: deploy.id, approvedBy: 'release-manager' } }])
})
