// A real deploy carries the app's container settings (with an env's override) to the migration container and
// the web container: read back from the engine, and probed from inside both.
import { execFile } from 'node:child_process'
import { randomBytes } from 'node:crypto'
import { join } from 'node:path'
import { promisify } from 'node:util'
import Docker from 'dockerode'
import t from 'tap'
import { assembleDeploys } from '../../agent/deploy/assemble.js'
import { createLogger } from '../../agent/observability/logger.js'
import type { Deploy } from '../../agent/store/deploys.js'
import { buildTestAgent, signedInject } from '../helpers/agent.js'
import { dockerAvailable, ensureBaseImage, removeAppFromDocker } from '../helpers/docker.js'
import { skipUnless } from '../helpers/engines.js'
import { makeGitRepo } from '../helpers/git.js'
import { PROBE, probeResults, SETUID_SU } from '../helpers/hardening.js'
import { envBehindNginx, sampleAppConfig, sampleReleaseFiles } from '../helpers/sample-app.js'
import { tempDir } from '../helpers/tmp.js'

const run = promisify(execFile)
const app = `hard-${randomBytes(3).toString('hex')}`
const env = 'production'

t.test(
  'Deploy: migration and web containers run with the configured hardening and limits',
  { skip: skipUnless(await dockerAvailable(), 'docker') },
  async (t) => {
    await ensureBaseImage()
    const dir = await tempDir(t)
    const repo = await makeGitRepo(join(dir, 'repo'), [
      { files: sampleReleaseFiles({ extra: SETUID_SU, migrate: `${PROBE}\nsleep 2\n` }), tag: 'v1.0.0' },
    ])
    const production = await envBehindNginx(t, dir, env, { container: { pids: 100 } })
    const agent = await buildTestAgent(dir, {
      extra: { apps: { [app]: sampleAppConfig(repo.path, { [env]: production.env }, { container: { memory: '64m', pids: 50 } }) } },
      deployments: (config, deploys, backups) => assembleDeploys(config, deploys, createLogger({ level: 'silent' }), { backups }),
    })
    t.teardown(async () => {
      await agent.close()
      await removeAppFromDocker(app)
    })
    const headers = { authorization: `Bearer ${agent.keys.statusToken}` }

    const res = await signedInject(agent, { url: `/v1/apps/${app}/envs/${env}/deploys`, body: { ref: 'v1.0.0' } })
    t.equal(res.statusCode, 202, res.body)
    const id = (JSON.parse(res.body) as { id: string }).id
    // The migration container is removed once it exits: inspected while its probe sleeps.
    const docker = new Docker()
    const migrateHost = (async () => {
      for (const deadline = Date.now() + 90_000; Date.now() < deadline; await new Promise((r) => setTimeout(r, 100))) {
        const [found] = await docker.listContainers({ filters: { label: [`deploy-agent.app=${app}`, 'deploy-agent.role=migrate'] } })
        const info =
          found &&
          (await docker
            .getContainer(found.Id)
            .inspect()
            .catch(() => undefined))
        if (info) return info.HostConfig
      }
      return undefined
    })()
    let deploy: Deploy
    for (const deadline = Date.now() + 90_000; ; await new Promise((r) => setTimeout(r, 100))) {
      deploy = JSON.parse((await agent.app.inject({ url: `/v1/deploys/${id}`, headers })).body) as Deploy
      if (deploy.finishedAt || Date.now() > deadline) break
    }
    const log = (await agent.app.inject({ url: `/v1/deploys/${id}/log`, headers })).body
    t.equal(deploy.state, 'SUCCEEDED', log)

    const migrateLines = log.split('\n').flatMap((line) => {
      try {
        const entry = JSON.parse(line) as { event?: string; line?: string }
        return entry.event === 'migrate' && typeof entry.line === 'string' ? [entry.line] : []
      } catch {
        return []
      }
    })
    t.same(
      probeResults(migrateLines),
      { 'raw-socket': 'refused', setuid: 'blocked', 'no-new-privs': '1' },
      'inside the migration container',
    )

    t.match(
      await migrateHost,
      { CapDrop: ['NET_RAW'], SecurityOpt: ['no-new-privileges'], Memory: 64 * 1024 ** 2, PidsLimit: 100 },
      'the migration container, inspected',
    )
    const [web] = await docker.listContainers({ filters: { label: [`deploy-agent.app=${app}`, 'deploy-agent.role=web'] } })
    t.ok(web, 'the web container runs')
    const { HostConfig } = await docker.getContainer(web?.Id as string).inspect()
    t.match(
      HostConfig,
      { CapDrop: ['NET_RAW'], SecurityOpt: ['no-new-privileges'], Memory: 64 * 1024 ** 2, PidsLimit: 100 },
      "the env's pids replaces the app's",
    )
    const { stdout } = await run('docker', ['exec', web?.Id as string, 'sh', '-c', PROBE])
    t.same(
      probeResults(stdout.split('\n')),
      { 'raw-socket': 'refused', setuid: 'blocked', 'no-new-privs': '1' },
      'inside the web container',
    )
  },
)
