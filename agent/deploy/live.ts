// The live release of an env as status, metrics and rollbacks report it.
import { membersOf, type Instance } from './runtime.js'

export interface LiveRelease {
  release: string
  commit: string
  /** The primary web service's port (the slot); null for an app of workers only. */
  port: number | null
  deployId: string
  since: string
  /** Each service of a release of several (absent for an app's one `web` container). */
  services?: Array<{ name: string; kind: 'web' | 'worker'; port: number | null; container: string; nodes?: string[] }>
  /** A swarm env: the addresses of the nodes running the primary web service's tasks (nginx lists them). */
  nodes?: string[]
}

export function liveRelease(instance: Instance, since: Date = new Date()): LiveRelease {
  const members = membersOf(instance)
  const several = members.some((m) => m.service !== 'web')
  const primary = members[0]
  const nodes = (m: (typeof members)[number]) => (m.hosts ? { nodes: m.hosts } : {})
  return {
    release: instance.release,
    commit: instance.commit,
    port: instance.port,
    deployId: instance.deployId,
    since: since.toISOString(),
    ...(several
      ? { services: members.map((m) => ({ name: m.service, kind: m.kind, port: m.port, container: m.id.slice(0, 12), ...nodes(m) })) }
      : {}),
    ...(primary ? nodes(primary) : {}),
  }
}
