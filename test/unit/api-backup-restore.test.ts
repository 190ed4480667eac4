// Who may restore what: the key must be allowed for the env the restore really goes into, whatever the body names.
import { mkdir, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { gzipSync } from 'node:zlib'
import t from 'tap'
import type { RestoreResult } from '../../agent/backup/restore.js'
import { buildTestAgent, signedInject, type TestAgent } from '../helpers/agent.js'
import { tempDir } from '../helpers/tmp.js'

const LEGACY = 'backup_20240101_000000.sql.gz'
let agent: TestAgent
const calls: Array<{ id: string; target: unknown }> = []
let address = 0

t.before(async () => {
  const dir = await tempDir(t)
  agent = await buildTestAgent(dir, {
    extra: {
      apps: {
        web: {
          repo: '/srv/git/web.git',
          envs: {
            staging: { ref: 'branch:main', ports: [18001, 18002] },
            // The only env with a database: where a legacy file named by neither app nor env goes.
            production: { ref: 'tag:v*.*.*', ports: [18011, 18012], database: { url: 'postgres://agent@127.0.0.1:1/web' } },
          },
        },
      },
      backups: { dir: 'backups' },
    },
  })
  await mkdir(agent.backups.dir, { recursive: true })
  await writeFile(join(agent.backups.dir, LEGACY), gzipSync('SELECT 1;\n'))
  // Nothing is restored here: the service's restore only records what it was asked.
  agent.backups.restore = async (id, target) => {
    calls.push({ id, target })
    return { database: 'web' } as unknown as RestoreResult
  }
})
t.teardown(() => agent.close())

/** `legacy` is the test HMAC key allowed for staging only; `ci` the Ed25519 key allowed for staging and production. */
const restore = (keyId: 'legacy' | 'ci', body: Record<string, unknown>) =>
  signedInject(agent, {
    url: `/v1/backups/${LEGACY}/restore`,
    keyId,
    key: keyId === 'legacy' ? { alg: 'hmac-sha256', secret: agent.keys.hmac.secret } : undefined,
    body: { confirm: LEGACY, ...body },
    remoteAddress: `127.0.9.${++address}`,
  })
const code = (body: string): string => JSON.parse(body).error.code as string

t.test('Backups API: a key limited to staging cannot restore a legacy file into production by naming staging', async (t) => {
  calls.length = 0
  const onlyEnv = await restore('legacy', { env: 'staging' })
  t.equal(onlyEnv.statusCode, 400, onlyEnv.body)
  t.match(JSON.parse(onlyEnv.body).error.message, /both app and env/)
  const onlyApp = await restore('legacy', { app: 'web' })
  t.equal(onlyApp.statusCode, 400, onlyApp.body)
  const neither = await restore('legacy', {})
  t.equal(neither.statusCode, 403, 'without app and env it goes into production, which the key may not touch')
  t.equal(code(neither.body), 'forbidden')
  const production = await restore('legacy', { app: 'web', env: 'production' })
  t.equal(production.statusCode, 403)
  const staging = await restore('legacy', { app: 'web', env: 'staging' })
  t.equal(staging.statusCode, 404, 'staging has no database to restore into')
  t.same(calls, [], 'nothing was restored')
})

t.test('Backups API: a key allowed for production restores there, named or by default', async (t) => {
  calls.length = 0
  t.equal((await restore('ci', {})).statusCode, 200)
  t.equal((await restore('ci', { app: 'web', env: 'production' })).statusCode, 200)
  t.same(calls, [
    { id: LEGACY, target: { app: 'web', env: 'production' } },
    { id: LEGACY, target: { app: 'web', env: 'production' } },
  ])
})
