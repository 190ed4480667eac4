// Log output of the engine (a container's, a service's): multiplexed frames read as timed lines.
import { StringDecoder } from 'node:string_decoder'
import { callEngine, toDockerError } from './errors.js'
import { FrameReader, LineSplitter, MAX_LINE_CHARS, splitTimestamp, type LogStream } from './lines.js'

/**
 * Output (stdout and stderr, multiplexed) as lines with the engine's time of each: the last `tail` lines since
 * `since` (unix seconds), then, with `follow`, new lines until the source ends or `signal` aborts. Each line is cut
 * at MAX_LINE_CHARS. `logs` asks the engine (a container's logs, a service's).
 */
export async function* logLines(
  what: string,
  logs: (options: Record<string, unknown>) => Promise<unknown>,
  options: ContainerLogOptions,
): AsyncGenerator<ContainerLogLine> {
  const { tail, since, follow, signal } = options
  const base = { stdout: true, stderr: true, timestamps: true, tail, ...(since !== undefined ? { since } : {}) }
  const source: AsyncIterable<Buffer> | Buffer[] = follow
    ? ((await callEngine(what, () => logs({ ...base, follow: true }))) as NodeJS.ReadableStream & AsyncIterable<Buffer>)
    : [(await callEngine(what, () => logs({ ...base, follow: false }))) as Buffer]
  const stop = () => (source as { destroy?: () => void }).destroy?.()
  if (signal?.aborted) return stop()
  signal?.addEventListener('abort', stop, { once: true })
  // One splitter and decoder per stream: a line (or a UTF-8 character) may span frames. The time prefix is
  // allowed on top of the cap.
  const frames = new FrameReader()
  const split = { stdout: new LineSplitter(MAX_LINE_CHARS + 40), stderr: new LineSplitter(MAX_LINE_CHARS + 40) }
  const text = { stdout: new StringDecoder('utf8'), stderr: new StringDecoder('utf8') }
  const lines = (stream: LogStream, raw: string[]) =>
    raw.map((entry) => {
      const { at, text: line } = splitTimestamp(entry)
      return { at, stream, line }
    })
  try {
    for await (const chunk of source) {
      for (const { stream, data } of frames.push(Buffer.from(chunk))) yield* lines(stream, split[stream].push(text[stream].write(data)))
    }
  } catch (err) {
    if (!signal?.aborted) throw toDockerError(err, what)
  } finally {
    signal?.removeEventListener('abort', stop)
    stop()
  }
  for (const stream of ['stdout', 'stderr'] as const)
    yield* lines(stream, split[stream].push(text[stream].end()).concat(split[stream].flush()))
}

export interface ContainerLogOptions {
  tail: number
  /** Unix seconds. */
  since?: number
  follow: boolean
  signal?: AbortSignal
}

export interface ContainerLogLine {
  /** ISO time the engine read the line. */
  at: string
  stream: LogStream
  line: string
}
