// The sample app of the swarm tests: busybox httpd on every address of its node (the worker's tasks answer on its
// own address), stopping on TERM, in a git repo with one tag per behaviour; and what the swarm has of an app.
import type { AgentRig } from './agent-rig.js'
import { makeGitRepo } from './git.js'
import { sampleReleaseFiles } from './sample-app.js'

export const SWARM_TAGS = {
  v1: 'v1.0.0',
  v2: 'v1.1.0',
  unhealthyOnWorker: 'v1.2.0',
  failsOnWorker: 'v1.3.0',
  v3: 'v1.4.0',
  slowBuild: 'v2.0.0',
} as const

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
