// App and env names from a request are looked up as the config's own keys only: a name that is also a property of
// every object (`constructor`) is an unknown app or env (404), never Object.prototype's (a 500, or worse).
import t from 'tap'
import { findTarget, hasTarget } from '../../agent/config/targets.js'
import { buildTestAgent, signedInject, type TestAgent } from '../helpers/agent.js'
import { tempDir } from '../helpers/tmp.js'

/** Property names every object has; those the URL's name pattern lets through must be 404, the others 400. */
const PROTO_NAMES = ['constructor', '__proto__', 'toString', 'hasOwnProperty', 'valueof', 'isprototypeof']

let agent: TestAgent
t.before(async () => {
  agent = await buildTestAgent(await tempDir(t), {
    extra: { keys: [{ id: 'ci', alg: 'ed25519', publicKeyFile: 'keys/ci.pub' }] },
  })
})
t.teardown(() => agent.close())

const token = () => ({ authorization: `Bearer ${agent.keys.statusToken}` })
const code = (body: string) => JSON.parse(body).error.code as string

t.test('findTarget: a name of an Object.prototype property is an unknown app or env', async (t) => {
  for (const name of PROTO_NAMES) {
    t.throws(() => findTarget(agent.config, name, 'staging'), { code: 'not_found' }, `app ${name}`)
    t.throws(() => findTarget(agent.config, 'web', name), { code: 'not_found' }, `env ${name}`)
    t.equal(hasTarget(agent.config, name, 'staging'), false)
    t.equal(hasTarget(agent.config, 'web', name), false)
  }
  t.equal(hasTarget(agent.config, 'web', 'staging'), true)
})

t.test('API: `constructor` and friends as app or env name answer 404 (or 400), never 500', async (t) => {
  for (const name of PROTO_NAMES) {
    for (const [app, env] of [
      [name, 'staging'],
      ['web', name],
    ] as const) {
      const expected = /^[a-z][a-z0-9-]{0,31}$/.test(name) ? 404 : 400
      const where = `${app}/${env}`
      const signed = [
        [`/v1/apps/${app}/envs/${env}/deploys`, { ref: 'main' }],
        [`/v1/apps/${app}/envs/${env}/rollback`, {}],
        [`/v1/apps/${app}/envs/${env}/backups/prune`, { dryRun: true }],
        ['/v1/backups', { app, env }],
      ] as const
      for (const [url, body] of signed) {
        const res = await signedInject(agent, { url, body })
        t.equal(res.statusCode, expected, `POST ${url} ${JSON.stringify(body)}: ${res.body}`)
        if (expected === 404) t.equal(code(res.body), 'not_found')
      }
      const releases = await agent.app.inject({ url: `/v1/apps/${app}/envs/${env}/releases`, headers: token() })
      t.equal(releases.statusCode, expected, `GET releases of ${where}: ${releases.body}`)
    }
  }
})
