// Following a deploy to its end, for `deploy --follow`, `rollback --follow` and `logs -f`: stream the log, then read
// the deploy's final state. Only SUCCEEDED counts as success, so a CI job running the command fails with the deploy.
import { setTimeout as sleep } from 'node:timers/promises'
import { AgentRequestError, type AgentClient, type JsonRecord } from './client.js'
import { formatEvent, painter, printable, TERMINAL_STATES, type Paint } from './log-format.js'

/** The fields of a deploy (GET /v1/deploys/:id) the CLI reads. */
export interface DeployView {
  id: string
  /** deploy or rollback */
  kind: string
  app: string
  env: string
  ref: string
  release: string | null
  state: string
  error: { code: string; message: string } | null
  createdAt: string
  finishedAt: string | null
}

export interface FollowOptions {
  /** print the raw NDJSON events and, last, the deploy record as one JSON line */
  json?: boolean
  paint?: Paint
  out?: (line: string) => void
  err?: (line: string) => void
  /** how many log lines to repeat after a failure */
  tailLines?: number
}

const RECONNECTS = 5

export const deployPath = (id: string) => `/v1/deploys/${encodeURIComponent(id)}`

export function awaitingApprovalLine(id: string): string {
  return `awaiting approval: run \`deploy-agent approve ${id}\` to let it proceed (still following)`
}

/**
 * Streams the deploy's log until it ends; a stream cut short (agent restart, network) is resumed, skipping the
 * lines already printed. Returns the finished deploy; sets no exit code.
 */
export async function followDeploy(client: AgentClient, id: string, options: FollowOptions = {}): Promise<DeployView> {
  const paint = options.paint ?? painter()
  const out = options.out ?? ((line: string) => console.log(line))
  const err = options.err ?? ((line: string) => console.error(line))
  const tailLines = options.tailLines ?? 20
  const tail: string[] = []
  const remember = (line: string) => {
    tail.push(line)
    if (tail.length > tailLines) tail.shift()
  }

  let deploy = await client.get<DeployView>(deployPath(id))
  if (!options.json) {
    out(printable(`following ${deploy.id}: ${deploy.app}/${deploy.env} ${deploy.ref} (Ctrl-C stops following, not the deploy)`))
    if (deploy.state === 'AWAITING_APPROVAL') out(awaitingApprovalLine(deploy.id))
  }

  let printed = 0
  let failures = 0
  for (;;) {
    try {
      let index = 0
      for await (const event of client.stream(`${deployPath(id)}/log?follow=1`)) {
        // Heartbeats are not in the stored log, so they do not count towards the lines already printed.
        if (event.event === 'heartbeat') {
          if (options.json) out(JSON.stringify(event))
          continue
        }
        if (index++ < printed) continue
        printed++
        failures = 0
        const lines = formatEvent(event, paint)
        for (const line of lines) remember(line)
        if (options.json) out(JSON.stringify(event))
        else for (const line of lines) out(line)
        if (!options.json && isAwaiting(event)) out(awaitingApprovalLine(id))
      }
    } catch (error) {
      if (error instanceof AgentRequestError || ++failures > RECONNECTS) throw error
      await sleep(1000)
      continue
    }
    deploy = await client.get<DeployView>(deployPath(id))
    if (deploy.finishedAt !== null || TERMINAL_STATES.has(deploy.state)) break
    await sleep(1000)
  }

  if (options.json) out(JSON.stringify(deploy))
  else out(summary(deploy, paint))
  if (deploy.state !== 'SUCCEEDED') {
    // The error can quote build or migration output: printed like the log, control characters escaped.
    err(printable(`error: ${deploy.error ? `${deploy.error.code}: ${deploy.error.message}` : `deploy ended ${deploy.state}`}`))
    if (tail.length > 0) {
      err(`last ${tail.length} log lines:`)
      for (const line of tail) err(`  ${line}`)
    }
  }
  return deploy
}

function isAwaiting(event: JsonRecord): boolean {
  return event.event === 'state' && event.state === 'AWAITING_APPROVAL'
}

function summary(deploy: DeployView, paint: Paint): string {
  const took = deploy.finishedAt ? ` in ${Math.round((Date.parse(deploy.finishedAt) - Date.parse(deploy.createdAt)) / 100) / 10} s` : ''
  const release = deploy.release && deploy.release !== deploy.ref ? ` (release ${deploy.release})` : ''
  return `${printable(deploy.id)} ${paint.state(printable(deploy.state))}: ${printable(`${deploy.app}/${deploy.env} ${deploy.ref}${release}`)}${took}`
}
