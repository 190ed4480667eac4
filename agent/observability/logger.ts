// pino JSON logs. Secrets never reach a log line: auth headers and anything named like a secret are redacted.
import { pino, type Logger, type LoggerOptions } from 'pino'

/** Headers and fields whose values are secrets: the logger redacts them, the error reporter scrubs them too. */
export const SENSITIVE_HEADERS = ['authorization', 'deploy-signature'] as const
export const SENSITIVE_FIELDS = ['password', 'secret', 'token'] as const

const headerPath = (name: string) => (/^[a-z]+$/.test(name) ? `.${name}` : `["${name}"]`)

export const REDACT_PATHS = [
  ...SENSITIVE_HEADERS.flatMap((h) => [`req.headers${headerPath(h)}`, `headers${headerPath(h)}`]),
  ...SENSITIVE_FIELDS.map((f) => `*.${f}`),
]

export function createLogger(options: LoggerOptions = {}, destination?: pino.DestinationStream): Logger {
  const base: LoggerOptions = {
    level: process.env.LOG_LEVEL ?? 'info',
    redact: { paths: REDACT_PATHS, censor: '[redacted]' },
    timestamp: pino.stdTimeFunctions.isoTime,
    ...options,
  }
  return destination ? pino(base, destination) : pino(base)
}

export type { Logger }
