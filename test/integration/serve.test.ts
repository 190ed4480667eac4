// startAgent in-process on a real port: the stores open from a state dir left by a power cut, /healthz and the
// status token work over real HTTP, and close() releases the port.
import { mkdir, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { Writable } from 'node:stream'
import t from 'tap'
import { stringify } from 'yaml'
import { startAgent } from '../../agent/cli/serve.js'
import { createLogger } from '../../agent/observability/logger.js'
import { testConfigDocument, writeTestKeys } from '../helpers/agent.js'
import { freePort } from '../helpers/ports.js'
import { tempDir } from '../helpers/tmp.js'

t.test('serve: starts on a state dir with a torn journal line, answers, reloads keys, closes', async (t) => {
  const dir = await tempDir(t)
  const keys = await writeTestKeys(dir)
  const port = await freePort()
  const configPath = join(dir, 'agent.yaml')
  await writeFile(configPath, stringify({ ...testConfigDocument(dir), listen: { host: '127.0.0.1', port } }))
  await mkdir(join(dir, 'state'), { recursive: true })
  await writeFile(join(dir, 'state', 'deploys.jsonl'), '{"v":1,"at":"2026-01-01T00:00:00Z","type":"deploy.sta')

  const lines: string[] = []
  const sink = new Writable({ write: (chunk, _enc, done) => (lines.push(String(chunk)), done()) })
  const agent = await startAgent(configPath, createLogger({ level: 'info' }, sink))
  t.teardown(() => agent.close())
  t.ok(
    lines.some((l) => l.includes('torn line')),
    'the torn line is reported',
  )

  const health = await fetch(`http://127.0.0.1:${port}/healthz`)
  t.equal(health.status, 200)
  const status = await fetch(`http://127.0.0.1:${port}/v1/status`, { headers: { authorization: `Bearer ${keys.statusToken}` } })
  t.equal(status.status, 200)
  t.match(status.headers.get('x-request-id'), /^[0-9a-f-]{36}$/, 'each request gets an id')

  process.emit('SIGHUP')
  for (let i = 0; i < 100 && !lines.some((l) => l.includes('keyring reloaded')); i++) await new Promise((r) => setTimeout(r, 20))
  t.ok(lines.some((l) => l.includes('keyring reloaded')))
  t.notOk(
    lines.some((l) => l.includes(keys.statusToken)),
    'the token is never logged',
  )

  await agent.close()
  const after = await fetch(`http://127.0.0.1:${port}/healthz`).then(
    () => 'open',
    () => 'closed',
  )
  t.equal(after, 'closed')
})
