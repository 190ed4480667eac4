// The restore point before a migration (PITR): taken through PrepareDeps.restorePoint before MIGRATING, kept in the
// deploy record's details and log; a failure to take it stops the deploy before the migration runs.
import t, { type Test } from 'tap'
import { parseConfig } from '../../agent/config/load.js'
import { findTarget, type Target } from '../../agent/config/targets.js'
import { prepareRelease, type PrepareDeps } from '../../agent/deploy/prepare.js'
import { DeployRun } from '../../agent/deploy/run.js'
import { createLogger } from '../../agent/observability/logger.js'
import { DeployStore } from '../../agent/store/deploys.js'
import { FakeRuntime, fakeSource } from '../helpers/fake-runtime.js'
import { tempDir } from '../helpers/tmp.js'

const COMMIT = 'b'.repeat(40)

async function setUp(t: Test, restorePoint: PrepareDeps['restorePoint']) {
  const dir = await tempDir(t)
  const config = parseConfig(
    `audience: a
apps:
  web:
    repo: /srv/web.git
    migrate: { command: [alembic, upgrade, head] }
    envs:
      production: { ref: "tag:v*", ports: [18201, 18202], database: { url: "postgres://web@127.0.0.1/web", pitr: {} } }
`,
    {},
    'a',
    dir,
  )
  const target = findTarget(config, 'web', 'production')
  const store = await DeployStore.open(dir)
  t.teardown(() => store.close())
  const steps: string[] = []
  const runtime = new FakeRuntime([])
  runtime.keep('v2', COMMIT)
  runtime.runMigration = async () => {
    steps.push('migration')
    return { exitCode: 0, timedOut: false, logTail: [] }
  }
  const deps: PrepareDeps = {
    runtime,
    ...fakeSource(COMMIT),
    restorePoint:
      restorePoint &&
      (async (target: Target, id: string) => {
        steps.push(`restore point ${target.app}/${target.env} ${id}`)
        return restorePoint(target, id)
      }),
  }
  const logger = createLogger({ level: 'silent' })
  const deploy = await store.create({ app: 'web', env: 'production', ref: 'v2', keyId: null })
  const run = new DeployRun({ store, logger }, deploy, logger)
  return { deps, run, target, store, steps, id: deploy.id }
}

t.test('Deploy: a restore point is taken before the migration and kept in the deploy record', async (t) => {
  const s = await setUp(t, async () => ({ restorePoint: 'deploy_x', lsn: '0/3000060' }))
  await prepareRelease(s.deps, s.run, s.target)
  t.same(s.steps, [`restore point web/production ${s.id}`, 'migration'])
  t.match(s.store.get(s.id)?.details, { restorePoint: 'deploy_x', lsn: '0/3000060' })
  const log = (await s.store.readLog(s.id))
    .split('\n')
    .filter(Boolean)
    .map((line) => JSON.parse(line) as Record<string, unknown>)
  t.ok(
    log.some((l) => l.event === 'restorePoint' && l.lsn === '0/3000060'),
    'and in its log',
  )
})

t.test('Deploy: no migration runs when the restore point cannot be taken (or flushed)', async (t) => {
  const s = await setUp(t, async () => {
    throw Object.assign(new Error('the WAL receiver has not flushed past 0/3000060'), { code: 'pitr_not_flushed' })
  })
  await t.rejects(prepareRelease(s.deps, s.run, s.target), { message: /not flushed past/ })
  t.same(s.steps, [`restore point web/production ${s.id}`])
})
