// The engine's JSON-lines progress streams (a build, a pull): it answers 200 and then reports each step, and any
// failure, as events in the stream. The outcome is read from the events, never from how the stream ends.
import { capLine, LineSplitter } from './lines.js'

/** The engine's JSON events are small; a longer one is broken, and is cut rather than held. */
const MAX_EVENT_CHARS = 1024 * 1024

export interface EngineEvent {
  error?: unknown
  errorDetail?: { message?: unknown }
}

export interface EventHandlers<E> {
  /** Every event that parsed (an error event too, before it settles the outcome). */
  event(event: E): void
  /** A line that is not JSON, capped: still worth showing. */
  text(line: string): void
  /** Just before the outcome is settled, by an error event or by the end of the stream. */
  done?(): void
}

function errorOf(event: EngineEvent): string | null {
  if (typeof event.errorDetail?.message === 'string') return event.errorDetail.message
  if (event.error !== undefined && event.error !== null) return String(event.error)
  return null
}

/**
 * Reads `stream`'s events; resolves with the engine's error message (null when none was reported) and rejects when
 * the stream breaks, or closes before it ended. `what` names the operation in that rejection ("build", "pull").
 */
export function followEngineEvents<E extends EngineEvent>(
  stream: NodeJS.ReadableStream,
  what: string,
  on: EventHandlers<E>,
): Promise<string | null> {
  return new Promise((resolve, reject) => {
    const json = new LineSplitter(MAX_EVENT_CHARS)
    let settled = false
    let ended = false
    const settle = (fn: () => void): void => {
      if (settled) return
      settled = true
      fn()
    }
    const onLine = (raw: string): void => {
      if (raw.trim() === '') return
      let event: E
      try {
        event = JSON.parse(raw) as E
      } catch {
        on.text(capLine(raw))
        return
      }
      on.event(event)
      const error = errorOf(event)
      if (error !== null) {
        on.done?.()
        settle(() => resolve(error))
        // The engine has nothing more to say after an error; do not wait on the connection.
        ;(stream as NodeJS.ReadableStream & { destroy?: () => void }).destroy?.()
      }
    }
    stream.on('data', (chunk: Buffer | string) => {
      for (const raw of json.push(chunk.toString())) onLine(raw)
    })
    stream.on('end', () => {
      ended = true
      for (const raw of json.flush()) onLine(raw)
      on.done?.()
      settle(() => resolve(null))
    })
    stream.on('error', (err: Error) => settle(() => reject(err)))
    stream.on('close', () => {
      if (!ended) settle(() => reject(new Error(`the ${what} stream closed before the ${what} finished`)))
    })
  })
}
