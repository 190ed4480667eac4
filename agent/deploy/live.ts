// The live release of an env as status, metrics and rollbacks report it.
import type { Instance } from './runtime.js'

export interface LiveRelease {
  release: string
  commit: string
  port: number
  deployId: string
  since: string
}

export function liveRelease(instance: Instance, since: Date = new Date()): LiveRelease {
  return {
    release: instance.release,
    commit: instance.commit,
    port: instance.port,
    deployId: instance.deployId,
    since: since.toISOString(),
  }
}
