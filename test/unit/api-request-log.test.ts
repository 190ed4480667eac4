// Request logging: one line per request, written when the answer is sent. Successful reads (the status and health
// polls of monitors) are logged at debug so the default info level does not pay for them; requests that change
// something and refusals are logged at info.
import { Writable } from 'node:stream'
import t, { type Test } from 'tap'
import { createLogger } from '../../agent/observability/logger.js'
import { buildTestAgent, signedInject, type TestAgent } from '../helpers/agent.js'
import { tempDir } from '../helpers/tmp.js'

interface Line {
  level: number
  msg: string
  reqId?: string
  method?: string
  url?: string
  statusCode?: number
  ms?: number
}

async function agentLogging(t: Test, level: string): Promise<{ agent: TestAgent; lines: Line[] }> {
  const lines: Line[] = []
  const sink = new Writable({ write: (chunk, _enc, done) => (lines.push(JSON.parse(String(chunk)) as Line), done()) })
  const agent = await buildTestAgent(await tempDir(t), { logger: createLogger({ level }, sink) })
  t.teardown(() => agent.close())
  return { agent, lines }
}

const requestLines = (lines: Line[]) => lines.filter((l) => l.msg === 'request')

t.test('request log at info: a successful status read writes nothing, a deploy request and a refusal one line each', async (t) => {
  const { agent, lines } = await agentLogging(t, 'info')
  const token = { authorization: `Bearer ${agent.keys.statusToken}` }
  t.equal((await agent.app.inject({ url: '/v1/status', headers: token })).statusCode, 200)
  t.equal((await agent.app.inject({ url: '/healthz' })).statusCode, 200)
  t.same(requestLines(lines), [], 'successful reads are not logged at info')

  const refused = await agent.app.inject({ url: '/v1/status', headers: { authorization: 'Bearer wrong-token-of-some-length' } })
  t.equal(refused.statusCode, 401)
  const deploy = await signedInject(agent, { url: '/v1/apps/web/envs/staging/deploys', body: { ref: 'main' } })
  t.equal(deploy.statusCode, 202, deploy.body)

  const logged = requestLines(lines)
  t.match(logged, [
    { level: 30, method: 'GET', url: '/v1/status', statusCode: 401, reqId: refused.headers['x-request-id'], ms: Number },
    {
      level: 30,
      method: 'POST',
      url: '/v1/apps/web/envs/staging/deploys',
      statusCode: 202,
      reqId: deploy.headers['x-request-id'],
      ms: Number,
    },
  ])
  t.equal(logged.length, 2, 'one line per request')
  t.notOk(
    lines.some((l) => l.msg === 'incoming request' || l.msg === 'request completed'),
    "fastify's two lines per request are off",
  )
  t.notOk(JSON.stringify(lines).includes('wrong-token-of-some-length'), 'the token is not logged')
})

t.test('request log at debug: successful reads are logged too', async (t) => {
  const { agent, lines } = await agentLogging(t, 'debug')
  const res = await agent.app.inject({ url: '/v1/status', headers: { authorization: `Bearer ${agent.keys.statusToken}` } })
  t.equal(res.statusCode, 200)
  t.match(requestLines(lines), [{ level: 20, method: 'GET', url: '/v1/status', statusCode: 200, reqId: res.headers['x-request-id'] }])
})
