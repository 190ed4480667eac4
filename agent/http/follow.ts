// `GET /v1/deploys/:id/log`: the log streamed from the file in chunks, never read whole. With `follow=1`, new lines
// as they are written, until the deploy finishes or the client goes away: each poll reads from the last byte sent,
// so a follower costs one chunk of memory and reads each byte once. A heartbeat line keeps idle connections (a
// silent migration) open. The number of followers is bounded, per deploy and in all.
import type { IncomingMessage } from 'node:http'
import { Readable } from 'node:stream'
import { setTimeout as sleep } from 'node:timers/promises'
import type { ContainerLogLine } from '../docker/engine.js'
import { AgentError } from '../errors.js'
import type { DeployStore } from '../store/deploys.js'

const POLL_MS = 250
const HEARTBEAT_MS = 15_000
const CHUNK_BYTES = 64 * 1024
const NEWLINE = 0x0a

/** Followers of one deploy's log at once (a CI job and a few people watching). */
export const MAX_FOLLOWERS_PER_DEPLOY = 8
/** Followers of all logs at once. */
export const MAX_FOLLOWERS = 32

type LogReader = Pick<DeployStore, 'get' | 'readLogChunk' | 'logSettled'>

export class TooManyFollowersError extends AgentError {
  readonly retryAfterSec = 5

  constructor(message: string) {
    super('too_many_followers', 503, message)
  }
}

/** Counts followers; `enter` takes a place or throws TooManyFollowersError. */
export class Followers {
  readonly #byDeploy = new Map<string, number>()
  #total = 0

  constructor(
    readonly perDeploy = MAX_FOLLOWERS_PER_DEPLOY,
    readonly total = MAX_FOLLOWERS,
    /** What is followed, for the refusal: `deploy logs`, `app logs`. */
    readonly what = 'deploy logs',
  ) {}

  /** Takes a place for a follower of `id`; the function returned gives it back (calling it again does nothing). */
  enter(id: string): () => void {
    const here = this.#byDeploy.get(id) ?? 0
    const hint = 'try again when one leaves, or read the log without follow=1'
    if (here >= this.perDeploy)
      throw new TooManyFollowersError(`${here} clients already follow the log of ${id} (the most allowed); ${hint}`)
    if (this.#total >= this.total)
      throw new TooManyFollowersError(`${this.#total} ${this.what} are already being followed (the most allowed); ${hint}`)
    this.#byDeploy.set(id, here + 1)
    this.#total++
    let left = false
    return () => {
      if (left) return
      left = true
      this.#total--
      const now = (this.#byDeploy.get(id) ?? 1) - 1
      if (now === 0) this.#byDeploy.delete(id)
      else this.#byDeploy.set(id, now)
    }
  }
}

/** The log as it is now, in chunks. */
export function streamLog(store: LogReader, id: string): Readable {
  async function* chunks(): AsyncGenerator<Buffer> {
    await store.logSettled(id)
    for (let offset = 0; ;) {
      const chunk = await store.readLogChunk(id, offset, CHUNK_BYTES)
      if (chunk.length === 0) return
      offset += chunk.length
      yield chunk
    }
  }
  return Readable.from(chunks())
}

export function followLog(store: LogReader, id: string, request: IncomingMessage, pollMs = POLL_MS): Readable {
  let closed = false
  request.once('close', () => (closed = true))
  async function* lines(): AsyncGenerator<Buffer | string> {
    let offset = 0
    // Nothing to send yet: a heartbeat at once, so the client gets the answer's headers without waiting.
    let quietSince = -Infinity
    let midLine = false
    while (!closed) {
      const finished = store.get(id)?.finishedAt !== null
      if (finished) await store.logSettled(id)
      const chunk = await store.readLogChunk(id, offset, CHUNK_BYTES)
      // Whole lines only (a line may be half written), unless one line fills the chunk or the log is complete.
      const end = chunk.lastIndexOf(NEWLINE) + 1
      const sent = end > 0 ? chunk.subarray(0, end) : chunk.length === CHUNK_BYTES || finished ? chunk : chunk.subarray(0, 0)
      if (sent.length > 0) {
        offset += sent.length
        midLine = sent[sent.length - 1] !== NEWLINE
        quietSince = Date.now()
        yield sent
        continue // more may be there already
      }
      if (finished) return
      if (!midLine && Date.now() - quietSince > HEARTBEAT_MS) {
        yield `${JSON.stringify({ at: new Date().toISOString(), event: 'heartbeat' })}\n`
        quietSince = Date.now()
      }
      await sleep(pollMs)
    }
  }
  return Readable.from(lines())
}

const heartbeat = () => `${JSON.stringify({ at: new Date().toISOString(), event: 'heartbeat' })}\n`

/**
 * An app's output as NDJSON `{ at, stream, line }`, each line scrubbed. With `follow`, a heartbeat first (the client
 * gets the headers at once) and after each quiet `heartbeatMs`, until the lines end (the container stopped, or the
 * caller aborted them when the client went away).
 */
export function appLogStream(
  lines: AsyncIterable<ContainerLogLine>,
  scrub: (text: string) => string,
  options: { follow: boolean; heartbeatMs?: number },
): Readable {
  const { follow, heartbeatMs = HEARTBEAT_MS } = options
  const format = ({ at, stream, line }: ContainerLogLine) => `${JSON.stringify({ at, stream, line: scrub(line) })}\n`
  async function* tail(): AsyncGenerator<string> {
    for await (const entry of lines) yield format(entry)
  }
  async function* followed(): AsyncGenerator<string> {
    const it = lines[Symbol.asyncIterator]()
    yield heartbeat()
    for (let next = it.next(); ; next = it.next()) {
      // The same pending read is raced against each quiet period, so no line is lost to a heartbeat.
      let got: IteratorResult<ContainerLogLine> | null
      do {
        let timer: NodeJS.Timeout | undefined
        const quiet = new Promise<null>((resolve) => (timer = setTimeout(resolve, heartbeatMs, null)))
        got = await Promise.race([next, quiet]).finally(() => clearTimeout(timer))
        if (got === null) yield heartbeat()
      } while (got === null)
      if (got.done) return
      yield format(got.value)
    }
  }
  return Readable.from(follow ? followed() : tail())
}
