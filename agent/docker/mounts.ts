// The host side of `volumes`: before a container is created, each bind's host path must exist (Docker would
// otherwise create it, owned by root, where the app cannot write) and, symlinks resolved, must not be the Docker
// socket or a directory holding it. The resolved path is what is mounted, so what was checked is what the app gets.
import { realpath } from 'node:fs/promises'
import { dockerSocketMessage, exposesDockerSocket, volumeSpec } from '../config/volumes.js'
import { AgentError } from '../errors.js'
import type { ContainerSettings, VolumeMount } from './types.js'

/** A volume that cannot be mounted as configured: nothing was created. */
export class VolumeError extends AgentError {
  constructor(message: string) {
    super('volume_unavailable', 422, message)
  }
}

/** The HostConfig.Mounts entry Docker takes. `bind` mounts of a missing source fail in Docker too, never create it. */
export interface DockerMount {
  Type: 'bind' | 'volume'
  Source: string
  Target: string
  ReadOnly: boolean
}

/**
 * A bind's host path with its symlinks resolved, or the problem with it. `missing` tells a path that does not exist
 * (yet) from one that must never be mounted.
 */
export async function resolveHostPath(
  mount: VolumeMount,
  allowDockerSocket: boolean,
): Promise<{ path: string } | { problem: string; missing: boolean }> {
  let path: string
  try {
    path = await realpath(mount.source)
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code ?? String(err)
    return code === 'ENOENT'
      ? { problem: `host path "${mount.source}" does not exist; create it, owned by the user the app runs as`, missing: true }
      : { problem: `host path "${mount.source}" cannot be read (${code})`, missing: false }
  }
  if (!allowDockerSocket && exposesDockerSocket(path)) {
    const via = path === mount.source ? '' : ` (a symlink to ${path})`
    return { problem: `${dockerSocketMessage(mount.source)}${via}`, missing: false }
  }
  return { path }
}

/** The Mounts of a container with these settings; throws VolumeError naming every volume that cannot be mounted. */
export async function dockerMounts(settings: ContainerSettings): Promise<DockerMount[]> {
  const problems: string[] = []
  const mounts: DockerMount[] = []
  for (const m of settings.volumes ?? []) {
    let source = m.source
    if (m.kind === 'bind') {
      const resolved = await resolveHostPath(m, settings.allowDockerSocket === true)
      if ('problem' in resolved) {
        problems.push(`volume "${volumeSpec(m)}": ${resolved.problem}`)
        continue
      }
      source = resolved.path
    }
    mounts.push({ Type: m.kind, Source: source, Target: m.target, ReadOnly: m.readOnly })
  }
  if (problems.length > 0) throw new VolumeError(problems.join('; '))
  return mounts
}
