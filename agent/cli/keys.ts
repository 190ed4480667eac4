// Key files for the CLI: generating them (`keygen`) and reading a signing key (`sign`, and every signed
// command). A PEM private key file is Ed25519; any other file is an HMAC secret.
import { createPrivateKey, generateKeyPairSync, randomBytes } from 'node:crypto'
import { access, mkdir, readFile, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import type { SigningKey } from '../auth/canonical.js'
import { MIN_HMAC_SECRET_BYTES } from '../auth/keyring.js'

export type KeyAlg = 'ed25519' | 'hmac-sha256'

export interface GeneratedFile {
  name: string
  content: string
  mode: number
}

/** Ed25519: a private key (PKCS#8 PEM) and its public key (SPKI PEM, as `openssl pkey -pubout` writes). */
export function generateKeyFiles(alg: KeyAlg, name: string): GeneratedFile[] {
  if (alg === 'ed25519') {
    const { privateKey, publicKey } = generateKeyPairSync('ed25519')
    return [
      { name: `${name}.key`, content: privateKey.export({ type: 'pkcs8', format: 'pem' }).toString(), mode: 0o600 },
      { name: `${name}.pub`, content: publicKey.export({ type: 'spki', format: 'pem' }).toString(), mode: 0o644 },
    ]
  }
  return [{ name: `${name}.secret`, content: `${randomBytes(32).toString('base64url')}\n`, mode: 0o600 }]
}

/** A random bearer token for the read-only status endpoints. */
export function generateStatusToken(): GeneratedFile {
  return { name: 'status.token', content: `${randomBytes(24).toString('base64url')}\n`, mode: 0o600 }
}

async function exists(path: string): Promise<boolean> {
  return access(path).then(
    () => true,
    () => false,
  )
}

/** Writes files that do not exist yet (never overwrites a key); returns the paths written. */
export async function writeKeyFiles(dir: string, files: GeneratedFile[]): Promise<string[]> {
  await mkdir(dir, { recursive: true, mode: 0o700 })
  const written: string[] = []
  for (const file of files) {
    const path = join(dir, file.name)
    if (await exists(path)) continue
    await writeFile(path, file.content, { mode: file.mode, flag: 'wx' })
    written.push(path)
  }
  return written
}

export async function readSigningKey(path: string): Promise<SigningKey> {
  const text = await readFile(path, 'utf8')
  if (text.includes('-----BEGIN')) {
    const privateKey = createPrivateKey(text)
    if (privateKey.asymmetricKeyType !== 'ed25519') throw new Error(`${path}: is a ${privateKey.asymmetricKeyType} key, not ed25519`)
    return { alg: 'ed25519', privateKey }
  }
  const secret = Buffer.from(text.trim(), 'utf8')
  if (secret.length < MIN_HMAC_SECRET_BYTES) throw new Error(`${path}: an HMAC secret must be at least ${MIN_HMAC_SECRET_BYTES} bytes`)
  return { alg: 'hmac-sha256', secret }
}
