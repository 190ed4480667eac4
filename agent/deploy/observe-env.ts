// What runs in an env, read from the engine's labels and nginx's upstream file: the one place that decides which
// instance is live. The pipeline, recovery, the keeper and status all start from this view.
import { primaryPorts } from '../config/services.js'
import type { Target } from '../config/targets.js'
import type { UpstreamSwitch } from '../proxy/nginx.js'
import type { Instance, Runtime } from './runtime.js'

export interface EnvView {
  /** Every web instance of the env, running or stopped, newest first. */
  instances: Instance[]
  /** The port nginx's upstream names, or null before the first switch. */
  routedPort: number | null
  /** The running instance on the routed port. */
  live: Instance | null
  /** Where a candidate goes: the primary's port of the slot nginx does not route to. */
  idlePort: number
}

export async function observeEnv(runtime: Runtime, router: UpstreamSwitch, target: Target): Promise<EnvView> {
  const [instances, routedPort] = await Promise.all([runtime.instances(target), router.currentPort()])
  const [blue, green] = primaryPorts(target)
  return {
    instances,
    routedPort,
    live: instances.find((i) => i.port === routedPort && i.running) ?? null,
    idlePort: routedPort === blue ? green : blue,
  }
}
