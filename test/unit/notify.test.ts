// Notifications against a real local HTTP receiver: bodies per kind, the webhook's HMAC, retries, and a dead
// endpoint that costs nothing but a log line.
import { createHmac } from 'node:crypto'
import { writeFile } from 'node:fs/promises'
import { createServer, type IncomingMessage } from 'node:http'
import type { AddressInfo } from 'node:net'
import { join } from 'node:path'
import t, { type Test } from 'tap'
import { describeNotice, Notifier, reloadUnconfirmedNotice } from '../../agent/notify/notifier.js'
import type { Deploy } from '../../agent/store/deploys.js'
import { createLogger } from '../../agent/observability/logger.js'
import { freePort } from '../helpers/ports.js'
import { tempDir } from '../helpers/tmp.js'

interface Received {
  path: string
  headers: IncomingMessage['headers']
  body: string
}

async function receiver(t: Test, failFirst = 0) {
  const received: Received[] = []
  let failures = failFirst
  const server = createServer((req, res) => {
    let body = ''
    req.on('data', (d) => (body += d))
    req.on('end', () => {
      if (failures-- > 0) return void res.writeHead(503).end()
      received.push({ path: req.url ?? '', headers: req.headers, body })
      res.writeHead(200).end('ok')
    })
  })
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r))
  t.teardown(() => new Promise<void>((r) => server.close(() => r())))
  return { url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`, received }
}

const notice = {
  event: 'deploy.rolled_back' as const,
  app: 'shop',
  env: 'production',
  release: 'v1.3.0',
  commit: 'a'.repeat(40),
  durationMs: 41_000,
  reason: '3 of 6 probes failed',
}

t.test('Notifier: Slack, Discord and a signed generic webhook each get their body', async (t) => {
  const dir = await tempDir(t)
  await writeFile(join(dir, 'hook.secret'), 'shared-secret-for-the-webhook\n')
  const r = await receiver(t)
  const notifier = new Notifier(
    [
      { kind: 'slack', url: `${r.url}/slack` },
      { kind: 'discord', url: `${r.url}/discord` },
      { kind: 'webhook', url: `${r.url}/hook`, secretFile: join(dir, 'hook.secret') },
    ],
    createLogger({ level: 'silent' }),
  )
  notifier.send(notice)
  await notifier.flush()
  const by = (path: string) => r.received.find((x) => x.path === path) as Received
  const line = describeNotice(notice)
  t.equal(line, 'shop/production: deploy ROLLED BACK · release v1.3.0 (aaaaaaaaaaaa) · 41 s · reason: 3 of 6 probes failed')
  t.same(JSON.parse(by('/slack').body), { text: line })
  t.same(JSON.parse(by('/discord').body), { content: line })
  const hook = by('/hook')
  t.match(JSON.parse(hook.body), {
    event: 'deploy.rolled_back',
    app: 'shop',
    env: 'production',
    release: 'v1.3.0',
    reason: '3 of 6 probes failed',
  })
  const expected = `sha256=${createHmac('sha256', 'shared-secret-for-the-webhook').update(hook.body).digest('hex')}`
  t.equal(hook.headers['x-deploy-agent-signature'], expected, 'the body is HMAC-signed')
})

t.test('Notifier: a 5xx is retried; a dead endpoint is given up without blocking the caller', async (t) => {
  const r = await receiver(t, 2)
  const lines: string[] = []
  const logger = createLogger({ level: 'warn' }, { write: (line: string) => void lines.push(line) })
  const dead = `http://127.0.0.1:${await freePort()}/nobody`
  const notifier = new Notifier(
    [
      { kind: 'slack', url: `${r.url}/slack` },
      { kind: 'webhook', url: dead },
    ],
    logger,
  )
  const started = Date.now()
  notifier.send(notice)
  t.ok(Date.now() - started < 50, 'send returns at once')
  await notifier.flush()
  t.equal(r.received.length, 1, 'delivered on the third attempt')
  t.equal(lines.length, 1, 'the dead endpoint is one warning')
  t.notMatch(lines[0], /nobody/, 'the URL (a secret for Slack) is not logged')
})

t.test('Notifier: a deploy ended by an unconfirmed nginx reload also sends proxy.reload_unconfirmed with the fix', async (t) => {
  const deploy = {
    id: 'd_aaaaaaaaaaaa',
    kind: 'deploy',
    app: 'shop',
    env: 'production',
    release: 'v1.3.0',
    commit: 'a'.repeat(40),
    state: 'ROLLED_BACK',
    error: { code: 'proxy_reload_unconfirmed', message: 'nginx reload not confirmed within 5000 ms: no new worker process appeared' },
  } as unknown as Deploy
  const found = reloadUnconfirmedNotice({ type: 'state', deploy, was: 'ROLLING_BACK' })
  t.match(found, { event: 'proxy.reload_unconfirmed', app: 'shop', env: 'production', id: 'd_aaaaaaaaaaaa' })
  const line = describeNotice(found as NonNullable<typeof found>)
  t.match(line, /^shop\/production: nginx reload NOT CONFIRMED/)
  t.match(line, 'systemctl status deploy-agent-nginx-reload.path')
  t.match(line, 'systemctl reset-failed')
  t.equal(
    reloadUnconfirmedNotice({ type: 'state', deploy: { ...deploy, state: 'SWITCHING' }, was: 'STARTING' }),
    null,
    'not before the end',
  )
  const other = { ...deploy, error: { code: 'observe_failed', message: '3 probes failed' } }
  t.equal(reloadUnconfirmedNotice({ type: 'state', deploy: other, was: 'ROLLING_BACK' }), null, 'not for other failures')
})
