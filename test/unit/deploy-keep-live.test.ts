// DeployCoordinator.keep: the live release found stopped (a dockerd restart) is started again, a release still
// running out of nginx (its retire failed) is stopped, and nothing else happens: not while a deploy runs in the
// env, not to a release nginx does not route to.
import t, { type Test } from 'tap'
import { parseConfig } from '../../agent/config/load.js'
import { DeployCoordinator } from '../../agent/deploy/coordinator.js'
import type { Instance } from '../../agent/deploy/runtime.js'
import { createLogger } from '../../agent/observability/logger.js'
import { DeployStore, type Deploy } from '../../agent/store/deploys.js'
import { FakeRouter, FakeRuntime } from '../helpers/fake-runtime.js'
import { tempDir } from '../helpers/tmp.js'

async function setUp(t: Test, routedPort: number | null, standbyRunning = false) {
  const dir = await tempDir(t)
  const config = parseConfig(
    `
audience: a
apps:
  web:
    repo: /srv/web.git
    envs:
      production: { ref: "tag:v*", ports: [18011, 18012], proxy: { upstreamFile: ${dir}/up.conf } }
      staging: { ref: "tag:v*", ports: [18013, 18014] }
`,
    {},
    'a',
    dir,
  )
  const store = await DeployStore.open(dir)
  t.teardown(() => store.close())
  const router = new FakeRouter(routedPort)
  const live: Instance = {
    id: 'live',
    release: 'v1',
    commit: 'c',
    deployId: 'd_live',
    port: 18011,
    image: 'i',
    running: false,
    created: new Date(),
  }
  const standby: Instance = { ...live, id: 'standby', release: 'v0', deployId: 'd_old', port: 18012, running: standbyRunning }
  const runtime = new FakeRuntime([live, standby])
  let release: () => void = () => undefined
  const coordinator = new DeployCoordinator({
    config,
    store,
    pipeline: () => ({
      run: (d: Deploy) =>
        new Promise<Deploy>((resolve) => {
          release = () => resolve(d)
        }),
      recover: async () => false,
    }),
    runtime,
    router: () => router,
    logger: createLogger({ level: 'silent' }),
  })
  coordinator.setLive({ app: 'web', env: 'production' }, { release: 'v1', commit: 'c', port: 18011, deployId: 'd_live', since: '' })
  return { coordinator, runtime, router, live, finish: () => release() }
}

t.test('DeployCoordinator.keep: the stopped live release is started again, the standby is not', async (t) => {
  const { coordinator, runtime } = await setUp(t, 18011)
  await coordinator.keep()
  t.same(runtime.revived, ['live'])
  t.same(runtime.retired, [])
})

t.test('DeployCoordinator.keep: a release running out of nginx is stopped once the live one runs', async (t) => {
  const { coordinator, runtime, live } = await setUp(t, 18011, true)
  live.running = true
  await coordinator.keep()
  t.same(runtime.retired, ['standby'], 'the replaced release whose retire failed is stopped')
  t.same(runtime.revived, [])
})

t.test('DeployCoordinator.keep: nothing is touched while a deploy runs in the env', async (t) => {
  const { coordinator, runtime, finish } = await setUp(t, 18011, true)
  await coordinator.request({ app: 'web', env: 'production', ref: 'v2' })
  await coordinator.keep()
  t.same(runtime.revived, [], 'the running deploy owns the env')
  t.same(runtime.retired, [])
  finish()
  await coordinator.idle()
  await coordinator.keep()
  t.same(runtime.revived, ['live'], 'once it is done, the live release is looked after again')
})

t.test('DeployCoordinator.keep: a release nginx no longer routes to is left as it is', async (t) => {
  const { coordinator, runtime } = await setUp(t, 18012, true)
  await coordinator.keep()
  t.same(runtime.revived, [])
  t.same(runtime.retired, [])
})

t.test('DeployCoordinator.recover: an env whose upstream file is missing gets one before anything else', async (t) => {
  const { coordinator, router } = await setUp(t, null)
  await coordinator.recover()
  t.same(router.ensured, [18011], 'the env behind nginx, once, with its first port (marked down)')
})
