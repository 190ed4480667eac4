// POST /v1/apps/:app/envs/:env/deploys with an image app: the tag is the ref, `digest` pins it, and both are
// signed with the rest of the body.
import type { AddressInfo } from 'node:net'
import t from 'tap'
import { buildTestAgent, RecordingDeployments, signedInject, type TestAgent } from '../helpers/agent.js'
import { cliEnvFor, runCli } from '../helpers/cli.js'
import { tempDir } from '../helpers/tmp.js'

const DIGEST = `sha256:${'ab'.repeat(32)}`
let agent: TestAgent

t.before(async () => {
  agent = await buildTestAgent(await tempDir(t), {
    extra: {
      apps: {
        web: { repo: '/srv/git/web.git', envs: { production: { ref: 'tag:v*', ports: [18011, 18012] } } },
        api: { image: '127.0.0.1:5000/lifeos/api', envs: { production: { ref: 'tag:v*', ports: [18021, 18022] } } },
      },
    },
  })
})
t.teardown(() => agent.close())

const calls = () => (agent.deployments as RecordingDeployments).calls
const deploy = (app: string, body: object) => signedInject(agent, { url: `/v1/apps/${app}/envs/production/deploys`, body })

t.test('API deploy: an image app takes a tag and a pinned digest, recorded as the pin', async (t) => {
  const res = await deploy('api', { ref: 'v1.2.0', digest: DIGEST })
  t.equal(res.statusCode, 202, res.body)
  t.match(calls().at(-1)?.input, { app: 'api', env: 'production', ref: 'v1.2.0', commit: DIGEST })
})

t.test('API deploy: a digest that is no sha256 digest is refused by the schema', async (t) => {
  for (const digest of ['sha256:abc', `sha512:${'a'.repeat(64)}`, `sha256:${'A'.repeat(64)}`, 'latest']) {
    const res = await deploy('api', { ref: 'v1.2.0', digest })
    t.equal(res.statusCode, 400, digest)
  }
})

t.test('API deploy: a pin of the wrong kind for the app is refused with a clear error', async (t) => {
  const before = calls().length
  const commit = await deploy('api', { ref: 'v1.2.0', commit: 'a'.repeat(40) })
  t.equal(commit.statusCode, 400)
  t.match(JSON.parse(commit.body).error.message, /pin it with digest/)
  const digest = await deploy('web', { ref: 'v1.2.0', digest: DIGEST })
  t.equal(digest.statusCode, 400)
  t.match(JSON.parse(digest.body).error.message, /digest is for image apps/)
  const tag = await deploy('api', { ref: 'v1/2' })
  t.equal(tag.statusCode, 403, 'the env rule tag:v* already refuses it') // v1/2 does not match v* globs across /
  t.equal(calls().length, before, 'none reached the coordinator')
})

t.test('API deploy: the digest is covered by the signature', async (t) => {
  const before = calls().length
  const res = await signedInject(agent, {
    url: '/v1/apps/api/envs/production/deploys',
    body: { ref: 'v1.2.0', digest: `sha256:${'cd'.repeat(32)}` },
    signed: { body: JSON.stringify({ ref: 'v1.2.0', digest: DIGEST }) },
  })
  t.equal(res.statusCode, 401)
  t.equal(calls().length, before)
})

t.test('CLI deploy: --digest sends the pin, signed', async (t) => {
  await agent.app.listen({ host: '127.0.0.1', port: 0 })
  const { port } = agent.app.server.address() as AddressInfo
  const result = await runCli(
    ['deploy', 'api', 'production', 'v1.3.0', '--digest', DIGEST],
    cliEnvFor(`http://127.0.0.1:${port}`, agent.keys.dir),
  )
  t.equal(result.code, 0, result.stderr)
  t.match(calls().at(-1)?.input, { app: 'api', ref: 'v1.3.0', commit: DIGEST })
})
