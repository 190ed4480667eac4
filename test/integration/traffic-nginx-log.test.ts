// What a real nginx writes in the deploy_agent log format, and how the agent classes it: a refused upstream tried
// before a live one ("502, 200"), refused upstreams, then no live upstream left (the group's name).
import { createServer } from 'node:http'
import { readFile, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import t, { type Test } from 'tap'
import { classifyAnswers, parseAccessLine, type Answer } from '../../agent/health/traffic.js'
import { startNginx } from '../helpers/nginx.js'
import { freePorts } from '../helpers/ports.js'
import { tempDir } from '../helpers/tmp.js'

/** nginx in front of `servers` (ports on 127.0.0.1); answers the statuses of `requests` GETs and their lines' answers. */
async function throughNginx(
  t: Test,
  servers: number[],
  requests: number,
): Promise<{ statuses: number[]; answers: Answer[][]; lines: string[] }> {
  const dir = await tempDir(t)
  const [nginxPort] = (await freePorts(1)) as [number]
  const upstreamFile = join(dir, 'upstream.conf')
  await writeFile(upstreamFile, `upstream probe_u { ${servers.map((p) => `server 127.0.0.1:${p};`).join(' ')} }\n`)
  const accessLog = join(dir, 'access.json')
  const nginx = await startNginx(join(dir, 'nginx'), { port: nginxPort, upstreamFile, upstreamName: 'probe_u', accessLog })
  t.teardown(() => nginx.stop())
  const statuses: number[] = []
  for (let i = 0; i < requests; i++) {
    const res = await fetch(`http://127.0.0.1:${nginxPort}/`)
    await res.arrayBuffer()
    statuses.push(res.status)
  }
  await new Promise((r) => setTimeout(r, 200)) // nginx writes the line after the answer
  const lines = (await readFile(accessLog, 'utf8')).trim().split('\n')
  const answers = lines.map((l) => {
    const record = parseAccessLine(l)
    if (!record) throw new Error(`not a deploy_agent line: ${l}`)
    return classifyAnswers(record)
  })
  return { statuses, answers, lines }
}

t.test('Traffic: a refused upstream before a live one is an upstream error of its port only ("502, 200")', async (t) => {
  const [live, refused] = (await freePorts(2)) as [number, number]
  const server = createServer((_req, res) => res.end('ok'))
  await new Promise<void>((resolve) => server.listen(live, '127.0.0.1', resolve))
  t.teardown(() => new Promise((resolve) => server.close(resolve)))
  const { statuses, answers, lines } = await throughNginx(t, [refused, live], 2)
  t.same(statuses, [200, 200])
  t.match(lines[0], /"status":200,.*"upstream_status":"502, 200"/)
  t.same(answers[0], [
    { port: refused, class: 'upstream-error' },
    { port: live, class: '2xx' },
  ])
  t.same(answers[1], [{ port: live, class: '2xx' }], 'then nginx skips the server it marked failed')
})

t.test('Traffic: refused upstreams, then no live upstream left, are upstream errors', async (t) => {
  // A group of one server is never marked failed (nginx ignores max_fails there): the agent's own upstream files
  // give "502" with the address; with two, nginx then has no live upstream and logs the group's name.
  const [refusedA, refusedB] = (await freePorts(2)) as [number, number]
  const { statuses, answers, lines } = await throughNginx(t, [refusedA, refusedB], 2)
  t.same(statuses, [502, 502])
  t.same(answers[0], [
    { port: refusedA, class: 'upstream-error' },
    { port: refusedB, class: 'upstream-error' },
  ])
  t.match(lines[1], /"upstream_addr":"probe_u","upstream_status":"502"/, 'no live upstream: nginx logs the group')
  t.same(answers[1], [{ port: null, class: 'upstream-error' }], 'counted against the release nginx routes to')
})

t.test('Traffic: the only upstream refusing stays an upstream error of its port', async (t) => {
  const [refused] = (await freePorts(1)) as [number]
  const { statuses, answers } = await throughNginx(t, [refused], 2)
  t.same(statuses, [502, 502])
  t.same(answers, [[{ port: refused, class: 'upstream-error' }], [{ port: refused, class: 'upstream-error' }]])
})
