// What to delete after a successful deploy, decided as a pure plan: the newest `keepReleases` images of the env
// stay (rollback targets), and so does whatever the live or previous release uses; containers are kept only
// when they are the live one or the newest stopped one on the idle port (the one-second rollback).
import type { ImageSummary } from '../docker/types.js'
import type { Instance } from './runtime.js'
import { LABEL } from './runtime.js'

export interface PrunePlan {
  containers: Array<{ id: string; release: string; reason: string }>
  images: Array<{ ref: string; release: string; reason: string }>
}

export function planPrune(input: { images: ImageSummary[]; instances: Instance[]; livePort: number | null; keepReleases: number }): PrunePlan {
  const { instances, livePort, keepReleases } = input
  const live = instances.find((i) => i.port === livePort && i.running)
  // instances come newest first: the first one on the other port is the quick rollback target.
  const standby = instances.find((i) => i.port !== livePort && i !== live)
  const keptContainers = new Set([live, standby].filter((i): i is Instance => i !== undefined))
  const containers = instances
    .filter((i) => !keptContainers.has(i) && !i.running)
    .map((i) => ({ id: i.id, release: i.release, reason: 'stopped and superseded' }))

  const byNewest = [...input.images].sort((a, b) => b.created.getTime() - a.created.getTime())
  const keptReleases = new Set(byNewest.slice(0, keepReleases).map((img) => img.labels[LABEL.release]))
  for (const i of keptContainers) keptReleases.add(i.release)
  for (const i of instances) if (i.running) keptReleases.add(i.release)
  const images = byNewest
    .filter((img) => !keptReleases.has(img.labels[LABEL.release]))
    .flatMap((img) => img.tags.map((ref) => ({ ref, release: img.labels[LABEL.release] ?? '', reason: `older than the newest ${keepReleases} releases` })))
  return { containers, images }
}
