// `GET /v1/deploys/:id/log?follow=1`: the log so far, then new lines as they are written, until the deploy
// finishes or the client goes away. A heartbeat line keeps idle connections (a silent migration) open.
import type { IncomingMessage } from 'node:http'
import { Readable } from 'node:stream'
import { setTimeout as sleep } from 'node:timers/promises'
import type { DeployStore } from '../store/deploys.js'

const POLL_MS = 250
const HEARTBEAT_MS = 15_000

export function followLog(store: DeployStore, id: string, request: IncomingMessage, pollMs = POLL_MS): Readable {
  let closed = false
  request.once('close', () => (closed = true))
  async function* lines(): AsyncGenerator<string> {
    let sent = 0
    let quietSince = Date.now()
    for (;;) {
      const finished = store.get(id)?.finishedAt !== null
      const text = await store.readLog(id)
      if (text.length > sent) {
        yield text.slice(sent)
        sent = text.length
        quietSince = Date.now()
      } else if (Date.now() - quietSince > HEARTBEAT_MS) {
        yield `${JSON.stringify({ at: new Date().toISOString(), event: 'heartbeat' })}\n`
        quietSince = Date.now()
      }
      if (finished || closed) return
      await sleep(pollMs)
    }
  }
  return Readable.from(lines())
}
