// Secrets in what leaves the agent: env file errors that name the line only, a scrubber that learns new secrets,
// and the outbound paths (deploy records and logs, notifications, backup failures) that go through it.
import { createServer } from 'node:http'
import type { AddressInfo } from 'node:net'
import t from 'tap'
import { parseEnvFile } from '../../agent/config/envfile.js'
import { Notifier } from '../../agent/notify/notifier.js'
import { createLogger } from '../../agent/observability/logger.js'
import { envSecretValues, Scrubber } from '../../agent/observability/scrub.js'
import { createErrorReporter } from '../../agent/observability/sentry.js'
import { parseConfig } from '../../agent/config/load.js'
import { sentryServer } from '../helpers/sentry-server.js'
import { DeployStore } from '../../agent/store/deploys.js'

// A line of a private key's base64 pasted into the env file: no `=`, not a name.
const SECRET = 'MIIEvQIBADANBgkqhkiG9w0+BAQEFAASC/q'

t.test('parseEnvFile: a bad line is named by file and line number, its content is never echoed', async (t) => {
  const text = `# keys\nGOOD=1\n${SECRET}\n`
  t.throws(() => parseEnvFile(text, '/etc/app.env'), { code: 'invalid_request', message: /^\/etc\/app\.env:3: / })
  try {
    parseEnvFile(text, '/etc/app.env')
  } catch (err) {
    t.notOk((err as Error).message.includes(SECRET.slice(0, 8)), (err as Error).message)
  }
  // A bad name before `=` is not echoed either: it may be a value pasted without its name.
  t.throws(() => parseEnvFile(`${SECRET}+/x==\n`, 'app.env'), { message: /^app\.env:1: / })
  t.notOk(String(t.throws(() => parseEnvFile(`${SECRET}+/x==\n`, 'app.env'))).includes(SECRET))
})

t.test('Scrubber: learns new secrets and keeps the ones it knew', async (t) => {
  const scrub = new Scrubber(['first-secret-value'])
  scrub.learn(['second-secret-value', 'x'])
  t.equal(scrub.text('a first-secret-value b second-secret-value c x'), 'a [redacted] b [redacted] c x')
})

t.test('DeployStore: log lines and error messages pass through the scrubber before they are stored', async (t) => {
  const scrub = new Scrubber()
  const store = await DeployStore.open(t.testdir(), { scrub })
  t.teardown(() => store.close())
  const deploy = await store.create({ app: 'shop', env: 'production', ref: 'v1' })
  scrub.learn([SECRET]) // learned after the store was made: the store uses what the scrubber knows now
  await store.appendLog(deploy.id, { event: 'migrate', line: `key ${SECRET}` })
  const failed = await store.transition(deploy.id, 'FAILED', {
    terminal: true,
    error: { code: 'migration_failed', message: `last lines:\nkey ${SECRET}` },
  })
  t.equal(failed.error?.message, 'last lines:\nkey [redacted]')
  t.equal(store.get(deploy.id)?.error?.message, 'last lines:\nkey [redacted]')
  t.equal(await store.readLog(deploy.id), `${JSON.stringify({ event: 'migrate', line: 'key [redacted]' })}\n`)
})

t.test('Notifier: every notice is scrubbed before it is sent', async (t) => {
  const bodies: string[] = []
  const server = createServer((req, res) => {
    let body = ''
    req.on('data', (d) => (body += d))
    req.on('end', () => {
      bodies.push(body)
      res.writeHead(200).end()
    })
  })
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r))
  t.teardown(() => new Promise<void>((r) => server.close(() => r())))
  const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`
  const notifier = new Notifier(
    [
      { kind: 'slack', url: `${url}/slack` },
      { kind: 'webhook', url: `${url}/hook` },
    ],
    createLogger({ level: 'silent' }),
    new Scrubber([SECRET]),
  )
  notifier.send({ event: 'backup.failed', app: 'shop', env: 'production', reason: `pg_dump: password ${SECRET} rejected` })
  await notifier.flush()
  t.equal(bodies.length, 2)
  for (const body of bodies) {
    t.notOk(body.includes(SECRET), body)
    t.match(body, /\[redacted\]/)
  }
})

t.test('Scrubber: a long line of output is scrubbed in linear time (every build line goes through it)', async (t) => {
  const scrub = new Scrubber(['first-secret-value'])
  const started = performance.now()
  for (const ch of ['x', '0', 'a=', 'ab:', ' ']) scrub.text(ch.repeat(64 * 1024))
  // Quadratic rules took about 20 s for one such line; linear ones take milliseconds. The bound is loose on purpose.
  t.ok(performance.now() - started < 2000, `${Math.round(performance.now() - started)} ms`)
  t.equal(scrub.text(`${'x'.repeat(10_000)} API_TOKEN=abc x`), `${'x'.repeat(10_000)} API_TOKEN=[redacted] x`)
})

t.test('createErrorReporter: with the shared scrubber, a secret it learned after the start never reaches Sentry', async (t) => {
  const ingest = await sentryServer(t)
  const scrub = new Scrubber()
  const reporter = createErrorReporter(
    parseConfig(`audience: a\nsentry: { dsn: "${ingest.dsn}" }\n`, {}),
    createLogger({ level: 'silent' }),
    '9.9.9',
    scrub,
  )
  scrub.learn(['rotated-value-after-reload'])
  reporter.capture(new Error('migration printed rotated-value-after-reload'), { app: 'shop', env: 'production' })
  await reporter.close()
  t.equal(ingest.events().length, 1)
  t.notMatch(ingest.bodies.join('\n'), 'rotated-value-after-reload')
})

t.test('envSecretValues: named or random-looking values are secrets; plain settings are not', async (t) => {
  const vars = [
    'NODE_ENV=production',
    'PORT=3000',
    'APP_URL=https://shop.example.com',
    'STRIPE_KEY=abc',
    'DB_PASSWORD=correcthorsebatterystaple',
    'SESSION_BLOB=9f2c4e1a7b3d8e6f0a1b2c3d',
    'OPAQUE=AbCdEfGhIjKlMnOpQr',
    'LONG_WORDS=just-a-long-setting-name',
  ]
  t.same(envSecretValues(vars), ['abc', 'correcthorsebatterystaple', '9f2c4e1a7b3d8e6f0a1b2c3d', 'AbCdEfGhIjKlMnOpQr'])
  // `production` in a notification stays readable, the named password does not.
  const scrub = new Scrubber(envSecretValues(vars))
  t.equal(scrub.text('shop/production: pw correcthorsebatterystaple'), 'shop/production: pw [redacted]')
})
