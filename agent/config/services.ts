// An env's services as the deploy side sees them: every service with its checks (the app's, key by key, where the
// service sets none), its blue/green ports and its nginx upstream. An app without `services` is one web service
// named `web` whose ports, upstream and checks are exactly the app's and env's.
import type { AppConfig } from './schema.js'
import type { Target } from './targets.js'

/** The service of an app without `services`, and of containers created before services existed. */
export const WEB_SERVICE = 'web'
/** A worker without a Docker HEALTHCHECK is healthy once it has run, not restarting, this long. */
export const DEFAULT_START_SEC = 5

export type ServiceKind = 'web' | 'worker'
export type WorkerOrder = 'start-first' | 'stop-first'

export interface ServiceSpec {
  name: string
  kind: ServiceKind
  /** Position in the config: the first web service is the group's primary (its port names the slot). */
  index: number
  /** `[blue, green]` of a web service; null for a worker. */
  ports: [number, number] | null
  /** The nginx upstream of a web service; null for a worker. */
  upstream: string | null
  /** Null: the image's CMD. */
  command: string[] | null
  /** The service's own image build; null: it runs the app's image. */
  build: AppConfig['build'] | null
  /** Workers only. */
  order: WorkerOrder | null
  stopTimeoutSec: number
  health: AppConfig['health'] & { startSec: number }
  smoke: AppConfig['smoke']
  observe: AppConfig['observe']
}

function upstreamPrefix(target: Target): string {
  return target.envConfig.proxy?.upstreamName ?? `${target.app}_${target.env}`.replace(/-/g, '_')
}

/** Every service of the target's app in config order, the primary (the first web service) first. */
export function servicesOf(target: Target): ServiceSpec[] {
  const { appConfig: app, envConfig: env } = target
  if (!app.services) {
    return [
      {
        name: WEB_SERVICE,
        kind: 'web',
        index: 0,
        ports: Array.isArray(env.ports) ? env.ports : (Object.values(env.ports ?? {})[0] ?? null),
        upstream: upstreamPrefix(target),
        command: null,
        build: null,
        order: null,
        stopTimeoutSec: 10,
        health: { ...app.health, startSec: DEFAULT_START_SEC },
        smoke: app.smoke,
        observe: app.observe,
      },
    ]
  }
  const portMap = Array.isArray(env.ports) ? {} : (env.ports ?? {})
  const specs = Object.entries(app.services).map(([name, s], index): ServiceSpec => {
    const web = s.kind === 'web'
    const defined = <T extends object>(o: T | undefined) => Object.fromEntries(Object.entries(o ?? {}).filter(([, v]) => v !== undefined))
    return {
      name,
      kind: s.kind,
      index,
      ports: web ? (portMap[name] ?? null) : null,
      upstream: web ? `${upstreamPrefix(target)}_${name.replace(/-/g, '_')}` : null,
      command: s.command ?? null,
      build: s.build ?? null,
      order: web ? null : (s.order ?? 'start-first'),
      stopTimeoutSec: s.stopTimeoutSec,
      health: { ...app.health, startSec: DEFAULT_START_SEC, ...defined(s.health) },
      smoke: s.smoke ?? (web ? app.smoke : []),
      observe: { ...app.observe, ...defined(s.observe) },
    }
  })
  // The primary first (the first web service), the rest in config order.
  const primary = specs.find((s) => s.kind === 'web')
  return primary ? [primary, ...specs.filter((s) => s !== primary)] : specs
}

/** An app whose services are all workers: no ports, no nginx; its groups are named by their deploy ids. */
export function isWorkerOnly(target: Target): boolean {
  return servicesOf(target).every((s) => s.kind === 'worker')
}

/** The primary web service's `[blue, green]`: the slot every web service of a release shares. */
export function primaryPorts(target: Target): [number, number] {
  const ports = servicesOf(target)[0]?.ports
  if (!ports) throw new Error(`${target.app}/${target.env} has no web service`)
  return ports
}

/** Every web port of an env, both slots of every web service. */
export function envPorts(env: Pick<Target['envConfig'], 'ports'>): number[] {
  return Array.isArray(env.ports) ? env.ports : Object.values(env.ports ?? {}).flat()
}

/** The web services' upstreams, primary first: what the env's one upstream file holds. */
export function upstreamsOf(target: Target): Array<{ name: string; ports: [number, number] }> {
  return servicesOf(target).flatMap((s) => (s.upstream && s.ports ? [{ name: s.upstream, ports: s.ports }] : []))
}
