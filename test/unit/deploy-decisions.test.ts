// Pure decisions of the deploy side: release names and the prune plan.
import t from 'tap'
import { releaseName } from '../../agent/deploy/pipeline.js'
import { planPrune } from '../../agent/deploy/prune.js'
import { imageTag, type Instance } from '../../agent/deploy/runtime.js'

t.test('Release names and image tags', async (t) => {
  t.equal(releaseName('tag', 'v1.2.3', 'a'.repeat(40)), 'v1.2.3')
  t.equal(releaseName('tag', 'release/2026-11', 'a'.repeat(40)), 'release-2026-11', 'a slash cannot be in an image tag')
  t.equal(releaseName('branch', 'main', '0123456789abcdef0123456789abcdef01234567'), '0123456789ab')
  t.equal(imageTag('shop', 'production', 'v1.2.3'), 'shop:production-v1.2.3')
})

const at = (minutes: number) => new Date(Date.UTC(2026, 10, 1, 0, minutes))
const instance = (id: string, release: string, port: number, running: boolean, minutes: number): Instance => ({
  id,
  release,
  port,
  running,
  commit: 'c',
  deployId: 'd',
  image: `shop:p-${release}`,
  created: at(minutes),
})
const image = (release: string, minutes: number) => ({ release, commit: 'c', ref: `shop:p-${release}`, created: at(minutes) })

t.test('planPrune: keeps live, standby and the newest others up to keepReleases', async (t) => {
  const plan = planPrune({
    livePort: 18002,
    keepReleases: 3,
    instances: [instance('c5', 'v5', 18002, true, 50), instance('c4', 'v4', 18001, false, 40), instance('c1', 'v1', 18001, false, 10)],
    images: [image('v1', 10), image('v2', 20), image('v3', 30), image('v4', 40), image('v5', 50)],
  })
  t.same(
    plan.containers.map((c) => c.id),
    ['c1'],
    'an older stopped container goes',
  )
  t.same(
    plan.images.map((i) => i.ref),
    ['shop:p-v2', 'shop:p-v1'],
    'v5 live, v4 standby, v3 newest other',
  )
})

t.test('planPrune: an old standby is still kept as the rollback target', async (t) => {
  const plan = planPrune({
    livePort: 18001,
    keepReleases: 2,
    instances: [instance('c9', 'v9', 18001, true, 90), instance('c1', 'v1', 18002, false, 10)],
    images: [image('v1', 10), image('v7', 70), image('v8', 80), image('v9', 90)],
  })
  t.same(plan.containers, [])
  t.same(
    plan.images.map((i) => i.ref),
    ['shop:p-v8', 'shop:p-v7'],
  )
})
