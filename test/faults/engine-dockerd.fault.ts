// Fault: dockerd dies (SIGKILL) and comes back, on an engine of the test's own, once in the middle of a build and
// once in the middle of OBSERVING. Without live-restore, a restarted dockerd stops the containers that survived it
// in their shims and starts again those whose restart policy says so; the agent creates web containers with
// `unless-stopped`, so the live release comes back, and a retired one (stopped on purpose) stays stopped.
// A build cut short fails the deploy (build_failed); an engine that does not answer during OBSERVING is left to the
// HTTP probes. Either way the env must end serving one release, the one the deploy record and the status name.
import t from 'tap'
import { startAgentRig } from '../helpers/agent-rig.js'
import { skipUnless } from '../helpers/engines.js'
import { canRunPrivateDockerd, startPrivateDockerd } from '../helpers/private-docker.js'
import { SAMPLE_TAGS } from '../helpers/sample-app.js'

t.setTimeout(20 * 60_000)

t.test(
  'Engine fault: dockerd killed and restarted mid-build and mid-OBSERVING',
  { skip: skipUnless(await canRunPrivateDockerd(), 'a private dockerd (root)') },
  async (t) => {
    const engine = await startPrivateDockerd(t)
    const rig = await startAgentRig(t, {
      dockerHost: engine.host,
      app: {
        smoke: [],
        health: { path: '/healthz', intervalMs: 150, timeoutMs: 1000, healthyAfter: 3, deadlineSec: 20 },
        observe: { seconds: 20, intervalMs: 250, maxFailures: 3 },
      },
    })
    const first = await rig.waitFinished(await rig.startDeploy(SAMPLE_TAGS.good))
    t.equal(first.state, 'SUCCEEDED', JSON.stringify(first.error))
    const settle = async (expected: string) => {
      // After a restart dockerd brings back the `unless-stopped` container; nginx fails until it listens again.
      const deadline = Date.now() + 60_000
      while ((await rig.served().catch(() => '')) !== expected && Date.now() < deadline) await new Promise((r) => setTimeout(r, 250))
      return rig.served()
    }

    await t.test('killed mid-build: the deploy fails, the old release comes back with dockerd', async (t) => {
      const id = await rig.startDeploy(SAMPLE_TAGS.slowBuild)
      // Killed once the engine runs the build's slow step, not while the agent only inspects images.
      const log = async () =>
        (await fetch(`${rig.url}/v1/deploys/${id}/log`, { headers: { authorization: `Bearer ${rig.keys.statusToken}` } })).text()
      await rig.waitFor(id, async (d) => d.finishedAt !== null || (await log()).includes('building slowly'))
      t.equal((await rig.getDeploy(id)).state, 'BUILDING')
      await engine.kill()
      const done = await rig.waitFinished(id)
      t.equal(done.state, 'FAILED')
      t.equal(done.error?.code, 'build_failed', done.error?.message ?? 'no error')
      t.match(done.error?.message, /build of .* failed/, 'the error says the build broke off')
      t.equal((await fetch(`${rig.url}/healthz`)).status, 200, 'the agent answers while dockerd is down')
      await engine.start()
      t.equal(await settle(SAMPLE_TAGS.good), SAMPLE_TAGS.good, 'the old release serves again')
      const list = await rig.containers()
      t.equal(list.filter((l) => l.startsWith('running')).length, 1, `one container runs: ${list.join('; ')}`)
      t.same(
        list.filter((l) => l.endsWith(` ${id}`)),
        [],
        'nothing of the failed deploy is left',
      )
      t.equal(await rig.statusLive(), SAMPLE_TAGS.good)
    })

    await t.test('killed mid-OBSERVING: the deploy ends live or rolled back, and the env serves what the record says', async (t) => {
      const before = await rig.served()
      const id = await rig.startDeploy(SAMPLE_TAGS.good2)
      const seen = await rig.waitFor(id, (d) => d.state === 'OBSERVING' || d.finishedAt !== null)
      t.equal(seen.state, 'OBSERVING')
      await engine.kill()
      await new Promise((r) => setTimeout(r, 2_000))
      await engine.start()
      const done = await rig.waitFinished(id)
      t.ok(['SUCCEEDED', 'ROLLED_BACK'].includes(done.state), `the deploy ends ${done.state}: ${JSON.stringify(done.error)}`)
      const expected = done.state === 'SUCCEEDED' ? SAMPLE_TAGS.good2 : before
      t.equal(await settle(expected), expected, `nginx serves the release of a ${done.state} deploy`)
      const list = await rig.containers()
      t.equal(list.filter((l) => l.startsWith('running')).length, 1, `one container runs: ${list.join('; ')}`)
      t.equal(await rig.statusLive(), expected, 'the status names it')
      // The engine is healthy again: the next deploy works.
      const next = await rig.waitFinished(await rig.startDeploy(SAMPLE_TAGS.good3))
      t.equal(next.state, 'SUCCEEDED', JSON.stringify(next.error))
      t.equal(await settle(SAMPLE_TAGS.good3), SAMPLE_TAGS.good3)
    })
  },
)
