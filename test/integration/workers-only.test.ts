// An app of workers only on the real engine, through a real agent process (no nginx, no ports, no proxy): deploys
// hand the work from one group of workers to the next, a candidate whose worker dies leaves nothing behind, a worker
// that dies while observed hands the work back, a manual rollback revives the kept group, and an agent SIGKILLed
// mid-deploy recovers. `docker ps`, sampled every 50 ms throughout, proves two schedulers never run at once.
import { readFile } from 'node:fs/promises'
import { join } from 'node:path'
import t from 'tap'
import { startAgentRig, type AgentRig } from '../helpers/agent-rig.js'
import { dockerAvailable, ensureBaseImage } from '../helpers/docker.js'
import { skipUnless } from '../helpers/engines.js'
import { sampleEvery } from '../helpers/sampler.js'
import { makeWorkersRepo, WORKER_SERVICES, WORKER_TAGS } from '../helpers/sample-services.js'

/** `<service> <release>` of every running container of the app. */
async function running(rig: AgentRig): Promise<string[]> {
  const format = '{{.Label "deploy-agent.service"}} {{.Label "deploy-agent.release"}}'
  const out = await rig.docker(['ps', '--filter', `label=deploy-agent.app=${rig.app}`, '--format', format])
  return out.split('\n').filter(Boolean).sort()
}

/** Samples the running schedulers ("beat") every 50 ms until stopped. */
const sampleSchedulers = (rig: AgentRig) =>
  sampleEvery(async () =>
    (
      await rig.docker([
        'ps',
        '--filter',
        `label=deploy-agent.app=${rig.app}`,
        '--filter',
        'label=deploy-agent.service=beat',
        '--format',
        '{{.Label "deploy-agent.release"}}',
      ])
    )
      .split('\n')
      .filter(Boolean),
  )

const statusHeaders = (rig: AgentRig) => ({ authorization: `Bearer ${rig.keys.statusToken}` })

t.test(
  'Workers only: deploys, failures, rollbacks and a crash on real Docker without nginx',
  { skip: skipUnless(await dockerAvailable(), 'docker') },
  async (t) => {
    await ensureBaseImage()
    const rig = await startAgentRig(t, {
      withoutNginx: true,
      repo: async (dir) => (await makeWorkersRepo(join(dir, 'repo'))).path,
      app: {
        services: WORKER_SERVICES,
        smoke: [],
        health: { intervalMs: 100, deadlineSec: 10 },
        observe: { seconds: 5, intervalMs: 200 },
        migrate: { command: ['sh', '/app/migrate.sh'], timeoutSec: 30 },
        keepReleases: 4,
      },
    })
    const schedulers = sampleSchedulers(rig)
    const deploy = async (ref: string) => rig.waitFinished(await rig.startDeploy(ref))

    await t.test('a first and a second release: the work is handed from one group to the next', async (t) => {
      const first = await deploy(WORKER_TAGS.good)
      t.equal(first.state, 'SUCCEEDED', JSON.stringify(first.error))
      t.same(await running(rig), ['beat v1.0.0', 'worker v1.0.0'])
      const record = JSON.parse(await readFile(join(rig.dir, 'state', 'handover', `${rig.app}.production.json`), 'utf8'))
      t.equal(record.deployId, first.id, 'the hand-over record names the live group by its deploy id')
      const second = await deploy(WORKER_TAGS.good2)
      t.equal(second.state, 'SUCCEEDED', JSON.stringify(second.error))
      t.same(await running(rig), ['beat v1.1.0', 'worker v1.1.0'], 'every worker of the old group stopped')
      t.equal(await rig.statusLive(), WORKER_TAGS.good2)
      const log = await (await fetch(`${rig.url}/v1/deploys/${second.id}/log`, { headers: statusHeaders(rig) })).text()
      t.match(log, /migrated to v1\.1\.0/, 'the migration ran as for any app')
    })

    await t.test('a candidate whose worker dies fails and leaves no container; the live group keeps the work', async (t) => {
      const bad = await deploy(WORKER_TAGS.workerExits)
      t.equal(bad.state, 'FAILED')
      t.equal(bad.error?.code, 'container_exited')
      const left = await rig.docker(['ps', '--all', '--quiet', '--filter', `label=deploy-agent.deploy=${bad.id}`])
      t.equal(left.trim(), '', 'no container of the candidate remains')
      t.same(await running(rig), ['beat v1.1.0', 'worker v1.1.0'])
    })

    await t.test('a worker that dies while observed hands the work back to the old group', async (t) => {
      const bad = await deploy(WORKER_TAGS.workerDiesLater)
      t.equal(bad.state, 'ROLLED_BACK', JSON.stringify(bad.error))
      t.match(bad.error?.message, /^worker: the worker exited or restarted/)
      t.same(await running(rig), ['beat v1.1.0', 'worker v1.1.0'], 'no worker of the bad release runs')
      t.equal(await rig.statusLive(), WORKER_TAGS.good2)
    })

    await t.test('a manual rollback revives the kept group; releases show each outcome', async (t) => {
      const res = await rig.signedPost(`/v1/apps/${rig.app}/envs/production/rollback`, {})
      t.equal(res.status, 202, await res.clone().text())
      const rollback = await rig.waitFinished(((await res.json()) as { id: string }).id)
      t.equal(rollback.state, 'SUCCEEDED', JSON.stringify(rollback.error))
      t.equal(rollback.release, WORKER_TAGS.good)
      t.same(await running(rig), ['beat v1.0.0', 'worker v1.0.0'], 'the whole group moved back')
      t.equal(await rig.statusLive(), WORKER_TAGS.good)
      const { releases } = (await (
        await fetch(`${rig.url}/v1/apps/${rig.app}/envs/production/releases`, { headers: statusHeaders(rig) })
      ).json()) as { releases: Array<{ release: string; outcome: string | null }> }
      t.same(Object.fromEntries(releases.map((r) => [r.release, r.outcome])), {
        [WORKER_TAGS.workerDiesLater]: 'rolled_back',
        [WORKER_TAGS.workerExits]: 'failed',
        [WORKER_TAGS.good2]: 'served',
        [WORKER_TAGS.good]: 'live',
      })
    })

    await t.test('an agent SIGKILLed in VERIFYING and in OBSERVING recovers to one group at work', async (t) => {
      for (const [state, expect, release] of [
        ['VERIFYING', 'FAILED', WORKER_TAGS.good],
        ['OBSERVING', 'SUCCEEDED', WORKER_TAGS.good3],
      ] as const) {
        const id = await rig.startDeploy(WORKER_TAGS.good3)
        const seen = await rig.waitFor(id, (d) => d.state === state || d.finishedAt !== null)
        t.equal(seen.state, state, `caught the deploy in ${state}`)
        await rig.restart('SIGKILL')
        const after = await rig.waitFinished(id)
        t.equal(after.state, expect, `${state}: ${JSON.stringify(after.error)}`)
        t.same(await running(rig), [`beat ${release}`, `worker ${release}`], `${state}: exactly one group works`)
        t.equal(await rig.statusLive(), release, `${state}: status reports the group at work`)
        if (expect === 'FAILED') {
          const left = await rig.docker(['ps', '--all', '--quiet', '--filter', `label=deploy-agent.deploy=${id}`])
          t.equal(left.trim(), '', 'the interrupted candidate is removed')
        }
      }
    })

    const beats = await schedulers.stop()
    t.ok(beats.looks > 50, `${beats.looks} looks at the schedulers`)
    t.same(beats.seen, [], 'never two schedulers running at once')
  },
)
