// pino JSON logs. Secrets never reach a log line: auth headers and anything named like a secret are redacted.
import { pino, type Logger, type LoggerOptions } from 'pino'

export const REDACT_PATHS = [
  'req.headers.authorization',
  'req.headers["deploy-signature"]',
  'headers.authorization',
  'headers["deploy-signature"]',
  '*.password',
  '*.secret',
  '*.token',
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
