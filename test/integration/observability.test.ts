// Metrics and error reports of a real agent (startAgent, as `serve` runs it) on real Docker, git and nginx: good
// deploys, one rolled back after the switch, one never healthy, and a manual rollback; then /metrics is scraped
// over HTTP and the envelopes the Sentry SDK posted to a loopback ingest are read.
import { randomBytes } from 'node:crypto'
import { writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import t from 'tap'
import { stringify } from 'yaml'
import { signRequest } from '../../agent/auth/canonical.js'
import { startAgent } from '../../agent/cli/serve.js'
import { createLogger } from '../../agent/observability/logger.js'
import type { Deploy } from '../../agent/store/deploys.js'
import { AUDIENCE, ed25519Key, testConfigDocument, writeTestKeys } from '../helpers/agent.js'
import { dockerAvailable, ensureBaseImage, removeAppFromDocker } from '../helpers/docker.js'
import { skipUnless } from '../helpers/engines.js'
import { freePort } from '../helpers/ports.js'
import { envBehindNginx, makeSampleRepo, SAMPLE_TAGS, sampleAppConfig, servedVersion } from '../helpers/sample-app.js'
import { sentryServer } from '../helpers/sentry-server.js'
import { tempDir } from '../helpers/tmp.js'

const app = `obs-${randomBytes(3).toString('hex')}`
const env = 'production'
const PLANTED = `planted-${randomBytes(6).toString('hex')}`

t.test(
  'Observability: deploys, rollbacks and failures of a real agent in /metrics and in Sentry',
  { skip: skipUnless(await dockerAvailable(), 'docker') },
  async (t) => {
    await ensureBaseImage()
    const dir = await tempDir(t)
    const repo = await makeSampleRepo(join(dir, 'repo'))
    const keys = await writeTestKeys(dir)
    const ingest = await sentryServer(t)
    const envFile = join(dir, 'shop.env')
    await writeFile(envFile, `SHOP_API_KEY=${PLANTED}\n`)
    const production = await envBehindNginx(t, dir, env, { envFile })
    const port = await freePort()
    const configPath = join(dir, 'agent.yaml')
    const document = testConfigDocument(dir, {
      apps: { [app]: sampleAppConfig(repo.path, { [env]: production.env }) },
      sentry: { dsn: ingest.dsn, environment: 'ci' },
    })
    await writeFile(configPath, stringify({ ...document, listen: { host: '127.0.0.1', port } }))
    const agent = await startAgent(configPath, createLogger({ level: 'silent' }))
    let closed = false
    t.teardown(async () => {
      if (!closed) await agent.close()
      await removeAppFromDocker(app)
    })
    const url = `http://127.0.0.1:${port}`
    const token = { authorization: `Bearer ${keys.statusToken}` }

    const signedPost = async (path: string, body: object): Promise<{ id: string }> => {
      const text = JSON.stringify(body)
      const headers = signRequest({ keyId: keys.ed25519.id, key: ed25519Key(keys), audience: AUDIENCE, method: 'POST', path, body: text })
      const res = await fetch(`${url}${path}`, { method: 'POST', body: text, headers: { 'content-type': 'application/json', ...headers } })
      if (res.status !== 202) throw new Error(`POST ${path}: ${res.status} ${await res.text()}`)
      return (await res.json()) as { id: string }
    }
    const finished = async (id: string): Promise<Deploy> => {
      for (const deadline = Date.now() + 90_000; Date.now() < deadline; await new Promise((r) => setTimeout(r, 100))) {
        const deploy = (await (await fetch(`${url}/v1/deploys/${id}`, { headers: token })).json()) as Deploy
        if (deploy.finishedAt) return deploy
      }
      throw new Error(`deploy ${id} did not finish in 90 s`)
    }
    const deploy = async (ref: string) => finished((await signedPost(`/v1/apps/${app}/envs/${env}/deploys`, { ref })).id)

    const good = await deploy(SAMPLE_TAGS.good)
    t.equal(good.state, 'SUCCEEDED', JSON.stringify(good.error))
    const rolledBack = await deploy(SAMPLE_TAGS.failsAfterSwitch)
    t.equal(rolledBack.state, 'ROLLED_BACK', JSON.stringify(rolledBack.error))
    const failed = await deploy(SAMPLE_TAGS.neverHealthy)
    t.equal(failed.state, 'FAILED', JSON.stringify(failed.error))
    const good2 = await deploy(SAMPLE_TAGS.good2)
    t.equal(good2.state, 'SUCCEEDED', JSON.stringify(good2.error))
    const manual = await finished((await signedPost(`/v1/apps/${app}/envs/${env}/rollback`, {})).id)
    t.equal(manual.state, 'SUCCEEDED', JSON.stringify(manual.error))
    t.equal(await servedVersion(production.nginx), SAMPLE_TAGS.good, 'the manual rollback put the first release back')

    await t.test(
      '/metrics over HTTP shows every deploy by result, the phases, rollbacks, probe failures, queue and live release',
      async (t) => {
        const res = await fetch(`${url}/metrics`, { headers: token })
        t.equal(res.status, 200)
        const text = await res.text()
        const sample = (name: string, labels: Record<string, string>): number | undefined => {
          const want = Object.entries(labels).map(([k, v]) => `${k}="${v}"`)
          const line = text.split('\n').find((l) => l.startsWith(`${name}{`) && want.every((w) => l.includes(w)))
          return line === undefined ? undefined : Number(line.slice(line.lastIndexOf(' ') + 1))
        }
        const at = { app, env }
        t.equal(sample('deploy_agent_deploys_total', { ...at, kind: 'deploy', result: 'SUCCEEDED' }), 2)
        t.equal(sample('deploy_agent_deploys_total', { ...at, kind: 'deploy', result: 'ROLLED_BACK' }), 1)
        t.equal(sample('deploy_agent_deploys_total', { ...at, kind: 'deploy', result: 'FAILED' }), 1)
        t.equal(sample('deploy_agent_deploys_total', { ...at, kind: 'rollback', result: 'SUCCEEDED' }), 1)
        t.equal(sample('deploy_agent_rollbacks_total', { ...at, trigger: 'automatic' }), 1)
        t.equal(sample('deploy_agent_rollbacks_total', { ...at, trigger: 'manual' }), 1)
        t.equal(sample('deploy_agent_deploy_phase_duration_seconds_count', { ...at, phase: 'BUILDING' }), 4, 'four deploys built')
        t.equal(
          sample('deploy_agent_deploy_phase_duration_seconds_count', { ...at, phase: 'OBSERVING' }),
          4,
          'three deploys and the manual rollback were watched after their switch',
        )
        t.equal(
          sample('deploy_agent_deploy_phase_duration_seconds_count', { ...at, phase: 'VERIFYING' }),
          5,
          'every deploy and the rollback verified a candidate',
        )
        t.ok((sample('deploy_agent_deploy_phase_duration_seconds_sum', { ...at, phase: 'OBSERVING' }) ?? 0) > 0, 'observing took time')
        t.ok(
          (sample('deploy_agent_health_check_failures_total', { ...at, phase: 'OBSERVING' }) ?? 0) > 2,
          'more than maxFailures probes failed after the bad switch',
        )
        t.ok(
          (sample('deploy_agent_health_check_failures_total', { ...at, phase: 'VERIFYING' }) ?? 0) >= 1,
          'the never-healthy candidate failed its probes',
        )
        t.equal(sample('deploy_agent_deploy_queue_length', at), 0, 'nothing waits')
        t.equal(
          sample('deploy_agent_release_info', { ...at, release: SAMPLE_TAGS.good, commit: good.commit as string }),
          1,
          'the live release',
        )
        t.notMatch(text, new RegExp(`deploy_agent_release_info\\{[^}]*release="${SAMPLE_TAGS.good2}"`), 'the release it replaced is gone')
      },
    )

    await t.test(
      'the failed and the rolled-back deploy reach Sentry with their tags, flushed at the stop, no secret in them',
      async (t) => {
        closed = true
        await agent.close()
        const events = ingest.events()
        t.equal(events.length, 2, 'one event per bad end, none for the good ones')
        t.match(
          events.find((e) => e.tags?.deployId === rolledBack.id),
          {
            tags: { app, env, appRelease: SAMPLE_TAGS.failsAfterSwitch, state: 'ROLLED_BACK', code: 'observe_failed', kind: 'deploy' },
            environment: 'ci',
            exception: { values: [{ type: 'DeployRolledBack', value: new RegExp(`${rolledBack.id} ROLLED_BACK \\(observe_failed\\)`) }] },
          },
        )
        t.match(
          events.find((e) => e.tags?.deployId === failed.id),
          {
            tags: { app, env, appRelease: SAMPLE_TAGS.neverHealthy, state: 'FAILED', code: 'health_check_failed' },
            exception: { values: [{ type: 'DeployFailed' }] },
          },
        )
        const raw = ingest.bodies.join('\n')
        t.notMatch(raw, PLANTED, 'the env file value never left')
        t.notMatch(raw, keys.statusToken, 'nor the status token')
      },
    )
  },
)
