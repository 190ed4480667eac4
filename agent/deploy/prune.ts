// What to delete after a successful deploy, decided as a pure plan: `keepReleases` images of the env stay — the
// live release, the standby (the newest other container: the one-second rollback), then the newest others —
// and containers are kept only when they are the live one or the standby.
import type { EnvImage, Instance } from './runtime.js'

export interface PrunePlan {
  containers: Array<{ id: string; release: string; reason: string }>
  images: Array<{ ref: string; release: string; reason: string }>
}

export function planPrune(input: {
  images: EnvImage[]
  instances: Instance[]
  livePort: number | null
  /** An app of workers only: its groups have no port, the live one is named by its deploy id. */
  liveDeployId?: string
  keepReleases: number
}): PrunePlan {
  const { instances, livePort, keepReleases } = input
  const live = instances.find((i) => (i.port === null ? i.deployId === input.liveDeployId : i.port === livePort) && i.running)
  // instances come newest first: the first one on the other port (any other group of workers) is the quick
  // rollback target.
  const standby = instances.find((i) => (i.port === null || i.port !== livePort) && i !== live)
  const keptContainers = new Set([live, standby].filter((i): i is Instance => i !== undefined))
  const containers = instances
    .filter((i) => !keptContainers.has(i) && !i.running)
    .map((i) => ({ id: i.id, release: i.release, reason: 'stopped and superseded' }))

  // The live and standby releases always stay; the newest others fill the remaining keepReleases slots.
  const keptReleases = new Set<string>([...keptContainers].map((i) => i.release))
  for (const i of instances) if (i.running) keptReleases.add(i.release)
  const byNewest = [...input.images].sort((a, b) => b.created.getTime() - a.created.getTime())
  for (const img of byNewest) {
    if (keptReleases.size >= keepReleases) break
    keptReleases.add(img.release)
  }
  const images = byNewest
    .filter((img) => !keptReleases.has(img.release))
    .map((img) => ({ ref: img.ref, release: img.release, reason: `beyond keepReleases (${keepReleases})` }))
  return { containers, images }
}
