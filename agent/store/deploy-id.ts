// Deploy ids: `d_` + 12 random base32 characters. Ids name log files, so they are checked before any path is built.
import { randomBytes } from 'node:crypto'
import { ValidationError } from '../errors.js'

export const DEPLOY_ID = /^d_[a-z0-9]{12}$/

const ALPHABET = 'abcdefghijklmnopqrstuvwxyz234567' // 32 symbols: a byte's low 5 bits pick one without bias

export function newDeployId(): string {
  return `d_${Array.from(randomBytes(12), (byte) => ALPHABET[byte & 31]).join('')}`
}

export function isDeployId(value: unknown): value is string {
  return typeof value === 'string' && DEPLOY_ID.test(value)
}

export function assertDeployId(value: unknown): asserts value is string {
  if (!isDeployId(value)) throw new ValidationError(`invalid deploy id ${JSON.stringify(String(value).slice(0, 64))}`)
}
