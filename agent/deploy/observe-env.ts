// What runs in an env, read from the engine's labels and nginx's upstream file (an env of workers only: the agent's
// hand-over record): the one place that decides which instance is live. The pipeline, recovery, the keeper and
// status all start from this view.
import { isWorkerOnly, primaryPorts } from '../config/services.js'
import type { Target } from '../config/targets.js'
import type { UpstreamSwitch } from '../proxy/nginx.js'
import type { HandOver } from './handover.js'
import { placementOf, type Instance, type Runtime } from './runtime.js'

/** What says which group of an env is live: nginx's upstream file, or for an app of workers only the hand-over record. */
export type EnvSwitch = UpstreamSwitch | HandOver

export interface EnvView {
  /** Every release group of the env, running or stopped, newest first. */
  instances: Instance[]
  /** The port nginx's upstream names, or null before the first switch (and in a worker-only env). */
  routedPort: number | null
  /** A worker-only env: the deploy id of the group the hand-over record names (absent or null otherwise). */
  handedTo?: string | null
  /** The running instance on the routed port (the running group handed the work). */
  live: Instance | null
  /** Where a candidate goes: the primary's port of the slot nginx does not route to; null for workers (no port). */
  idlePort: number | null
}

/** The env's switch, from the deploy side's factories: nginx's upstream, or for an app of workers only its hand-over record. */
export function envSwitch(target: Target, from: { router(t: Target): UpstreamSwitch; handOver?(t: Target): HandOver }): EnvSwitch {
  if (!isWorkerOnly(target)) return from.router(target)
  if (!from.handOver) throw new Error(`${target.app}/${target.env} is an app of workers only and no hand-over record was given`)
  return from.handOver(target)
}

function isHandOver(sw: EnvSwitch): sw is HandOver {
  return 'handTo' in sw
}

/**
 * Whether the env's switch names `group`: a web group by its port (the slot), a group of workers only — which has
 * no port — by its deploy id.
 */
export function isRouted(group: Pick<Instance, 'port' | 'deployId'>, at: Pick<EnvView, 'routedPort' | 'handedTo'>): boolean {
  return group.port === null ? group.deployId === at.handedTo : group.port === at.routedPort
}

/**
 * Points the env's switch at `group`: nginx's upstream to its port, or the hand-over record to its deploy id.
 * `standby`: the release it replaces, kept warm as nginx's backup while `group` is observed (nginx only).
 */
export async function routeTo(sw: EnvSwitch, group: Instance, standby?: Instance | null): Promise<void> {
  if (isHandOver(sw)) return sw.handTo(group.deployId)
  if (group.port === null) throw new Error(`release ${group.release} has no web service for nginx to route to`)
  const placement = standby ? placementOf(standby) : undefined
  const backup = standby && standby.port !== null ? { port: standby.port, ...(placement && { placement }) } : undefined
  await sw.switchTo(group.port, placementOf(group), backup)
}

export async function observeEnv(runtime: Runtime, sw: EnvSwitch, target: Target): Promise<EnvView> {
  if (isHandOver(sw)) {
    const [instances, handedTo] = await Promise.all([runtime.instances(target), sw.current()])
    const live = instances.find((i) => isRouted(i, { routedPort: null, handedTo }) && i.running) ?? null
    return { instances, routedPort: null, handedTo, live, idlePort: null }
  }
  const [instances, routedPort] = await Promise.all([runtime.instances(target), sw.currentPort()])
  const [blue, green] = primaryPorts(target)
  return {
    instances,
    routedPort,
    live: instances.find((i) => i.port === routedPort && i.running) ?? null,
    idlePort: routedPort === blue ? green : blue,
  }
}
