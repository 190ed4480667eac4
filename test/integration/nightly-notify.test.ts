// The real agent process with an env whose database is unreachable: at start-up the missed nightly run is caught
// up, the backup fails, the failure reaches a webhook, and the agent keeps serving.
import { writeFile } from 'node:fs/promises'
import { createServer } from 'node:http'
import type { AddressInfo } from 'node:net'
import { join } from 'node:path'
import t from 'tap'
import { stringify } from 'yaml'
import { testConfigDocument, writeTestKeys } from '../helpers/agent.js'
import { startServe } from '../helpers/cli.js'
import { freePorts } from '../helpers/ports.js'
import { tempDir } from '../helpers/tmp.js'

t.test('Nightly backups: a failed catch-up run is notified and the agent keeps serving', async (t) => {
  const dir = await tempDir(t)
  await writeTestKeys(dir)
  const bodies: Array<Record<string, unknown>> = []
  const hook = createServer((req, res) => {
    let body = ''
    req.on('data', (d) => (body += d))
    req.on('end', () => {
      bodies.push(JSON.parse(body))
      res.end('ok')
    })
  })
  await new Promise<void>((r) => hook.listen(0, '127.0.0.1', r))
  t.teardown(() => new Promise<void>((r) => hook.close(() => r())))
  const [port, blue, green, deadDb] = (await freePorts(4)) as [number, number, number, number]
  const configPath = join(dir, 'agent.yaml')
  await writeFile(
    configPath,
    stringify({
      ...testConfigDocument(dir),
      listen: { host: '127.0.0.1', port },
      apps: {
        shop: {
          repo: '/srv/none.git',
          envs: { production: { ref: 'tag:v*', ports: [blue, green], database: { url: `postgres://postgres@127.0.0.1:${deadDb}/shop` } } },
        },
      },
      backups: { dir: 'backups', schedule: '0 3 * * *' },
      notify: [{ kind: 'webhook', url: `http://127.0.0.1:${(hook.address() as AddressInfo).port}/hook` }],
    }),
  )
  const url = `http://127.0.0.1:${port}`
  const agent = await startServe(configPath, url)
  t.teardown(() => agent.stop('SIGKILL'))
  for (let i = 0; i < 200 && bodies.length === 0; i++) await new Promise((r) => setTimeout(r, 100))
  t.match(bodies[0], { event: 'backup.failed', app: 'shop', env: 'production', text: /shop\/production: backup FAILED · reason: / })
  t.equal((await fetch(`${url}/healthz`)).status, 200, 'the agent serves although its database is unreachable')
  t.match(agent.output(), /catching up a missed run/)
  t.equal(await agent.stop('SIGTERM'), 0)
})
