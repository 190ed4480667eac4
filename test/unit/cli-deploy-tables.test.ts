// The deploy commands' tables and bodies against a fake agent on loopback: what `deploys` and `releases` print,
// and what `rollback` sends.
import { createServer, type IncomingMessage } from 'node:http'
import { writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import t, { type Test } from 'tap'
import { buildProgram } from '../../agent/cli/program.js'
import { tempDir } from '../helpers/tmp.js'

interface Seen {
  method: string
  url: string
  body: string
}

/** An agent that answers each GET path with a fixed JSON body and records every request. */
async function fakeAgent(t: Test, answers: Record<string, unknown>) {
  const seen: Seen[] = []
  const server = createServer(async (req: IncomingMessage, res) => {
    let body = ''
    for await (const chunk of req) body += String(chunk)
    seen.push({ method: req.method ?? '', url: req.url ?? '', body })
    const answer = req.method === 'POST' ? { id: 'd_000000000009', state: 'QUEUED', release: 'v1.5.0' } : answers[req.url ?? '']
    res.statusCode = answer === undefined ? 404 : req.method === 'POST' ? 202 : 200
    res.setHeader('content-type', 'application/json')
    res.end(JSON.stringify(answer ?? { error: { code: 'not_found', message: 'no' } }))
  })
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  t.teardown(() => new Promise((resolve) => server.close(resolve)))
  const address = server.address() as { port: number }
  return { url: `http://127.0.0.1:${address.port}`, seen }
}

/** Runs a command in this process and returns what it printed. */
async function cli(args: string[]): Promise<string> {
  const log = console.log
  let out = ''
  console.log = (...parts: unknown[]) => void (out += `${parts.join(' ')}\n`)
  process.env.NO_COLOR = '1'
  try {
    await buildProgram().parseAsync(args, { from: 'user' })
  } finally {
    console.log = log
  }
  return out
}

const deploy = (id: string, kind: string, ref: string, state: string) => ({
  id,
  kind,
  app: 'web',
  env: 'production',
  ref,
  state,
  createdAt: '2026-01-01T00:00:00.000Z',
})

t.test('CLI deploys: the table has a KIND column (deploy or rollback)', async (t) => {
  const agent = await fakeAgent(t, {
    '/v1/deploys': {
      deploys: [deploy('d_000000000002', 'rollback', 'v1.0.0', 'SUCCEEDED'), deploy('d_000000000001', 'deploy', 'v1.1.0', 'ROLLED_BACK')],
    },
  })
  process.env.DEPLOY_AGENT_STATUS_TOKEN = 'token'
  t.teardown(() => delete process.env.DEPLOY_AGENT_STATUS_TOKEN)
  const lines = (await cli(['deploys', '--url', agent.url])).trim().split('\n')
  t.match(lines[0], /^ID\s+KIND\s+APP\s+ENV\s+REF\s+STATE\s+CREATED$/)
  t.match(lines[1], /^d_000000000002\s+rollback\s+web\s+production\s+v1\.0\.0\s+SUCCEEDED/)
  t.match(lines[2], /^d_000000000001\s+deploy\s+web/)
})

t.test("CLI releases: the table has an OUTCOME column with each release's last deploy", async (t) => {
  const release = (name: string, live: boolean, outcome: string | null, deployId: string | null) => ({
    release: name,
    commit: 'c'.repeat(40),
    image: `web:production-${name}`,
    createdAt: '2026-01-01T00:00:00.000Z',
    live,
    wasLive: live,
    outcome,
    deployId,
  })
  const agent = await fakeAgent(t, {
    '/v1/apps/web/envs/production/releases': {
      releases: [
        release('v2.0.0', true, 'live', 'd_000000000003'),
        release('v1.5.0', false, 'rolled_back', 'd_000000000002'),
        release('v1.0.0', false, 'served', 'd_000000000001'),
        release('v0.9.0', false, null, null),
      ],
      keepReleases: 5,
    },
  })
  process.env.DEPLOY_AGENT_STATUS_TOKEN = 'token'
  t.teardown(() => delete process.env.DEPLOY_AGENT_STATUS_TOKEN)
  const lines = (await cli(['releases', 'web', 'production', '--url', agent.url])).trim().split('\n')
  t.match(lines[0], /^RELEASE\s+COMMIT\s+CREATED\s+LIVE\s+OUTCOME\s+DEPLOY$/)
  t.match(lines[1], /^v2\.0\.0\s.*\*\s+live\s+d_000000000003$/)
  t.match(lines[2], /^v1\.5\.0\s.*\s+rolled back\s+d_000000000002$/)
  t.match(lines[3], /^v1\.0\.0\s.*\s+served\s+d_000000000001$/)
  t.match(lines[4], /^v0\.9\.0\s.*\s+-\s+-$/)
})

t.test("CLI releases: a swarm env's releases list their tasks by node; a kept colour says it is scaled to 0", async (t) => {
  const release = (name: string, live: boolean, tasks: unknown) => ({
    release: name,
    commit: 'c'.repeat(40),
    image: `web:production-${name}`,
    createdAt: '2026-01-01T00:00:00.000Z',
    live,
    wasLive: true,
    outcome: live ? 'live' : 'served',
    deployId: null,
    tasks,
  })
  const agent = await fakeAgent(t, {
    '/v1/apps/web/envs/production/releases': {
      releases: [
        release('v2.0.0', true, [
          { service: 'web', node: 'a1b2c3d4e5f6g7h8', addr: '10.0.0.1', state: 'running' },
          { service: 'web', node: 'z9y8x7w6v5u4t3s2', addr: '10.0.0.2', state: 'starting' },
        ]),
        release('v1.5.0', false, []),
        release('v1.0.0', false, null),
      ],
      keepReleases: 5,
    },
  })
  process.env.DEPLOY_AGENT_STATUS_TOKEN = 'token'
  t.teardown(() => delete process.env.DEPLOY_AGENT_STATUS_TOKEN)
  const out = await cli(['releases', 'web', 'production', '--url', agent.url])
  t.match(out, /^RELEASE\s+COMMIT\s+CREATED\s+LIVE\s+OUTCOME\s+DEPLOY\n/, 'the table as before')
  const [, after = ''] = out.split(/\n\n/)
  const lines = after.trim().split('\n')
  t.match(lines[0], /^v2\.0\.0:$/)
  t.match(lines[1], /^\s+SERVICE\s+NODE\s+ADDRESS\s+STATE$/)
  t.match(lines[2], /^\s+web\s+a1b2c3d4e5f6\s+10\.0\.0\.1\s+running$/)
  t.match(lines[3], /^\s+web\s+z9y8x7w6v5u4\s+10\.0\.0\.2\s+starting$/)
  t.match(lines[4], /^v1\.5\.0: no task \(its colour is kept, scaled to 0\)$/)
  t.equal(lines.length, 5, 'a release with no colour on the swarm has no tasks to show')
})

t.test('CLI rollback: --force and --reason go in the body', async (t) => {
  const agent = await fakeAgent(t, {})
  const keyFile = join(await tempDir(t), 'key')
  await writeFile(keyFile, 'x'.repeat(40))
  const flags = ['--url', agent.url, '--key-id', 'ops', '--key-file', keyFile]
  await cli(['rollback', 'web', 'production', '--to', 'v1.5.0', '--force', '--reason', 'db fixed by hand', ...flags])
  await cli(['rollback', 'web', 'production', ...flags])
  const posts = agent.seen.filter((s) => s.method === 'POST')
  t.same(
    posts.map((p) => [p.url, JSON.parse(p.body)]),
    [
      ['/v1/apps/web/envs/production/rollback', { to: 'v1.5.0', force: true, reason: 'db fixed by hand' }],
      ['/v1/apps/web/envs/production/rollback', {}],
    ],
  )
})
