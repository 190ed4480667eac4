// A real agent (startAgent) behind a real nginx whose reload never happens (`proxy.reload: ["true"]` with the pid
// file set, as when the systemd reload helper is stuck): the switch is not confirmed, the deploy is rolled back,
// /metrics counts it and a notification names the env and the helper to look at.
import { randomBytes } from 'node:crypto'
import { writeFile } from 'node:fs/promises'
import { createServer } from 'node:http'
import type { AddressInfo } from 'node:net'
import { join } from 'node:path'
import t from 'tap'
import { stringify } from 'yaml'
import { signRequest } from '../../agent/auth/canonical.js'
import { startAgent } from '../../agent/cli/serve.js'
import { createLogger } from '../../agent/observability/logger.js'
import type { Deploy } from '../../agent/store/deploys.js'
import { AUDIENCE, ed25519Key, testConfigDocument, writeTestKeys } from '../helpers/agent.js'
import { dockerAvailable, ensureBaseImage, removeAppFromDocker } from '../helpers/docker.js'
import { skipUnless } from '../helpers/engines.js'
import { freePort } from '../helpers/ports.js'
import { envBehindNginx, makeSampleRepo, SAMPLE_TAGS, sampleAppConfig } from '../helpers/sample-app.js'
import { tempDir } from '../helpers/tmp.js'

const app = `unconf-${randomBytes(3).toString('hex')}`
const env = 'production'

t.test(
  'Proxy: an nginx reload that never happens fails the switch, counts in /metrics and is notified',
  { skip: skipUnless(await dockerAvailable(), 'docker') },
  async (t) => {
    await ensureBaseImage()
    const dir = await tempDir(t)
    const repo = await makeSampleRepo(join(dir, 'repo'))
    const keys = await writeTestKeys(dir)
    const hooks: Array<Record<string, unknown>> = []
    const receiver = createServer((req, res) => {
      let body = ''
      req.on('data', (d) => (body += d))
      req.on('end', () => {
        hooks.push(JSON.parse(body) as Record<string, unknown>)
        res.writeHead(200).end()
      })
    })
    await new Promise<void>((r) => receiver.listen(0, '127.0.0.1', r))
    t.teardown(() => new Promise<void>((r) => receiver.close(() => r())))
    const production = await envBehindNginx(t, dir, env)
    const proxy = { ...(production.env.proxy as Record<string, unknown>), reload: ['true'] }
    const port = await freePort()
    const configPath = join(dir, 'agent.yaml')
    const document = testConfigDocument(dir, {
      apps: { [app]: sampleAppConfig(repo.path, { [env]: { ...production.env, proxy } }) },
      notify: [{ kind: 'webhook', url: `http://127.0.0.1:${(receiver.address() as AddressInfo).port}/hook` }],
    })
    await writeFile(configPath, stringify({ ...document, listen: { host: '127.0.0.1', port } }))
    const agent = await startAgent(configPath, createLogger({ level: 'silent' }))
    let closed = false
    t.teardown(async () => {
      if (!closed) await agent.close()
      await removeAppFromDocker(app)
    })
    const url = `http://127.0.0.1:${port}`
    const token = { authorization: `Bearer ${keys.statusToken}` }

    const path = `/v1/apps/${app}/envs/${env}/deploys`
    const body = JSON.stringify({ ref: SAMPLE_TAGS.good })
    const headers = signRequest({ keyId: keys.ed25519.id, key: ed25519Key(keys), audience: AUDIENCE, method: 'POST', path, body })
    const res = await fetch(`${url}${path}`, { method: 'POST', body, headers: { 'content-type': 'application/json', ...headers } })
    t.equal(res.status, 202)
    const { id } = (await res.json()) as { id: string }
    let deploy: Deploy | undefined
    for (const deadline = Date.now() + 120_000; Date.now() < deadline; await new Promise((r) => setTimeout(r, 100))) {
      deploy = (await (await fetch(`${url}/v1/deploys/${id}`, { headers: token })).json()) as Deploy
      if (deploy.finishedAt) break
    }
    t.equal(deploy?.state, 'ROLLED_BACK', JSON.stringify(deploy))
    t.equal(deploy?.error?.code, 'proxy_reload_unconfirmed')
    t.match(deploy?.error?.message, /no new worker process appeared/, 'the cause')
    t.match(deploy?.error?.message, /systemctl status deploy-agent-nginx-reload\.path/, 'where to look')

    const text = await (await fetch(`${url}/metrics`, { headers: token })).text()
    t.match(text, `deploy_agent_proxy_reload_unconfirmed_total{app="${app}",env="${env}"} 1`)

    closed = true
    await agent.close()
    const notice = hooks.find((h) => h.event === 'proxy.reload_unconfirmed')
    t.match(notice, { app, env, id, text: /systemctl reset-failed/ })
    t.ok(
      hooks.some((h) => h.event === 'deploy.rolled_back'),
      'the usual end-of-deploy notice is sent too',
    )
  },
)
