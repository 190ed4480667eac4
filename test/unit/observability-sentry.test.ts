// Error reporting: the scrubber on its own, then the real Sentry SDK posting to a loopback ingest, where the
// envelope is read back: tags as given, and no planted secret anywhere in the bytes that left the process.
import { readdir, readFile, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import t from 'tap'
import { parseConfig } from '../../agent/config/load.js'
import type { DeployEvent } from '../../agent/deploy/transition.js'
import { AgentError } from '../../agent/errors.js'
import { createLogger } from '../../agent/observability/logger.js'
import { Scrubber, isSensitiveKey } from '../../agent/observability/scrub.js'
import { backupReport, createErrorReporter, deployReport, knownSecrets } from '../../agent/observability/sentry.js'
import type { Deploy } from '../../agent/store/deploys.js'
import { sentryServer } from '../helpers/sentry-server.js'
import { tempDir } from '../helpers/tmp.js'

const logger = createLogger({ level: 'silent' })

t.test('Scrubber: URL passwords, bearer tokens, signatures, key=value secrets and known values go; the rest stays', async (t) => {
  const scrub = new Scrubber(['hunter2-env-value'])
  t.equal(scrub.text('connect postgres://app:s3cr%40t@db:5432/shop failed'), 'connect postgres://app:[redacted]@db:5432/shop failed')
  t.equal(scrub.text('curl sent Bearer abc.def-ghi'), 'curl sent Bearer [redacted]')
  t.equal(scrub.text('Authorization: Bearer abc.def-ghi'), 'Authorization: [redacted] [redacted]')
  t.equal(scrub.text('Deploy-Signature: v1=0123456789abcdef0123456789abcdef'), 'Deploy-Signature: [redacted]')
  t.equal(scrub.text('sent token=abc123 and "password": "pw"'), 'sent token=[redacted] and "password": "[redacted]"')
  t.equal(scrub.text('API_SECRET=xyz'), 'API_SECRET=[redacted]')
  t.equal(scrub.text('env had hunter2-env-value in it'), 'env had [redacted] in it')
  t.equal(
    scrub.text('health check failed: http://127.0.0.1:18001/healthz answered 503'),
    'health check failed: http://127.0.0.1:18001/healthz answered 503',
  )
  t.same(
    scrub.value({
      app: 'shop',
      headers: { authorization: 'x', 'deploy-signature': 'y' },
      nested: [{ DATABASE_PASSWORD: 'p', note: 'postgres://u:p4ss@h/db' }],
      count: 3,
    }),
    {
      app: 'shop',
      headers: { authorization: '[redacted]', 'deploy-signature': '[redacted]' },
      nested: [{ DATABASE_PASSWORD: '[redacted]', note: 'postgres://u:[redacted]@h/db' }],
      count: 3,
    },
  )
  t.ok(isSensitiveKey('statusToken') && isSensitiveKey('X-Api-Key') && !isSensitiveKey('deployId'))
})

t.test('knownSecrets: env file values, database passwords, the status token and HMAC secrets of the config', async (t) => {
  const dir = await tempDir(t)
  await writeFile(join(dir, 'shop.env'), '# comment\nAPI_KEY=env-file-secret-1\nEMPTY=\n')
  await writeFile(join(dir, 'db.password'), 'db-file-password\n')
  await writeFile(join(dir, 'status.token'), 'status-token-value-123\n')
  await writeFile(join(dir, 'ci.secret'), 'hmac-secret-value-0123456789abcdef0123\n')
  const config = parseConfig(
    `
audience: a
statusToken: { file: status.token }
keys: [{ id: ci, alg: hmac-sha256, secretFile: ci.secret }]
apps:
  shop:
    repo: /srv/shop.git
    envs:
      production: { ref: "tag:v*", ports: [18011, 18012], envFile: shop.env, database: { url: "postgres://shop:url-password@127.0.0.1/shop", passwordFile: db.password } }
`,
    {},
    'a',
    dir,
  )
  const secrets = await knownSecrets(config)
  for (const s of [
    'env-file-secret-1',
    'db-file-password',
    'url-password',
    'status-token-value-123',
    'hmac-secret-value-0123456789abcdef0123',
  ])
    t.ok(secrets.includes(s), s)
})

const failedDeploy = (over: Partial<Deploy>): Deploy => ({
  id: 'd_bbbbbbbbbbbb',
  kind: 'deploy',
  app: 'shop',
  env: 'production',
  ref: 'v1.2.0',
  commit: 'c'.repeat(40),
  release: 'v1.2.0',
  reason: null,
  keyId: 'ci',
  state: 'FAILED',
  states: [],
  error: { code: 'health_check_failed', message: 'never healthy' },
  createdAt: '2026-01-01T00:00:00.000Z',
  finishedAt: null,
  details: {},
  ...over,
})

t.test('deployReport and backupReport: only bad ends are reported, tagged for search', async (t) => {
  const report = deployReport({ type: 'state', deploy: failedDeploy({}), was: 'VERIFYING' })
  t.match(report, {
    err: { name: 'DeployFailed', message: /shop\/production deploy d_bbbbbbbbbbbb FAILED \(health_check_failed\): never healthy/ },
  })
  t.same(report?.tags, {
    app: 'shop',
    env: 'production',
    appRelease: 'v1.2.0',
    deployId: 'd_bbbbbbbbbbbb',
    kind: 'deploy',
    state: 'FAILED',
    code: 'health_check_failed',
  })
  t.match(deployReport({ type: 'state', deploy: failedDeploy({ state: 'ROLLED_BACK' }), was: 'ROLLING_BACK' }), {
    err: { name: 'DeployRolledBack' },
  })
  const quiet: DeployEvent[] = [
    { type: 'state', deploy: failedDeploy({ state: 'SUCCEEDED', error: null }), was: 'OBSERVING' },
    { type: 'state', deploy: failedDeploy({ state: 'CANCELLED' }), was: 'QUEUED' },
    { type: 'state', deploy: failedDeploy({ state: 'ROLLING_BACK' }), was: 'OBSERVING' },
    { type: 'probe_failed', deploy: failedDeploy({ state: 'OBSERVING' }), phase: 'OBSERVING' },
  ]
  t.same(quiet.map(deployReport), [null, null, null, null], 'success, cancellation, a rollback under way and a probe are not errors')

  const err = new AgentError('verify_failed', 500, 'backup 1a2b failed verification')
  t.same(backupReport({ target: { app: 'shop', env: 'production' }, kind: 'manual', error: err, id: '1a2b3c4d' }, 'v1.0.0'), {
    err,
    tags: { app: 'shop', env: 'production', appRelease: 'v1.0.0', backupId: '1a2b3c4d', kind: 'manual', code: 'verify_failed' },
  })
  t.equal(backupReport({ target: { app: 'shop', env: 'production' }, kind: 'nightly' }, null), null, 'a good backup is not reported')
})

t.test('createErrorReporter: without a DSN it is a no-op that never loads the SDK', async (t) => {
  const reporter = createErrorReporter(parseConfig('audience: a\n', {}), logger, '0.0.0-test')
  t.equal(reporter.enabled, false)
  reporter.capture(new Error('nowhere to go'), { app: 'a', env: 'b' })
  await reporter.close()
  // Cold start: nothing but sentry.ts may import the SDK, and only with a dynamic import().
  const dir = new URL('../../agent/', import.meta.url).pathname
  const files = (await readdir(dir, { recursive: true })).filter((f) => f.endsWith('.ts'))
  const importers = []
  for (const f of files) if (/(?:from|import)\s*\(?\s*['"]@sentry\//.test(await readFile(join(dir, f), 'utf8'))) importers.push(f)
  t.same(importers, ['observability/sentry.ts'], 'only the reporter loads @sentry/*')
  t.notMatch(await readFile(join(dir, 'observability/sentry.ts'), 'utf8'), /^import [^(]*['"]@sentry\//m, 'and never with a static import')
})

t.test('createErrorReporter: the real SDK sends the event with its tags to the DSN; planted secrets never leave', async (t) => {
  const ingest = await sentryServer(t)
  const dir = await tempDir(t)
  await writeFile(join(dir, 'shop.env'), 'PAYMENT_KEY=planted-env-value-42\n')
  const config = parseConfig(
    `
audience: a
apps:
  shop:
    repo: /srv/shop.git
    envs:
      production: { ref: "tag:v*", ports: [18011, 18012], envFile: shop.env, database: { url: "postgres://shop:planted-db-password@127.0.0.1/shop" } }
sentry: { dsn: "${ingest.dsn}", environment: test-box }
`,
    {},
    'a',
    dir,
  )
  const reporter = createErrorReporter(config, logger, '9.9.9')
  t.equal(reporter.enabled, true)
  const err = new Error(
    'migration printed DATABASE_URL=postgres://shop:planted-db-password@127.0.0.1/shop and PAYMENT_KEY=planted-env-value-42; token=planted-token-7',
  )
  Object.assign(err, { headers: { authorization: 'Bearer planted-bearer-9' } })
  reporter.capture(err, { app: 'shop', env: 'production', appRelease: 'v1.4.0', deployId: 'd_cccccccccccc', code: 'migration_failed' })
  await reporter.close()

  const raw = ingest.bodies.join('\n')
  for (const planted of ['planted-db-password', 'planted-env-value-42', 'planted-token-7', 'planted-bearer-9'])
    t.notMatch(raw, planted, `${planted} was scrubbed`)
  const [event, ...more] = ingest.events()
  t.same(more, [], 'one event')
  t.match(event, {
    tags: { app: 'shop', env: 'production', appRelease: 'v1.4.0', deployId: 'd_cccccccccccc', code: 'migration_failed' },
    environment: 'test-box',
    release: 'deploy-agent@9.9.9',
    fingerprint: ['{{ type }}', 'shop', 'production', 'migration_failed'],
    exception: { values: [{ type: 'Error', value: /^migration printed DATABASE_URL=postgres:\/\/shop:\[redacted\]@127\.0\.0\.1\/shop/ }] },
  })
})
