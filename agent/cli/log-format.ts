// Human output for deploys: state names (coloured per colorEnabled) and one deploy-log event as
// lines — state changes flush left and prominent, everything else indented and compact, heartbeats dropped.
import type { JsonRecord } from './client.js'

export const TERMINAL_STATES: ReadonlySet<string> = new Set(['SUCCEEDED', 'FAILED', 'ROLLED_BACK', 'CANCELLED'])

export interface Paint {
  state(name: string): string
}

/**
 * Colour is for people. NO_COLOR set to anything (https://no-color.org) turns it off, always; else FORCE_COLOR turns
 * it on (off when it is "0" or "false"), for CI logs that render colour; else only a terminal gets it.
 */
export function colorEnabled(stream: { isTTY?: boolean } = process.stdout, env: NodeJS.ProcessEnv = process.env): boolean {
  if (env.NO_COLOR) return false
  const force = env.FORCE_COLOR
  if (force !== undefined && force !== '') return force !== '0' && force !== 'false'
  return stream.isTTY === true
}

const SGR = { bold: '1', red: '31', green: '32', yellow: '33' } as const

function stateColor(state: string): string {
  if (state === 'SUCCEEDED') return SGR.green
  if (TERMINAL_STATES.has(state)) return SGR.red
  if (state === 'AWAITING_APPROVAL' || state === 'ROLLING_BACK') return SGR.yellow
  return SGR.bold
}

export function painter(enabled: boolean = colorEnabled()): Paint {
  return { state: (name) => (enabled ? `\x1b[${stateColor(name)}m${name}\x1b[0m` : name) }
}

/** `HH:MM:SS` in local time, or blanks when the event has no usable time. */
export function clock(at: unknown): string {
  const date = typeof at === 'string' ? new Date(at) : null
  if (!date || Number.isNaN(date.getTime())) return ' '.repeat(8)
  return date.toTimeString().slice(0, 8)
}

/** C0 controls but tab and newline, DEL, C1 controls (0x9b is a one-byte CSI), and the bidi overrides. */
const CONTROL = /[\x00-\x08\x0b-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]/g

/**
 * Text from the agent (build output, error messages) made safe for a terminal: control characters are shown as
 * `\x1b`, `\r`, `\u202e` instead of being obeyed (clearing the screen, retitling the window, overwriting a line).
 */
export function printable(text: string): string {
  return text.replace(CONTROL, (c) => {
    if (c === '\r') return '\\r'
    const code = c.charCodeAt(0)
    return code > 0xff ? `\\u${code.toString(16)}` : `\\x${code.toString(16).padStart(2, '0')}`
  })
}

const raw = (value: unknown): string =>
  typeof value === 'string' ? value : value === undefined || value === null ? '' : JSON.stringify(value)
const str = (value: unknown): string => printable(raw(value))
/** A line of output: its trailing \r or spaces dropped before the rest is escaped. */
const line = (value: unknown): string => printable(raw(value).trimEnd())

function fields(event: JsonRecord, skip: readonly string[]): string {
  return Object.entries(event)
    .filter(([key, value]) => !skip.includes(key) && value !== undefined && value !== null)
    .map(([key, value]) => `${printable(key)}=${key === 'container' ? str(value).slice(0, 12) : str(value)}`)
    .join(' ')
}

/** The text after the event's label; several entries become several lines. */
function detail(event: JsonRecord): string[] {
  const e = event
  switch (e.event) {
    case 'build':
      if (e.line !== undefined) return [line(e.line)]
      if (e.cached) return [`cached ${str(e.image)}`]
      return [`built ${str(e.image)}${typeof e.lines === 'number' ? ` (${e.lines} lines)` : ''}`]
    case 'migrate':
      return [e.line !== undefined ? line(e.line) : `exit ${str(e.exitCode)}`]
    case 'health': {
      const where = e.port !== undefined ? `:${str(e.port)} ` : ''
      if (e.ok)
        return [
          `${where}ok${e.status !== undefined ? ` ${str(e.status)}` : ''}${e.streak !== undefined ? ` (${str(e.streak)} in a row)` : ''}`,
        ]
      return [`${where}failing: ${e.error !== undefined ? str(e.error) : `HTTP ${str(e.status)}`}`]
    }
    case 'observe':
      return [
        `${e.ok === false ? 'failing' : 'ok'}: ${e.error !== undefined ? str(e.error) : `HTTP ${str(e.status)}`}${e.failures !== undefined ? ` (${str(e.failures)} failures)` : ''}`,
      ]
    case 'resolved':
      return [`${str(e.ref)} → ${str(e.commit).slice(0, 12)} (release ${str(e.release)})`]
    case 'smoke':
      if (Array.isArray(e.results)) {
        return e.results.map((r: JsonRecord) => `${str(r.path)} ${str(r.got)}${r.ok ? '' : ` (expected ${str(r.expectStatus)})`}`)
      }
      break
    case 'container-log':
      if (Array.isArray(e.lines)) return e.lines.length > 0 ? e.lines.map(line) : ['(no output)']
      break
  }
  return [fields(e, ['at', 'event'])]
}

/** One log event as printable lines; [] for heartbeats. */
export function formatEvent(event: JsonRecord, paint: Paint): string[] {
  if (event.event === 'heartbeat') return []
  const time = clock(event.at)
  if (event.event === 'state') {
    const error = event.error as { code?: unknown; message?: unknown } | undefined
    const state = str(event.state)
    const approved = event.approvedBy !== undefined ? `  approved by ${str(event.approvedBy)}` : ''
    return [`${time}  ${paint.state(state)}${approved}${error ? `  ${str(error.code)}: ${str(error.message)}` : ''}`]
  }
  const label = str(event.event).padEnd(9)
  return detail(event).map((text) => `${time}    ${label}  ${text}`.trimEnd())
}
