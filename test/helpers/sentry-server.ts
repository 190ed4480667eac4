// A loopback stand-in for Sentry's ingest: it accepts envelopes the real SDK posts to `http://publickey@host:port/1`
// and keeps each raw body, so tests can read the events and check that no secret left the process.
import { createServer } from 'node:http'
import { gunzipSync } from 'node:zlib'

export interface SentryEvent {
  event_id: string
  tags?: Record<string, string>
  exception?: { values: Array<{ type: string; value: string }> }
  fingerprint?: string[]
  release?: string
  environment?: string
  [key: string]: unknown
}

export interface SentryServer {
  dsn: string
  /** every envelope body as received (decompressed) */
  bodies: string[]
  /** the error events of every envelope */
  events(): SentryEvent[]
}

/** Splits an envelope (header line, then item header / payload line pairs) into its event payloads. */
export function envelopeEvents(body: string): SentryEvent[] {
  const lines = body.split('\n').filter((l) => l !== '')
  const events: SentryEvent[] = []
  for (let i = 1; i + 1 < lines.length; i += 2) {
    if ((JSON.parse(lines[i] as string) as { type: string }).type === 'event')
      events.push(JSON.parse(lines[i + 1] as string) as SentryEvent)
  }
  return events
}

export async function sentryServer(t: { teardown: (fn: () => unknown) => void }): Promise<SentryServer> {
  const bodies: string[] = []
  const server = createServer((req, res) => {
    const chunks: Buffer[] = []
    req.on('data', (c: Buffer) => chunks.push(c))
    req.on('end', () => {
      const raw = Buffer.concat(chunks)
      bodies.push((req.headers['content-encoding'] === 'gzip' ? gunzipSync(raw) : raw).toString('utf8'))
      res.writeHead(200, { 'content-type': 'application/json' })
      res.end('{}')
    })
  })
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  t.teardown(() => {
    server.closeAllConnections()
    server.close()
  })
  const address = server.address()
  if (address === null || typeof address === 'string') throw new Error('no TCP address')
  return { dsn: `http://publickey@127.0.0.1:${address.port}/1`, bodies, events: () => bodies.flatMap(envelopeEvents) }
}
