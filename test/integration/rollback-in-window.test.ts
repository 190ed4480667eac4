// A rollback asked for while a deploy observes its new release, with a real agent, Docker and nginx: the replaced
// release was kept running out of nginx (a warm standby), so the deploy's window ends at once and nginx goes back
// to it — no container started — and a request loop through nginx sees no failure.
import { join } from 'node:path'
import t from 'tap'
import { startAgentRig } from '../helpers/agent-rig.js'
import { makeGitRepo } from '../helpers/git.js'
import { requestLoop } from '../helpers/load.js'
import { sampleReleaseFiles } from '../helpers/sample-app.js'

const OLD = 'v1.0.0'
const NEW = 'v1.1.0'

t.test('Rollback in the observe window: one switch back to the warm standby, no failed request', async (t) => {
  const rig = await startAgentRig(t, {
    app: { observe: { seconds: 60, intervalMs: 200, maxFailures: 2 } },
    repo: async (dir) =>
      (
        await makeGitRepo(join(dir, 'repo'), [
          { files: sampleReleaseFiles({}), tag: OLD },
          { files: sampleReleaseFiles({}), tag: NEW },
        ])
      ).path,
  })
  const first = await rig.waitFinished(await rig.startDeploy(OLD))
  t.equal(first.state, 'SUCCEEDED', JSON.stringify(first.error))
  const standby = (
    await rig.docker(['ps', '--quiet', '--filter', `label=deploy-agent.app=${rig.app}`, '--filter', `label=deploy-agent.release=${OLD}`])
  ).trim()
  const startedAt = async () => (await rig.docker(['inspect', '--format', '{{.State.StartedAt}}', standby])).trim()
  const since = await startedAt()

  const loop = requestLoop(`http://127.0.0.1:${rig.nginx.port}/version`, { concurrency: 4, maxRequests: 200_000 })
  try {
    const id = await rig.startDeploy(NEW)
    await rig.waitFor(id, (d) => d.state === 'OBSERVING')
    t.equal(await rig.served(), NEW)
    const running = (await rig.containers()).filter((line) => line.startsWith('running web '))
    t.ok(
      running.some((line) => line.startsWith(`running web ${OLD} `)),
      `the replaced release still runs during the window: ${running.join('; ')}`,
    )

    const asked = Date.now()
    const res = await rig.signedPost(`/v1/apps/${rig.app}/envs/${rig.env}/rollback`, { reason: 'checkout broken' })
    t.equal(res.status, 202)
    t.same(await res.json(), { id, kind: 'deploy', state: 'OBSERVING', release: OLD, endsAs: 'ROLLED_BACK' })
    const done = await rig.waitFinished(id, 30_000)
    const back = Date.now() - asked
    t.equal(done.state, 'ROLLED_BACK', JSON.stringify(done.error))
    t.equal(done.error?.code, 'rollback_requested')
    t.match(done.error?.message, /rolled back by ci during the observe window: checkout broken/)
    t.equal(await rig.served(), OLD)
    t.equal(await startedAt(), since, 'the standby was never restarted')
    t.ok(back < 10_000, `request → ROLLED_BACK in ${back} ms`)
    t.comment(`rollback in the window: request → ROLLED_BACK ${back} ms`)

    const log = await (
      await fetch(`${rig.url}/v1/deploys/${id}/log`, { headers: { authorization: `Bearer ${rig.keys.statusToken}` } })
    ).text()
    t.match(log, /"event":"rollback-requested","keyId":"ci","to":"v1\.0\.0","reason":"checkout broken"/)
  } finally {
    const result = await loop.stop()
    t.same(result.failures, [], `no failed request of ${result.ok}`)
  }
})
