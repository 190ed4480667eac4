// `volumes: ["/srv/shop/uploads:/app/uploads", "cache:/app/cache:ro"]`: what an app's containers mount. Parsed and
// checked here as pure decisions; docker/mounts.ts looks at the host itself (at check-config and before each container).
import { z } from 'zod'
import type { VolumeMount } from '../docker/types.js'

/** Docker's rule for volume names (its `RestrictedNamePattern`): two or more characters. */
const VOLUME_NAME = /^[a-zA-Z0-9][a-zA-Z0-9_.-]+$/

/**
 * Host paths that hand a container the Docker daemon (root on the host): the sockets themselves and every directory
 * holding one. `/var/run` is a symlink to `/run` on current systems; both are listed so that neither spelling
 * passes, and symlinks of existing host paths are resolved before this check (docker/mounts.ts).
 */
export const DOCKER_SOCKET_PATHS: ReadonlySet<string> = new Set([
  '/',
  '/run',
  '/var',
  '/var/run',
  '/run/docker.sock',
  '/var/run/docker.sock',
])

/** What is wrong with an absolute path as a mount path, or null. `..` is refused, not resolved: say the real path. */
function pathProblem(path: string): string | null {
  if (!path.startsWith('/')) return 'must be an absolute path'
  if (path.split('/').includes('..')) return 'must not contain ".." segments'
  if (/[\0\n,]/.test(path)) return 'must not contain NUL, newline or comma characters'
  return null
}

/** `//a/b/` → `/a/b`: the form paths are compared (and mounted) in. */
export function cleanPath(path: string): string {
  const parts = path.split('/').filter((p) => p !== '' && p !== '.')
  return `/${parts.join('/')}`
}

/** `SOURCE:TARGET[:ro|:rw]` → a mount, or the problem with it (phrased to follow the key path). */
export function parseVolume(spec: string): VolumeMount | { problem: string } {
  const parts = spec.split(':')
  const [source = '', target = '', mode = 'rw'] = parts
  if (parts.length < 2 || parts.length > 3 || source === '' || target === '')
    return { problem: 'must be "SOURCE:TARGET" or "SOURCE:TARGET:ro" (SOURCE an absolute host path or a volume name)' }
  if (mode !== 'ro' && mode !== 'rw') return { problem: `mode "${mode}" must be "ro" or "rw"` }
  let kind: VolumeMount['kind'] = 'volume'
  if (source.includes('/') || source.startsWith('.')) {
    const problem = pathProblem(source)
    if (problem !== null) return { problem: `host path "${source}" ${problem} (or name a volume)` }
    kind = 'bind'
  } else if (!VOLUME_NAME.test(source)) {
    return { problem: `volume name "${source}" must match ${VOLUME_NAME} (or be an absolute host path)` }
  }
  const targetProblem = pathProblem(target)
  if (targetProblem !== null) return { problem: `container path "${target}" ${targetProblem}` }
  if (cleanPath(target) === '/') return { problem: 'container path must not be "/"' }
  return { kind, source: kind === 'bind' ? cleanPath(source) : source, target: cleanPath(target), readOnly: mode === 'ro' }
}

/** Whether mounting this host path hands the container the Docker socket. */
export function exposesDockerSocket(hostPath: string): boolean {
  return DOCKER_SOCKET_PATHS.has(cleanPath(hostPath))
}

export const dockerSocketMessage = (path: string) =>
  `host path "${path}" is or holds the Docker socket (root on the host); set allowDockerSocket: true to allow it`

/** The socket rule for one list of mounts: the problems with their list index. */
export function dockerSocketProblems(mounts: readonly VolumeMount[], allowDockerSocket: boolean): { index: number; message: string }[] {
  if (allowDockerSocket) return []
  return mounts.flatMap((m, index) =>
    m.kind === 'bind' && exposesDockerSocket(m.source) ? [{ index, message: dockerSocketMessage(m.source) }] : [],
  )
}

/**
 * `volumes`: a list of `SOURCE:TARGET[:ro|:rw]`, each parsed, no container path twice. The Docker socket rule needs
 * `allowDockerSocket`, so the owner of the list applies it (dockerSocketProblems). Exported for per-service use.
 */
export const volumesSchema = z
  .array(z.string({ error: 'must be a string "SOURCE:TARGET[:ro]"' }), { error: 'must be a list of "SOURCE:TARGET[:ro]" strings' })
  .transform((specs, ctx) => {
    const mounts: VolumeMount[] = []
    const seen = new Map<string, number>()
    specs.forEach((spec, i) => {
      const parsed = parseVolume(spec)
      if ('problem' in parsed) return ctx.addIssue({ code: 'custom', path: [i], message: parsed.problem })
      const first = seen.get(parsed.target)
      if (first !== undefined)
        ctx.addIssue({ code: 'custom', path: [i], message: `container path "${parsed.target}" is already mounted by volumes[${first}]` })
      seen.set(parsed.target, i)
      mounts.push(parsed)
    })
    return mounts
  })

/** The volume as written in the config, for messages: `/srv/x:/app/x:ro`. */
export function volumeSpec(m: VolumeMount): string {
  return `${m.source}:${m.target}${m.readOnly ? ':ro' : ''}`
}
