// DeployCoordinator.reviveStoppedLive: the live release found stopped (a dockerd restart) is started again, and
// nothing else is: not while a deploy runs in the env, not a release nginx does not route to.
import t, { type Test } from 'tap'
import { parseConfig } from '../../agent/config/load.js'
import { DeployCoordinator } from '../../agent/deploy/coordinator.js'
import type { Instance, Runtime } from '../../agent/deploy/runtime.js'
import type { DockerEngine } from '../../agent/docker/engine.js'
import { createLogger } from '../../agent/observability/logger.js'
import { DeployStore, type Deploy } from '../../agent/store/deploys.js'
import { tempDir } from '../helpers/tmp.js'

async function setUp(t: Test, routedPort: number) {
  const dir = await tempDir(t)
  const config = parseConfig(`
audience: a
apps:
  web:
    repo: /srv/web.git
    envs:
      production: { ref: "tag:v*", ports: [18011, 18012], proxy: { upstreamFile: ${dir}/up.conf } }
`, {}, 'a', dir)
  const store = await DeployStore.open(dir)
  t.teardown(() => store.close())
  const live: Instance = { id: 'live', release: 'v1', commit: 'c', deployId: 'd_live', port: 18011, image: 'i', running: false, created: new Date() }
  const standby: Instance = { ...live, id: 'standby', release: 'v0', deployId: 'd_old', port: 18012 }
  const revived: string[] = []
  let release: () => void = () => undefined
  const runtime = {
    instances: async () => [live, standby],
    revive: async (i: Instance) => { revived.push(i.id) },
  } as unknown as Runtime
  const coordinator = new DeployCoordinator({
    config,
    store,
    pipeline: {
      run: (d: Deploy) => new Promise<Deploy>((resolve) => { release = () => resolve(d) }),
      recover: async () => false,
    },
    runtime,
    docker: {} as DockerEngine,
    router: () => ({ currentPort: async () => routedPort, switchTo: async () => ({ previousPort: null }) }),
    logger: createLogger({ level: 'silent' }),
  })
  coordinator.setLive({ app: 'web', env: 'production' }, { release: 'v1', commit: 'c', port: 18011, deployId: 'd_live', since: '' })
  return { coordinator, revived, finish: () => release() }
}

t.test('reviveStoppedLive: the stopped live release is started again, the standby is not', async (t) => {
  const { coordinator, revived } = await setUp(t, 18011)
  await coordinator.reviveStoppedLive()
  t.same(revived, ['live'])
})

t.test('reviveStoppedLive: nothing is started while a deploy runs in the env', async (t) => {
  const { coordinator, revived, finish } = await setUp(t, 18011)
  await coordinator.request({ app: 'web', env: 'production', ref: 'v2' })
  await coordinator.reviveStoppedLive()
  t.same(revived, [], 'the running deploy owns the env')
  finish()
  await coordinator.idle()
  await coordinator.reviveStoppedLive()
  t.same(revived, ['live'], 'once it is done, the live release is looked after again')
})

t.test('reviveStoppedLive: a release nginx no longer routes to is left stopped', async (t) => {
  const { coordinator, revived } = await setUp(t, 18012)
  await coordinator.reviveStoppedLive()
  t.same(revived, [])
})
