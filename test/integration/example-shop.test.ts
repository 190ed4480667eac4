// The docs' first deploy of an app of several services: examples/shop/agent.yaml, with the key files made as the
// walkthrough says (`deploy-agent keygen` beside it), passes the real `deploy-agent check-config`, and says what
// the walkthrough says it does: four services, a port pair per web service, the worker's own volumes, the app's
// DATABASE_URL scheme.
import { copyFile, readFile } from 'node:fs/promises'
import { join, resolve } from 'node:path'
import t from 'tap'
import { loadConfig } from '../../agent/config/load.js'
import { servicesOf } from '../../agent/config/services.js'
import { containerSettings, findTarget } from '../../agent/config/targets.js'
import { runCli } from '../helpers/cli.js'
import { configProblems } from '../helpers/config.js'
import { tempDir } from '../helpers/tmp.js'

const repo = resolve(import.meta.dirname, '../..')
const EXAMPLE = 'examples/shop/agent.yaml'

t.test('examples/shop: check-config says OK once keygen has made the key files it names', async (t) => {
  const dir = await tempDir(t)
  const config = join(dir, 'agent.yaml')
  await copyFile(join(repo, EXAMPLE), config)
  const before = await runCli(['check-config', '--config', config])
  t.equal(before.code, 2, 'without the key files it names them')
  t.match(before.stderr + before.stdout, /keys\/ci\.pub/)
  const keygen = await runCli(['keygen', '--name', 'ci', '--out-dir', join(dir, 'keys'), '--status-token'])
  t.equal(keygen.code, 0, keygen.stderr)
  const check = await runCli(['check-config', '--config', config])
  t.equal(check.code, 0, check.stderr)
  t.match(check.stdout, `${config}: OK (1 apps, 1 envs, 1 keys)`)
})

t.test('examples/shop: an api, a frontend, a start-first worker with its own mount and a stop-first scheduler', async (t) => {
  const target = findTarget(await loadConfig(join(repo, EXAMPLE), {}), 'shop', 'production')
  t.same(
    servicesOf(target).map((s) => [s.name, s.kind, s.ports, s.order]),
    [
      ['api', 'web', [18011, 18012], null],
      ['frontend', 'web', [18021, 18022], null],
      ['worker', 'worker', null, 'start-first'],
      ['beat', 'worker', null, 'stop-first'],
    ],
  )
  const mounts = (service?: string) => containerSettings(target, service).volumes?.map((v) => `${v.source}:${v.target}`)
  t.same(mounts('worker'), ['/srv/shop/jobs:/app/jobs'])
  t.same(mounts('api'), ['/srv/shop/uploads:/app/uploads'])
  t.same(mounts(), ['/srv/shop/uploads:/app/uploads'], 'the migration mounts the uploads')
  t.equal(target.envConfig.database?.appUrlScheme, 'postgresql+asyncpg')
})

t.test("examples/shop: the docs' first deploy points at it, and its own snippet of it is a valid config", async (t) => {
  const docs = await readFile(join(repo, 'docs/deploys.md'), 'utf8')
  const section = docs.slice(docs.indexOf('## First deploy in five minutes'), docs.indexOf('## How a deploy runs'))
  t.match(section, EXAMPLE)
  const snippet = /```yaml\n(apps:[^`]*)```/.exec(section)?.[1]
  t.ok(snippet, 'the section shows the app')
  t.same(configProblems(`audience: web-1\n${snippet}`), [])
})
