// The sample app the deploy tests ship: busybox httpd serving /healthz and /version from the local base image,
// in a real git repo with one tag per behaviour (good, good again, never healthy, failing after the switch,
// failing migration, failing build).
import { join } from 'node:path'
import type { Test } from 'tap'
import { BASE_IMAGE } from './docker.js'
import { makeGitRepo, type GitRepo } from './git.js'
import { startNginx, type NginxInstance } from './nginx.js'
import { freePorts } from './ports.js'

interface Variant {
  /** extra Dockerfile lines after the web root is in place */
  extra?: string
  /** what /migrate.sh does */
  migrate?: string
  /** shell run as the container's command ($PORT is set by the agent) */
  command?: string
}

const SERVE = 'exec httpd -f -p 127.0.0.1:$PORT -h /www'

function dockerfile(v: Variant): string {
  return [
    `FROM ${BASE_IMAGE}`,
    'ARG VERSION',
    'COPY www /www',
    'COPY migrate.sh /migrate.sh',
    'RUN echo "$VERSION" > /www/version',
    ...(v.extra ? [v.extra] : []),
    `CMD ["sh", "-c", ${JSON.stringify(v.command ?? SERVE)}]`,
    '',
  ].join('\n')
}

function release(v: Variant): Record<string, string> {
  return {
    Dockerfile: dockerfile(v),
    'www/healthz': 'ok\n',
    'www/index.html': '<h1>shop</h1>\n',
    'migrate.sh': v.migrate ?? 'echo "migrated to $(cat /www/version)"\n',
  }
}

export const SAMPLE_TAGS = {
  good: 'v1.0.0',
  good2: 'v1.1.0',
  neverHealthy: 'v1.2.0',
  failsAfterSwitch: 'v1.3.0',
  badMigration: 'v1.4.0',
  badBuild: 'v1.5.0',
  good3: 'v1.6.0',
  slowBuild: 'v2.0.0',
} as const

/** Seconds after start at which the `failsAfterSwitch` release stops answering /healthz. */
export const FAILS_AFTER_SEC = 3

export function makeSampleRepo(dir: string): Promise<GitRepo> {
  return makeGitRepo(dir, [
    { files: release({}), tag: SAMPLE_TAGS.good, annotated: true },
    { files: release({}), tag: SAMPLE_TAGS.good2 },
    { files: release({ extra: 'RUN rm /www/healthz' }), tag: SAMPLE_TAGS.neverHealthy, annotated: true },
    {
      files: release({ command: `httpd -p 127.0.0.1:$PORT -h /www && sleep ${FAILS_AFTER_SEC} && rm /www/healthz && exec sleep 100000` }),
      tag: SAMPLE_TAGS.failsAfterSwitch,
    },
    { files: release({ migrate: 'echo "relation users does not exist" >&2\nexit 3\n' }), tag: SAMPLE_TAGS.badMigration },
    { files: release({ extra: 'RUN echo compiling && false' }), tag: SAMPLE_TAGS.badBuild },
    { files: release({}), tag: SAMPLE_TAGS.good3, annotated: true },
    { files: release({ extra: 'RUN echo "building slowly" && sleep 4' }), tag: SAMPLE_TAGS.slowBuild },
  ])
}

/**
 * An nginx of the test's own in front of one env, and that env's config: `tag:v*` refs, free blue/green ports.
 * With `accessLog`, nginx also writes the JSON access log the agent follows (`<nginx dir>/access.json`). With
 * `service`, the app's one web service of that name (`services`): the ports are its, and nginx proxies to its
 * upstream (`<upstreamName>_<service>`).
 */
export async function envBehindNginx(
  t: Test,
  dir: string,
  name: string,
  extra: Record<string, unknown> = {},
  options: { accessLog?: boolean; service?: string; retryOnStandby?: boolean } = {},
) {
  const [nginxPort, blue, green] = (await freePorts(3)) as [number, number, number]
  const nginxDir = join(dir, `nginx-${name}`)
  const upstreamFile = join(nginxDir, 'upstream.conf')
  const upstreamName = `sample_${name.replace(/-/g, '_')}`
  const accessLog = options.accessLog ? join(nginxDir, 'access.json') : undefined
  const { service } = options
  const nginx = await startNginx(nginxDir, {
    port: nginxPort,
    upstreamFile,
    upstreamName: service === undefined ? upstreamName : `${upstreamName}_${service}`,
    accessLog,
    retryOnStandby: options.retryOnStandby,
  })
  t.teardown(() => nginx.stop())
  const env = {
    ref: 'tag:v*',
    ports: service === undefined ? [blue, green] : { [service]: [blue, green] },
    proxy: {
      upstreamFile,
      upstreamName,
      test: nginx.testCommand,
      reload: nginx.reloadCommand,
      pidFile: join(nginxDir, 'nginx.pid'),
      drainMs: 300,
      ...(accessLog ? { accessLog } : {}),
    },
    ...extra,
  }
  return { nginx, env }
}

/** The sample app's config with checks fast enough for tests; `overrides` replace whole keys. */
export function sampleAppConfig(repo: string, envs: Record<string, unknown>, overrides: Record<string, unknown> = {}) {
  return {
    repo,
    migrate: { command: ['sh', '/migrate.sh'], timeoutSec: 30 },
    health: { path: '/healthz', intervalMs: 100, timeoutMs: 1000, healthyAfter: 2, deadlineSec: 5 },
    smoke: [{ path: '/version', expectStatus: 200 }],
    observe: { seconds: 5, intervalMs: 200, maxFailures: 2 },
    keepReleases: 3,
    envs,
    ...overrides,
  }
}

/**
 * What `nginx` serves at /version: the release that is live behind it. A keep-alive connection an old nginx worker
 * closes at a reload, before any answer, is asked again once, as any HTTP client may (and test/helpers/load.ts does).
 */
export async function servedVersion(nginx: NginxInstance): Promise<string> {
  const url = `http://127.0.0.1:${nginx.port}/version`
  const res = await fetch(url).catch((err: unknown) => {
    if ((err as { cause?: { code?: string } }).cause?.code !== 'UND_ERR_SOCKET') throw err
    return fetch(url)
  })
  return (await res.text()).trim()
}

/** The files of one sample release (Dockerfile, web root, /migrate.sh), for repos with releases of a test's own. */
export const sampleReleaseFiles = release
