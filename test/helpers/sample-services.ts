// The sample app of several services: one image (busybox) with an api and a frontend (httpd on their own ports), a
// start-first worker and a stop-first scheduler ("beat"), in a real git repo with one tag per behaviour — or, for a
// prebuilt image app, one image per tag holding every service, pushed to a registry; and a private nginx in front
// of both web services (one upstream file holding both upstreams).
import { mkdir, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import type { Test } from 'tap'
import { BASE_IMAGE } from './docker.js'
import { makeGitRepo, type GitRepo } from './git.js'
import { startNginx, type NginxInstance } from './nginx.js'
import { freePorts } from './ports.js'
import type { TestRegistry } from './registry.js'

/**
 * A worker loop that stops at once on SIGTERM (the agent's containers run an init that forwards it; as a swarm
 * task's PID 1, without an init, its own trap does).
 */
export const LOOP = 'trap \'echo stop; exit 0\' TERM\necho "start $$"\nwhile true; do sleep 1 & wait $!; done\n'

interface Variant {
  worker?: string
  frontend?: string
}

function release(v: Variant): Record<string, string> {
  return {
    Dockerfile: [
      `FROM ${BASE_IMAGE}`,
      'ARG VERSION',
      'COPY . /app',
      'RUN mkdir -p /www && echo ok > /www/healthz && echo "$VERSION" > /www/version',
      'CMD ["sh", "/app/api.sh"]',
      '',
    ].join('\n'),
    // The frontend has a build of its own (context `frontend`): the image `<app>-frontend:<env>-<release>`.
    'frontend/Dockerfile': [
      `FROM ${BASE_IMAGE}`,
      'ARG VERSION',
      'COPY serve.sh /serve.sh',
      'RUN mkdir -p /front && echo ok > /front/healthz && echo "front-$VERSION" > /front/version',
      'CMD ["sh", "/serve.sh"]',
      '',
    ].join('\n'),
    'frontend/serve.sh': v.frontend ?? 'exec httpd -f -p 127.0.0.1:$PORT -h /front\n',
    '.dockerignore': 'frontend\n',
    // With the uploads volume mounted (the done-when test), the api and the migration leave a trace in it.
    'api.sh': '[ -d /uploads ] && cp /www/version /uploads/api-started\nexec httpd -f -p 127.0.0.1:$PORT -h /www\n',
    'worker.sh': v.worker ?? LOOP,
    'beat.sh': LOOP,
    'migrate.sh': '[ -d /uploads ] && echo "$DATABASE_URL" > /uploads/database-url\necho "migrated to $(cat /www/version)"\n',
  }
}

export const SERVICE_TAGS = {
  good: 'v1.0.0',
  good2: 'v1.1.0',
  /** Its worker exits at once: the candidate never gets healthy. */
  workerExits: 'v1.2.0',
  /** Its frontend stops answering /healthz 3 s after it starts: observe rolls the whole release back. */
  frontendFailsAfterSwitch: 'v1.3.0',
} as const

/** Each tag of the sample and what is different in it. */
const RELEASES: Array<{ tag: string; variant: Variant }> = [
  { tag: SERVICE_TAGS.good, variant: {} },
  { tag: SERVICE_TAGS.good2, variant: {} },
  { tag: SERVICE_TAGS.workerExits, variant: { worker: 'echo "worker: cannot connect to the queue" >&2\nexit 3\n' } },
  {
    tag: SERVICE_TAGS.frontendFailsAfterSwitch,
    variant: { frontend: 'httpd -p 127.0.0.1:$PORT -h /front && sleep 3 && rm /front/healthz && exec sleep 100000\n' },
  },
]

export function makeServicesRepo(dir: string): Promise<GitRepo> {
  return makeGitRepo(
    dir,
    RELEASES.map(({ tag, variant }, i) => ({ files: release(variant), tag, ...(i === 0 && { annotated: true }) })),
  )
}

/**
 * The same releases as prebuilt images, as CI would push them: one image per tag holding every service (the
 * frontend's files too), pushed as `<registry>/<name>:<tag>`. Answers each tag's digest.
 */
export async function pushServicesImages(registry: TestRegistry, name: string): Promise<Record<string, string>> {
  const digests: Record<string, string> = {}
  for (const { tag, variant } of RELEASES) {
    // The agent's tar writer takes plain names: the frontend's script is /app/frontend.sh here.
    const {
      Dockerfile: _built,
      '.dockerignore': _ignored,
      'frontend/Dockerfile': _own,
      'frontend/serve.sh': frontend,
      ...files
    } = release(variant)
    const dockerfile = [
      `FROM ${BASE_IMAGE}`,
      'ARG VERSION',
      'COPY . /app',
      'RUN mkdir -p /www /front && echo ok > /www/healthz && echo "$VERSION" > /www/version && echo ok > /front/healthz && echo "front-$VERSION" > /front/version',
      'CMD ["sh", "/app/api.sh"]',
      '',
    ].join('\n')
    const context = { ...files, 'frontend.sh': frontend as string, Dockerfile: dockerfile }
    digests[tag] = (await registry.pushFiles(name, tag, context, { VERSION: tag })).digest
  }
  return digests
}

/**
 * The `services` of the sample: api and frontend (web), worker (start-first, mounting `jobs` instead of the app's
 * volumes), beat (stop-first). Built from git the frontend has a build of its own; from an image, every service
 * runs the one image with its own command.
 */
export function sampleServices(source: 'repo' | 'image', jobs: string) {
  return {
    api: { kind: 'web', command: ['sh', '/app/api.sh'] },
    frontend: source === 'repo' ? { kind: 'web', build: { context: 'frontend' } } : { kind: 'web', command: ['sh', '/app/frontend.sh'] },
    worker: {
      kind: 'worker',
      command: ['sh', '/app/worker.sh'],
      health: { startSec: 1 },
      stopTimeoutSec: 5,
      volumes: [`${jobs}:/jobs`],
    },
    beat: { kind: 'worker', command: ['sh', '/app/beat.sh'], order: 'stop-first', health: { startSec: 1 }, stopTimeoutSec: 5 },
  }
}

export const WORKER_TAGS = {
  good: 'v1.0.0',
  good2: 'v1.1.0',
  /** Its worker exits at once: the candidate never gets healthy. */
  workerExits: 'v1.2.0',
  /** Its worker exits 3 s after it starts: healthy at first (startSec 1), it dies while observed. */
  workerDiesLater: 'v1.3.0',
  good3: 'v1.4.0',
} as const

/**
 * An app of workers only (no web service, no port): a start-first worker and a stop-first scheduler ("beat") that
 * print their release, and a migration, in a real git repo with one tag per behaviour.
 */
export function makeWorkersRepo(dir: string): Promise<GitRepo> {
  const files = (worker: string = LOOP) => ({
    Dockerfile: [
      `FROM ${BASE_IMAGE}`,
      'ARG VERSION',
      'COPY . /app',
      'RUN echo "$VERSION" > /app/version',
      'CMD ["sh", "/app/worker.sh"]',
      '',
    ].join('\n'),
    'worker.sh': worker,
    'beat.sh': LOOP,
    'migrate.sh': 'echo "migrated to $(cat /app/version)"\n',
  })
  return makeGitRepo(dir, [
    { files: files(), tag: WORKER_TAGS.good, annotated: true },
    { files: files(), tag: WORKER_TAGS.good2 },
    { files: files('echo "worker: cannot connect to the queue" >&2\nexit 3\n'), tag: WORKER_TAGS.workerExits },
    { files: files('echo "worker: up for a moment"\nsleep 3\nexit 4\n'), tag: WORKER_TAGS.workerDiesLater },
    { files: files(), tag: WORKER_TAGS.good3 },
  ])
}

/** The `services` of the worker-only sample: a start-first worker and a stop-first scheduler. */
export const WORKER_SERVICES = {
  worker: { kind: 'worker', command: ['sh', '/app/worker.sh'], health: { startSec: 1 }, stopTimeoutSec: 5 },
  beat: { kind: 'worker', command: ['sh', '/app/beat.sh'], order: 'stop-first', health: { startSec: 1 }, stopTimeoutSec: 5 },
}

export interface ServicesEnv {
  /** nginx in front of the api (its port) and of the frontend (`frontendPort`). */
  nginx: NginxInstance
  frontendPort: number
  env: Record<string, unknown>
}

/** A private nginx with one server per web service, both upstreams in the env's one upstream file, and the env's config. */
export async function servicesEnvBehindNginx(
  t: Test,
  dir: string,
  name: string,
  extra: Record<string, unknown> = {},
): Promise<ServicesEnv> {
  const [apiPort, frontendPort, ...pairs] = (await freePorts(6)) as number[]
  const nginxDir = join(dir, `nginx-${name}`)
  const upstreamFile = join(nginxDir, 'upstream.conf')
  const prefix = `sample_${name.replace(/-/g, '_')}`
  const site = join(dir, `site-${name}.conf`)
  await mkdir(nginxDir, { recursive: true })
  // nginx starts before the first deploy: both upstreams exist, marked down (what the agent's placeholder says).
  await writeFile(
    upstreamFile,
    `upstream ${prefix}_api { server 127.0.0.1:${pairs[0]} down; }\nupstream ${prefix}_frontend { server 127.0.0.1:${pairs[2]} down; }\n`,
  )
  await writeFile(
    site,
    `server {\n  listen 127.0.0.1:${frontendPort};\n  location / {\n    proxy_pass http://${prefix}_frontend;\n    proxy_connect_timeout 2s;\n  }\n}\n`,
  )
  const nginx = await startNginx(nginxDir, { port: apiPort as number, upstreamFile, upstreamName: `${prefix}_api`, includes: [site] })
  t.teardown(() => nginx.stop())
  return {
    nginx,
    frontendPort: frontendPort as number,
    env: {
      ref: 'tag:v*',
      ports: { api: [pairs[0], pairs[1]], frontend: [pairs[2], pairs[3]] },
      proxy: {
        upstreamFile,
        upstreamName: prefix,
        test: nginx.testCommand,
        reload: nginx.reloadCommand,
        pidFile: join(nginxDir, 'nginx.pid'),
        drainMs: 300,
      },
      ...extra,
    },
  }
}
