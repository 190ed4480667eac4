// Pulling a prebuilt image by tag: like a build, the engine answers 200 and then reports progress, the manifest
// digest and any failure inside a JSON-lines stream. The digest is read from the stream (`Digest: sha256:…`),
// the one place that says which manifest this pull resolved the tag to.
import type Docker from 'dockerode'
import { engineMessage, PullError } from './errors.js'
import { followEngineEvents, type EngineEvent } from './events.js'
import { capLine } from './lines.js'

export interface RegistryAuth {
  username: string
  password: string
  /** The registry host (`registry.example.com`, `127.0.0.1:5000`), or Docker Hub's index URL. */
  serveraddress: string
}

export interface PullImageOptions {
  /** The image name without tag (`registry.example.com/team/api`). */
  image: string
  tag: string
  auth?: RegistryAuth
  timeoutMs: number
  /** One line per layer step (progress bars are left out). */
  onLine: (line: string) => void
}

export const DIGEST = /^sha256:[0-9a-f]{64}$/
const DOCKER_HUB = 'https://index.docker.io/v1/'

/** The registry an image name points to, as the engine's auth config names it. */
export function registryOf(image: string): string {
  const first = image.split('/')[0] ?? ''
  const isHost = image.includes('/') && (first.includes('.') || first.includes(':') || first === 'localhost')
  return isHost && first !== 'docker.io' && first !== 'index.docker.io' ? first : DOCKER_HUB
}

interface PullEvent extends EngineEvent {
  id?: unknown
  status?: unknown
  progressDetail?: { total?: unknown }
}

/** Reads the pull's events; resolves with the digest it reported, or the engine's error. */
async function followPull(
  stream: NodeJS.ReadableStream,
  emit: (line: string) => void,
): Promise<{ digest: string | null; error: string | null }> {
  let digest: string | null = null
  const error = await followEngineEvents<PullEvent>(stream, 'pull', {
    event: (event) => {
      // Progress bars are left out; an error event has no status and settles the outcome.
      if (typeof event.status !== 'string' || event.progressDetail?.total !== undefined) return
      const found = /^Digest: (sha256:[0-9a-f]{64})$/.exec(event.status)
      if (found) digest = found[1] as string
      emit(capLine(typeof event.id === 'string' ? `${event.id}: ${event.status}` : event.status))
    },
    text: emit,
  })
  return { digest, error }
}

/** The registry refused the credentials (or wanted some): its words, as pulls and pushes report them. */
export function isUnauthorized(message: string): boolean {
  return /unauthorized|authentication required|no basic auth credentials|denied/i.test(message)
}

/** What the registry's answer means for the operator: credentials, a missing image, or anything else. */
function pullErrorCode(message: string): 'registry_unauthorized' | 'image_not_found' | 'pull_failed' {
  if (isUnauthorized(message)) return 'registry_unauthorized'
  if (/manifest unknown|not found|does not exist/i.test(message)) return 'image_not_found'
  return 'pull_failed'
}

/** Pulls `image:tag`; answers the manifest digest it resolved to and the local image id. Throws PullError. */
export async function pullImage(docker: Docker, opts: PullImageOptions): Promise<{ digest: string; imageId: string }> {
  const ref = `${opts.image}:${opts.tag}`
  // The password must never reach a message, even if an engine or proxy echoed it.
  const clean = (text: string) => (opts.auth && opts.auth.password !== '' ? text.replaceAll(opts.auth.password, '[redacted]') : text)
  const fail = (message: string): never => {
    // dockerode's own prefix says nothing the engine's words do not.
    const text = clean(message).replace(/^\(HTTP code \d+\) [a-z ]+ - /, '')
    const code = pullErrorCode(text)
    const hint =
      code === 'registry_unauthorized'
        ? opts.auth
          ? ` (as user ${opts.auth.username}: check registryAuth)`
          : ' (no registryAuth is set)'
        : ''
    throw new PullError(code, `pull of ${ref} from ${registryOf(opts.image)} failed: ${text}${hint}`)
  }
  const emit = (line: string) => {
    try {
      opts.onLine(clean(line))
    } catch {
      // a failing log sink must not break the pull
    }
  }
  const controller = new AbortController()
  let timedOut = false
  let stream: NodeJS.ReadableStream | null = null
  const timer = setTimeout(() => {
    timedOut = true
    controller.abort()
    ;(stream as (NodeJS.ReadableStream & { destroy?: () => void }) | null)?.destroy?.()
  }, opts.timeoutMs)
  let result: { digest: string | null; error: string | null }
  try {
    stream = (await docker.createImage({
      fromImage: opts.image,
      tag: opts.tag,
      abortSignal: controller.signal,
      ...(opts.auth && { authconfig: { ...opts.auth } }),
    })) as NodeJS.ReadableStream
    result = await followPull(stream, emit)
  } catch (err) {
    if (timedOut) throw new PullError('pull_timeout', `pull of ${ref} timed out after ${opts.timeoutMs} ms`)
    return fail(engineMessage(err))
  } finally {
    clearTimeout(timer)
  }
  if (result.error !== null) return fail(result.error)
  let inspected: Docker.ImageInspectInfo
  try {
    inspected = await docker.getImage(ref).inspect()
  } catch (err) {
    return fail(`the engine reported success but the image is missing: ${engineMessage(err)}`)
  }
  // Without the stream's digest line (an engine that words it otherwise), the repo digest of this name is the answer.
  const digest = result.digest ?? repoDigestOf(inspected.RepoDigests ?? [], opts.image)
  if (digest === null) return fail('the engine did not report the manifest digest')
  return { digest, imageId: inspected.Id }
}

function repoDigestOf(repoDigests: string[], image: string): string | null {
  const familiar = image.replace(/^(docker\.io|index\.docker\.io)\/(library\/(?=[^/]+$))?/, '')
  const found = repoDigests.filter((d) => d.startsWith(`${familiar}@`)).map((d) => d.slice(familiar.length + 1))
  return found.length === 1 && DIGEST.test(found[0] as string) ? (found[0] as string) : null
}
