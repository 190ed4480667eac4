// A real agent process (`deploy-agent serve`) deploying the sample app behind a private nginx, driven over HTTP the
// way CI drives it: for tests that kill or break things under a deploy and then look at what is left.
import { execFile } from 'node:child_process'
import { randomBytes } from 'node:crypto'
import { readFile, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { promisify } from 'node:util'
import type { Test } from 'tap'
import { stringify } from 'yaml'
import { signRequest } from '../../agent/auth/canonical.js'
import type { Deploy } from '../../agent/store/deploys.js'
import { AUDIENCE, ed25519Key, testConfigDocument, writeTestKeys, type TestKeys } from './agent.js'
import { startServe, type ServeProcess } from './cli.js'
import { removeAppFromDocker } from './docker.js'
import type { NginxInstance } from './nginx.js'
import { freePorts } from './ports.js'
import { envBehindNginx, makeSampleRepo, sampleAppConfig, servedVersion } from './sample-app.js'
import { tempDir } from './tmp.js'

const run = promisify(execFile)

export interface AgentRigOptions {
  /** Keys of the sample app's config replaced as a whole (health, observe, migrate…). */
  app?: Record<string, unknown>
  /** Keys of the env's config (beside ref, ports, proxy). */
  env?: Record<string, unknown>
  /** Several envs, each behind its own nginx, by name → keys of its config (default: `production` with `env`). */
  envs?: Record<string, Record<string, unknown>>
  /** Keys of the proxy config (drainMs…) of every env. */ proxy?: Record<string, unknown>
  /** Each env's nginx writes the JSON access log the agent follows (`proxy.accessLog`). */
  accessLog?: boolean
  /** Each env's nginx site has the recommended `proxy_next_upstream` line (a 5xx retried on the warm standby). */
  retryOnStandby?: boolean
  /** Top-level config keys (stateDir, backups, notify…). */
  config?: (dir: string) => Record<string, unknown>
  /** `unix:///…` of a private Docker engine: the agent and the rig's docker CLI calls use it. */
  dockerHost?: string
  /** Environment of the agent process (LOG_LEVEL…). */
  serveEnv?: Record<string, string>
  /** The repo to deploy from (default: the sample repo with SAMPLE_TAGS). */
  repo?: (dir: string) => Promise<string>
  /** The app's one web service (`services`): nginx proxies to its upstream, the env's ports are its. */
  webService?: string
  /** An app of workers only: its envs have no nginx, no ports and no proxy (`nginx`, `served`, `upstream` throw). */
  withoutNginx?: boolean
}

export interface AgentRig {
  app: string
  env: string
  dir: string
  url: string
  keys: TestKeys
  /** The nginx of the `production` env (or of the first of `envs`). */
  nginx: NginxInstance
  upstreamFile: string
  /** The nginx in front of each env. */
  nginxOf(env: string): NginxInstance
  configPath: string
  agent(): ServeProcess
  /** SIGKILLs the agent (or sends `signal`) and starts a new one on the same config and state dir. */
  restart(signal?: NodeJS.Signals): Promise<void>
  /** POSTs a signed deploy of `ref` (to `env`, default production) and answers its id. */
  startDeploy(ref: string, env?: string): Promise<string>
  /** POSTs `payload` to `path`, signed with the CI key. */
  signedPost(path: string, payload: object): Promise<Response>
  getDeploy(id: string): Promise<Deploy>
  /** Polls the deploy every 20 ms until `done` says so; throws after `timeoutMs`. */
  waitFor(id: string, done: (d: Deploy) => boolean | Promise<boolean>, timeoutMs?: number): Promise<Deploy>
  waitFinished(id: string, timeoutMs?: number): Promise<Deploy>
  /** What nginx serves at /version. */
  served(): Promise<string>
  upstream(): Promise<string>
  /** `<state> <role> <release> <port> <deploy id>` of every container of the app. */
  containers(): Promise<string[]>
  /** The live release /v1/status reports. */
  statusLive(): Promise<string | null>
  /** Runs the docker CLI against the rig's engine. */
  docker(args: string[]): Promise<string>
}

export const DEPLOY_ENV = 'production'
/** A restart under a loaded CI box (tsx compiling the agent) can take longer than startServe's default. */
const READY_TIMEOUT_MS = 60_000

/** Starts the rig; everything it made is removed in `t`'s teardown. */
export async function startAgentRig(t: Test, options: AgentRigOptions = {}): Promise<AgentRig> {
  const app = `rig-${randomBytes(3).toString('hex')}`
  const env = DEPLOY_ENV
  const dir = await tempDir(t)
  const keys = await writeTestKeys(dir)
  const repoPath = options.repo ? await options.repo(dir) : (await makeSampleRepo(join(dir, 'repo'))).path
  const [agentPort] = (await freePorts(1)) as [number]
  const envs: Record<string, Awaited<ReturnType<typeof envBehindNginx>>> = {}
  const bare: Record<string, Record<string, unknown>> = {}
  for (const [name, extra] of Object.entries(options.envs ?? { [env]: options.env ?? {} })) {
    if (options.withoutNginx) {
      bare[name] = { ref: 'tag:v*', ...extra }
      continue
    }
    envs[name] = await envBehindNginx(t, dir, name, extra, {
      accessLog: options.accessLog,
      service: options.webService,
      retryOnStandby: options.retryOnStandby,
    })
    Object.assign(envs[name].env.proxy, options.proxy ?? {})
  }
  const production = envs[env] ?? Object.values(envs)[0]
  const proxied = () => {
    if (!production) throw new Error('the rig has no nginx (withoutNginx)')
    return production
  }
  const dockerEnv = { ...options.serveEnv, ...(options.dockerHost ? { DOCKER_HOST: options.dockerHost } : {}) }
  const docker = async (args: string[]): Promise<string> =>
    (await run('docker', [...(options.dockerHost ? ['-H', options.dockerHost] : []), ...args], { timeout: 60_000 })).stdout
  if (!options.dockerHost) t.teardown(() => removeAppFromDocker(app))
  const configPath = join(dir, 'agent.yaml')
  await writeFile(
    configPath,
    stringify({
      ...testConfigDocument(dir),
      listen: { host: '127.0.0.1', port: agentPort },
      ...options.config?.(dir),
      apps: {
        [app]: sampleAppConfig(
          repoPath,
          { ...bare, ...Object.fromEntries(Object.entries(envs).map(([name, e]) => [name, e.env])) },
          options.app ?? {},
        ),
      },
    }),
  )
  const url = `http://127.0.0.1:${agentPort}`
  let agent = await startServe(configPath, url, dockerEnv, READY_TIMEOUT_MS)
  t.teardown(() => agent.stop('SIGKILL'))
  const statusHeaders = { authorization: `Bearer ${keys.statusToken}` }
  const signedPost = async (path: string, payload: object): Promise<Response> => {
    const body = JSON.stringify(payload)
    const headers = signRequest({ keyId: 'ci', key: ed25519Key(keys), audience: AUDIENCE, method: 'POST', path, body })
    return await fetch(`${url}${path}`, { method: 'POST', body, headers: { ...headers, 'content-type': 'application/json' } })
  }

  const getDeploy = async (id: string): Promise<Deploy> => {
    const res = await fetch(`${url}/v1/deploys/${id}`, { headers: statusHeaders })
    if (!res.ok) throw new Error(`GET deploy ${id}: ${res.status} ${await res.text()}`)
    return (await res.json()) as Deploy
  }
  const waitFor = async (id: string, done: (d: Deploy) => boolean | Promise<boolean>, timeoutMs = 90_000): Promise<Deploy> => {
    const deadline = Date.now() + timeoutMs
    for (;;) {
      const d = await getDeploy(id)
      if (await done(d)) return d
      if (Date.now() > deadline) throw new Error(`deploy ${id} stuck in ${d.state}`)
      await new Promise((r) => setTimeout(r, 20))
    }
  }
  return {
    app,
    env,
    dir,
    url,
    keys,
    get nginx() {
      return proxied().nginx
    },
    get upstreamFile() {
      return proxied().env.proxy.upstreamFile
    },
    nginxOf: (name) => {
      const found = envs[name]
      if (!found) throw new Error(`the rig has no env ${name}`)
      return found.nginx
    },
    configPath,
    agent: () => agent,
    restart: async (signal = 'SIGKILL') => {
      await agent.stop(signal)
      agent = await startServe(configPath, url, dockerEnv, READY_TIMEOUT_MS)
    },
    startDeploy: async (ref, to = env) => {
      const res = await signedPost(`/v1/apps/${app}/envs/${to}/deploys`, { ref })
      if (res.status !== 202) throw new Error(`deploy ${ref}: ${res.status} ${await res.text()}`)
      return ((await res.json()) as { id: string }).id
    },
    signedPost,
    getDeploy,
    waitFor,
    waitFinished: (id, timeoutMs) => waitFor(id, (d) => d.finishedAt !== null, timeoutMs),
    served: () => servedVersion(proxied().nginx),
    upstream: () => readFile(proxied().env.proxy.upstreamFile, 'utf8'),
    containers: async () => {
      const format =
        '{{.State}} {{.Label "deploy-agent.role"}} {{.Label "deploy-agent.release"}} {{.Label "deploy-agent.port"}} {{.Label "deploy-agent.deploy"}}'
      return (await docker(['ps', '--all', '--filter', `label=deploy-agent.app=${app}`, '--format', format])).split('\n').filter(Boolean)
    },
    statusLive: async () => {
      const res = await fetch(`${url}/v1/status`, { headers: statusHeaders })
      const status = (await res.json()) as { apps: Record<string, { envs: Record<string, { live: { release: string } | null }> }> }
      return status.apps[app]?.envs[env]?.live?.release ?? null
    },
    docker,
  }
}

export interface TwoEnvAgent {
  dir: string
  url: string
  keys: TestKeys
  production: NginxInstance
  staging: NginxInstance
}

/**
 * A real agent process serving `app` from the sample repo in two envs, each behind its own nginx: `production`, and
 * `staging`, which requires approval. For the CLI and CI-script suites; removed in `t`'s teardown.
 */
export async function startTwoEnvAgent(t: Test, app: string, observeSeconds: number): Promise<TwoEnvAgent> {
  const dir = await tempDir(t)
  const keys = await writeTestKeys(dir)
  const repo = await makeSampleRepo(join(dir, 'repo'))
  const production = await envBehindNginx(t, dir, 'production')
  const staging = await envBehindNginx(t, dir, 'staging', { requireApproval: true })
  const [agentPort] = (await freePorts(1)) as [number]
  const doc = testConfigDocument(dir, {
    listen: { host: '127.0.0.1', port: agentPort },
    apps: {
      [app]: sampleAppConfig(
        repo.path,
        { production: production.env, staging: staging.env },
        { observe: { seconds: observeSeconds, intervalMs: 200, maxFailures: 2 } },
      ),
    },
  })
  const configPath = join(dir, 'agent.yaml')
  await writeFile(configPath, stringify(doc))
  const url = `http://127.0.0.1:${agentPort}`
  const agent = await startServe(configPath, url)
  t.teardown(async () => {
    await agent.stop('SIGKILL')
    await removeAppFromDocker(app)
  })
  return { dir, url, keys, production: production.nginx, staging: staging.nginx }
}
