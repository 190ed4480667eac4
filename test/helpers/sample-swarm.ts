// The sample apps of the swarm tests: busybox httpd on every address of its node (the worker's tasks answer on its
// own address), stopping on TERM, in a git repo with one tag per behaviour — one web service, or (swarm-services) an
// api with a start-first worker and a stop-first beat; and what the swarm has of an app.
import type { AgentRig } from './agent-rig.js'
import { makeGitRepo } from './git.js'
import { sampleReleaseFiles } from './sample-app.js'
import { LOOP } from './sample-services.js'

export const SWARM_TAGS = {
  v1: 'v1.0.0',
  v2: 'v1.1.0',
  unhealthyOnWorker: 'v1.2.0',
  failsOnWorker: 'v1.3.0',
  v3: 'v1.4.0',
  slowBuild: 'v2.0.0',
  /** Its command prints why and exits at once, on every node: a crash loop. */
  crashes: 'v2.1.0',
} as const

/** What the `crashes` release prints before it exits. */
export const CRASH_WORDS = 'web: cannot reach the database at db:5432'

/** httpd on every address of the node, stopping on TERM; `before` runs first. */
const serve = (before = '') => `${before}trap 'exit 0' TERM; httpd -f -p $PORT -h /www & wait`

/** The releases; `onWorker` runs on the worker node only (known by its address); its text ends in `;` or `&`. */
export function makeSwarmRepo(dir: string, workerAddr: string) {
  const onWorker = (what: string) => `if ip addr | grep -q 'inet ${workerAddr}/'; then ${what} fi; `
  return makeGitRepo(dir, [
    { files: sampleReleaseFiles({ command: serve() }), tag: SWARM_TAGS.v1, annotated: true },
    { files: sampleReleaseFiles({ command: serve() }), tag: SWARM_TAGS.v2 },
    { files: sampleReleaseFiles({ command: serve(onWorker('rm /www/healthz;')) }), tag: SWARM_TAGS.unhealthyOnWorker },
    { files: sampleReleaseFiles({ command: serve(onWorker('(sleep 3; rm /www/healthz) &')) }), tag: SWARM_TAGS.failsOnWorker },
    { files: sampleReleaseFiles({ command: serve() }), tag: SWARM_TAGS.v3 },
    { files: sampleReleaseFiles({ command: serve(), extra: 'RUN echo "building slowly" && sleep 4' }), tag: SWARM_TAGS.slowBuild },
    { files: sampleReleaseFiles({ command: `echo "${CRASH_WORDS}" >&2; exit 1` }), tag: SWARM_TAGS.crashes },
  ])
}

/** `<colour> <running>/<replicas>` of each of the app's swarm services (web service `web`), sorted. */
export async function swarmServices(agent: AgentRig): Promise<string[]> {
  const format = '{{.Name}} {{.Replicas}}'
  const lines = (await agent.docker(['service', 'ls', '--filter', `label=deploy-agent.app=${agent.app}`, '--format', format])).split('\n')
  return lines
    .filter(Boolean)
    .map((l) => l.replace(`${agent.app}_${agent.env}_web_`, '').replace(' (max 1 per node)', ''))
    .sort()
}

export const SWARM_SERVICE_TAGS = {
  v1: 'v1.0.0',
  v2: 'v1.1.0',
  /** Its worker exits at once: the candidate never runs. */
  workerExits: 'v1.2.0',
  /** Its api stops answering /healthz 4 s after it starts: observe rolls every service back. */
  failsAfterSwitch: 'v1.3.0',
} as const

/**
 * The app of several services on a swarm, from one image: the web service `api` (httpd on every address of its
 * node), a start-first `worker` and a stop-first `beat` (TERM-trapping sleep loops), each its own script.
 */
export function makeSwarmServicesRepo(dir: string) {
  const files = (api = serve(), worker = LOOP) => ({
    ...sampleReleaseFiles({ command: 'sh /app/api.sh', extra: 'COPY api.sh worker.sh beat.sh /app/' }),
    'api.sh': `${api}\n`,
    'worker.sh': worker,
    'beat.sh': LOOP,
  })
  return makeGitRepo(dir, [
    { files: files(), tag: SWARM_SERVICE_TAGS.v1, annotated: true },
    { files: files(), tag: SWARM_SERVICE_TAGS.v2 },
    { files: files(serve(), 'echo "worker: cannot connect to the queue" >&2\nexit 3\n'), tag: SWARM_SERVICE_TAGS.workerExits },
    { files: files(serve('(sleep 4; rm /www/healthz) & ')), tag: SWARM_SERVICE_TAGS.failsAfterSwitch },
  ])
}

/** The `services` of makeSwarmServicesRepo's app. */
export const SWARM_SERVICES = {
  api: { kind: 'web', command: ['sh', '/app/api.sh'] },
  worker: { kind: 'worker', command: ['sh', '/app/worker.sh'], health: { startSec: 1 }, stopTimeoutSec: 5 },
  beat: { kind: 'worker', command: ['sh', '/app/beat.sh'], order: 'stop-first', health: { startSec: 1 }, stopTimeoutSec: 5 },
}
