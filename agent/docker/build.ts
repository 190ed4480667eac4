// Image builds: the engine answers 200 and then reports success or failure inside a JSON-lines stream, so the
// outcome is read from the stream's events, never from how the stream ends.
import type Docker from 'dockerode'
import { BuildError, engineMessage } from './errors.js'
import { followEngineEvents, type EngineEvent } from './events.js'
import { capLine, LineSplitter, MAX_LINE_CHARS, Tail } from './lines.js'
import { BACKGROUND_CPU_SHARES } from './types.js'

export interface BuildImageOptions {
  /** A tar stream of the build context (e.g. `git archive` output); consumed, and destroyed on failure. */
  context: NodeJS.ReadableStream
  dockerfile: string
  tag: string
  buildArgs: Record<string, string>
  labels: Record<string, string>
  timeoutMs: number
  onLine: (line: string) => void
  signal?: AbortSignal
  /** The CPU weight of the build's step containers; default BACKGROUND_CPU_SHARES. */
  cpuShares?: number
}

const TAIL_LINES = 20

interface BuildEvent extends EngineEvent {
  stream?: unknown
  status?: unknown
}

/**
 * Reads the build's JSON lines, passing each output line to `emit`; resolves with the engine's error message
 * (null when none was reported) and rejects when the stream breaks or is destroyed early.
 */
export function followBuild(stream: NodeJS.ReadableStream, emit: (line: string) => void): Promise<string | null> {
  const text = new LineSplitter(MAX_LINE_CHARS)
  const emitText = (lines: string[]): void => {
    for (const line of lines) if (line.trim() !== '') emit(line.trim())
  }
  return followEngineEvents<BuildEvent>(stream, 'build', {
    event: (event) => {
      if (typeof event.stream === 'string') emitText(text.push(event.stream))
      else if (typeof event.status === 'string') emitText([capLine(event.status)])
    },
    text: (line) => emitText([line]),
    done: () => emitText(text.flush()),
  })
}

/** Builds `tag` from a tar context with host networking; returns the image id or throws BuildError. */
export async function buildImage(docker: Docker, opts: BuildImageOptions): Promise<{ imageId: string }> {
  const tail = new Tail(TAIL_LINES)
  const emit = (line: string): void => {
    tail.push(line)
    try {
      opts.onLine(line)
    } catch {
      // a failing log sink must not break the build
    }
  }
  const controller = new AbortController()
  let stopped: 'timeout' | 'cancelled' | null = null
  let stream: NodeJS.ReadableStream | null = null
  const stop = (why: 'timeout' | 'cancelled'): void => {
    if (stopped !== null) return
    stopped = why
    // Aborting the request (or destroying its answer) makes the engine cancel the build and, with forcerm,
    // remove its intermediate container.
    controller.abort()
    ;(stream as (NodeJS.ReadableStream & { destroy?: () => void }) | null)?.destroy?.()
  }
  const timer = setTimeout(() => stop('timeout'), opts.timeoutMs)
  const onAbort = (): void => stop('cancelled')
  opts.signal?.addEventListener('abort', onAbort, { once: true })
  if (opts.signal?.aborted === true) stop('cancelled')

  let engineError: string | null
  try {
    if (stopped !== null) throw new Error('cancelled before start')
    stream = await docker.buildImage(opts.context, {
      t: opts.tag,
      dockerfile: opts.dockerfile,
      buildargs: opts.buildArgs,
      labels: opts.labels,
      networkmode: 'host',
      // The classic builder runs each RUN step in a container of this weight: the live release keeps its CPU.
      cpushares: opts.cpuShares ?? BACKGROUND_CPU_SHARES,
      rm: true,
      forcerm: true,
      abortSignal: controller.signal,
    })
    engineError = await followBuild(stream, emit)
  } catch (err) {
    const lines = tail.lines()
    if (stopped === 'timeout') throw new BuildError('build_timeout', `build of ${opts.tag} timed out after ${opts.timeoutMs} ms`, lines)
    if (stopped === 'cancelled') throw new BuildError('build_cancelled', `build of ${opts.tag} was cancelled`, lines)
    throw new BuildError('build_failed', `build of ${opts.tag} failed: ${engineMessage(err)}`, lines)
  } finally {
    clearTimeout(timer)
    opts.signal?.removeEventListener('abort', onAbort)
    const context = opts.context as NodeJS.ReadableStream & { destroy?: () => void; readableEnded?: boolean }
    if (context.readableEnded !== true) context.destroy?.()
  }
  if (engineError !== null) throw new BuildError('build_failed', `build of ${opts.tag} failed: ${engineError}`, tail.lines())

  try {
    const image = await docker.getImage(opts.tag).inspect()
    return { imageId: image.Id }
  } catch (err) {
    throw new BuildError(
      'build_failed',
      `build of ${opts.tag} reported success but the image is missing: ${engineMessage(err)}`,
      tail.lines(),
    )
  }
}
