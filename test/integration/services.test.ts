// A release of several services end to end on real Docker, git, nginx and PostgreSQL (issue 11's sample app, built
// from git; test/helpers/services-rig.ts): an api with a migration that gets the database URL in the async driver's
// scheme, a frontend with its own build, both behind one nginx (both upstreams in the env's one file), a start-first
// worker with a mount of its own and a stop-first scheduler, and an uploads volume backed up and restored with the
// database. Request loops on both web services count failures during a deploy and a manual rollback, and
// `docker ps`, sampled every 50 ms, proves two schedulers never run at once. services-image.test.ts: the same app
// pulled from a registry.
import { execFile } from 'node:child_process'
import { randomBytes } from 'node:crypto'
import { join } from 'node:path'
import { promisify } from 'node:util'
import t from 'tap'
import { dockerAvailable } from '../helpers/docker.js'
import { skipUnless } from '../helpers/engines.js'
import { pgAvailable } from '../helpers/pg.js'
import { makeServicesRepo, SERVICE_TAGS } from '../helpers/sample-services.js'
import {
  checkCandidateWorkerExits,
  checkDeployAndRollbackUnderLoad,
  checkFirstDeploy,
  checkObserveRollsAllBack,
  checkRestore,
  startServicesRig,
} from '../helpers/services-rig.js'

const run = promisify(execFile)
const app = `multi-${randomBytes(3).toString('hex')}`

t.test(
  'Services on real Docker, git and nginx',
  { skip: skipUnless((await dockerAvailable()) && (await pgAvailable()), 'docker and postgresql') },
  async (t) => {
    const rig = await startServicesRig(t, app, 'repo', async (dir) => ({ repo: (await makeServicesRepo(join(dir, 'repo'))).path }))
    const { env, token } = rig
    const first = await rig.deploy(SERVICE_TAGS.good)
    t.equal(first.state, 'SUCCEEDED', JSON.stringify(first.error))
    await checkFirstDeploy(t, rig)
    const backupId = await rig.backUp()

    await t.test('status and releases list every service of the release; app logs pick one by name', async (t) => {
      const status = JSON.parse((await rig.agent.app.inject({ url: '/v1/status', headers: token })).body)
      const live = status.apps[app].envs[env].live
      const ports = rig.web.env.ports as { api: number[]; frontend: number[] }
      t.same(
        live.services.map((s: { name: string; kind: string; port: number | null }) => [s.name, s.kind, s.port]),
        [
          ['api', 'web', live.port],
          ['frontend', 'web', ports.frontend[ports.api.indexOf(live.port)]],
          ['worker', 'worker', null],
          ['beat', 'worker', null],
        ],
      )
      const releases = JSON.parse((await rig.agent.app.inject({ url: `/v1/apps/${app}/envs/${env}/releases`, headers: token })).body)
      t.same(releases.releases[0].services, [
        { name: 'api', image: `${app}:${env}-${SERVICE_TAGS.good}`, running: true },
        { name: 'frontend', image: `${app}-frontend:${env}-${SERVICE_TAGS.good}`, running: true },
        { name: 'worker', image: `${app}:${env}-${SERVICE_TAGS.good}`, running: true },
        { name: 'beat', image: `${app}:${env}-${SERVICE_TAGS.good}`, running: true },
      ])
      const logs = await rig.agent.app.inject({ url: `/v1/apps/${app}/envs/${env}/logs?service=beat&tail=10`, headers: token })
      t.equal(logs.statusCode, 200, logs.body)
      t.match(logs.body, /"line":"start \d+"/, "the scheduler's own output")
      const unknown = await rig.agent.app.inject({ url: `/v1/apps/${app}/envs/${env}/logs?service=cron`, headers: token })
      t.equal(unknown.json().error.code, 'unknown_service')
      t.match(unknown.json().error.message, /its services: api, frontend, worker, beat/)
    })

    await t.test('a deploy and a manual rollback under load on both web services fail no request; one scheduler at a time', (t) =>
      checkDeployAndRollbackUnderLoad(t, rig),
    )

    await t.test('a candidate whose worker exits fails and leaves no member of it; the live release keeps serving', (t) =>
      checkCandidateWorkerExits(t, rig),
    )

    await t.test('one service failing while observed rolls every service back', async (t) => {
      await checkObserveRollsAllBack(t, rig)
      const { stdout: images } = await run('docker', ['images', '--format', '{{.Repository}}:{{.Tag}}', `${app}-frontend`])
      t.ok(images.includes(`${app}-frontend:${env}-${SERVICE_TAGS.frontendFailsAfterSwitch}`), 'the frontend has its own image')
    })

    await t.test('a restore brings the database and the uploads back as they were in the backup', (t) => checkRestore(t, rig, backupId))
  },
)
