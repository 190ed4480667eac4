// One app env for pipeline unit tests: a real deploy store and real HTTP probes against loopback servers on the
// blue and green ports, a fake runtime (release v1 live on blue, v2's image kept), router and source repo.
import { createServer } from 'node:http'
import type { Test } from 'tap'
import { parseConfig } from '../../agent/config/load.js'
import { findTarget } from '../../agent/config/targets.js'
import { DeployPipeline, type PipelineDeps } from '../../agent/deploy/pipeline.js'
import type { Instance } from '../../agent/deploy/runtime.js'
import { createLogger } from '../../agent/observability/logger.js'
import { DeployStore } from '../../agent/store/deploys.js'
import { fakeSource, FakeRouter, FakeRuntime, type RuntimeFaults } from './fake-runtime.js'
import { freePorts } from './ports.js'
import { tempDir } from './tmp.js'

export const RIG_COMMIT = 'a'.repeat(40)

export interface PipelineRigOptions {
  /** The app's `health` and `observe`, as YAML flow maps. */
  health?: string
  observe?: string
  /** The status the new release's server answers, asked at each request; 200 by default. */
  newHealth?: () => number
  faults?: RuntimeFaults
  /** The pipeline's traffic hook, made once the runtime exists. */
  watchTraffic?: (runtime: FakeRuntime) => NonNullable<PipelineDeps['watchTraffic']>
}

async function serve(t: Test, port: number, status: () => number): Promise<void> {
  const server = createServer((_req, res) => {
    res.statusCode = status()
    res.end('ok')
  })
  t.teardown(() => new Promise((resolve) => server.close(resolve)))
  await new Promise<void>((resolve) => server.listen(port, '127.0.0.1', resolve))
}

export async function startPipelineRig(t: Test, options: PipelineRigOptions = {}) {
  const dir = await tempDir(t)
  const [blue, green] = (await freePorts(2)) as [number, number]
  await serve(t, blue, () => 200)
  await serve(t, green, options.newHealth ?? (() => 200))
  const yaml = `
audience: a
apps:
  web:
    repo: /srv/web.git
    health: ${options.health ?? '{ path: /healthz, intervalMs: 10, timeoutMs: 500, healthyAfter: 1, deadlineSec: 3 }'}
    smoke: []
    observe: ${options.observe ?? '{ seconds: 1, intervalMs: 20, maxFailures: 0 }'}
    envs:
      production:
        ref: "tag:v*"
        ports: [${blue}, ${green}]
        proxy: { upstreamFile: ${dir}/upstream.conf, drainMs: 0 }
`
  const target = findTarget(parseConfig(yaml, {}, 'a', dir), 'web', 'production')
  const store = await DeployStore.open(dir)
  t.teardown(() => store.close())
  const previous: Instance = {
    id: 'old',
    release: 'v1',
    commit: RIG_COMMIT,
    deployId: 'd_old',
    port: blue,
    image: 'web:production-v1',
    running: true,
    created: new Date(0),
  }
  const runtime = new FakeRuntime([previous], options.faults)
  runtime.keep('v2', RIG_COMMIT)
  const router = new FakeRouter(blue)
  const pipeline = new DeployPipeline({
    store,
    runtime,
    ...fakeSource(RIG_COMMIT),
    router: () => router,
    logger: createLogger({ level: 'silent' }),
    ...(options.watchTraffic && { watchTraffic: options.watchTraffic(runtime) }),
  })
  const deploy = () => store.create({ app: 'web', env: 'production', ref: 'v2', keyId: null })
  return { store, runtime, router, pipeline, target, previous, deploy, routed: () => router.routed, blue, green }
}
