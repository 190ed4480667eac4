// Loads the key material named in the config. Secrets are read from files or the environment, never inline;
// a problem with any key is reported with its key path, and all problems are reported together.
import { createPublicKey, type KeyObject } from 'node:crypto'
import { readFile } from 'node:fs/promises'
import type { Config, KeyConfig } from '../config/schema.js'
import { ConfigError } from '../errors.js'

export const MIN_HMAC_SECRET_BYTES = 32
export const MIN_STATUS_TOKEN_BYTES = 16

export type KeyMaterial = { alg: 'ed25519'; publicKey: KeyObject } | { alg: 'hmac-sha256'; secret: Buffer }

export interface LoadedKey {
  id: string
  material: KeyMaterial
  allow: KeyConfig['allow']
  notBefore?: Date
  notAfter?: Date
}

export interface Keyring {
  keys: ReadonlyMap<string, LoadedKey>
  statusToken: Buffer | null
}

async function readSecretFile(path: string): Promise<Buffer> {
  return Buffer.from((await readFile(path, 'utf8')).trim(), 'utf8')
}

async function loadMaterial(key: KeyConfig, env: NodeJS.ProcessEnv): Promise<KeyMaterial> {
  if (key.alg === 'ed25519') {
    const publicKey = createPublicKey(await readFile(key.publicKeyFile as string))
    if (publicKey.asymmetricKeyType !== 'ed25519') {
      throw new Error(`is a ${publicKey.asymmetricKeyType} key, not ed25519`)
    }
    return { alg: 'ed25519', publicKey }
  }
  const secret = key.secretFile ? await readSecretFile(key.secretFile) : Buffer.from((env[key.secretEnv as string] ?? '').trim(), 'utf8')
  if (secret.length < MIN_HMAC_SECRET_BYTES) {
    throw new Error(`secret must be at least ${MIN_HMAC_SECRET_BYTES} bytes (has ${secret.length})`)
  }
  return { alg: 'hmac-sha256', secret }
}

function keySourcePath(key: KeyConfig, index: number): string {
  const field = key.publicKeyFile ? 'publicKeyFile' : key.secretFile ? 'secretFile' : 'secretEnv'
  return `keys[${index}].${field}`
}

function describeLoadError(err: unknown): string {
  const e = err as NodeJS.ErrnoException
  if (e.code === 'ENOENT' || e.code === 'EACCES') return `cannot read ${e.path} (${e.code})`
  return e.message
}

export async function loadKeyring(config: Config, env: NodeJS.ProcessEnv = process.env): Promise<Keyring> {
  const problems: string[] = []
  const keys = new Map<string, LoadedKey>()
  await Promise.all(
    config.keys.map(async (key, index) => {
      try {
        const material = await loadMaterial(key, env)
        keys.set(key.id, { id: key.id, material, allow: key.allow, notBefore: key.notBefore, notAfter: key.notAfter })
      } catch (err) {
        problems.push(`${keySourcePath(key, index)}: ${describeLoadError(err)}`)
      }
    }),
  )
  let statusToken: Buffer | null = null
  if (config.statusToken) {
    const { file, env: envName } = config.statusToken
    try {
      statusToken = file ? await readSecretFile(file) : Buffer.from((env[envName as string] ?? '').trim(), 'utf8')
      if (statusToken.length < MIN_STATUS_TOKEN_BYTES) {
        problems.push(`statusToken.${file ? 'file' : 'env'}: token must be at least ${MIN_STATUS_TOKEN_BYTES} bytes`)
      }
    } catch (err) {
      problems.push(`statusToken.file: ${describeLoadError(err)}`)
    }
  }
  if (problems.length > 0) throw new ConfigError(problems.sort())
  return { keys, statusToken }
}
