// The agent's own TLS files (`listen.tls`): read and checked before anything listens, so a missing or broken file
// is a config error naming its key path, not a stack trace from deep inside node:tls.
import { createPrivateKey, X509Certificate } from 'node:crypto'
import { createSecureContext } from 'node:tls'
import { readFile } from 'node:fs/promises'
import type { Config } from '../config/schema.js'
import { ConfigError } from '../errors.js'

export interface TlsFiles {
  cert: Buffer
  key: Buffer
}

async function readOrProblem(path: string, keyPath: string, problems: string[]): Promise<Buffer | undefined> {
  try {
    return await readFile(path)
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code ?? String(err)
    problems.push(`${keyPath}: cannot read ${path} (${code})`)
    return undefined
  }
}

/** The PEM files of `listen.tls`, or undefined when the agent speaks plain HTTP. Throws a ConfigError listing every problem. */
export async function loadTlsFiles(listen: Config['listen']): Promise<TlsFiles | undefined> {
  if (!listen.tls) return undefined
  const problems: string[] = []
  const [cert, key] = await Promise.all([
    readOrProblem(listen.tls.cert, 'listen.tls.cert', problems),
    readOrProblem(listen.tls.key, 'listen.tls.key', problems),
  ])
  if (cert) {
    try {
      new X509Certificate(cert)
    } catch {
      problems.push(`listen.tls.cert: ${listen.tls.cert} is not a PEM certificate`)
    }
  }
  if (key) {
    try {
      createPrivateKey(key)
    } catch {
      problems.push(`listen.tls.key: ${listen.tls.key} is not a PEM private key (or it is encrypted)`)
    }
  }
  if (problems.length === 0 && cert && key) {
    try {
      createSecureContext({ cert, key })
    } catch {
      problems.push(`listen.tls.key: ${listen.tls.key} does not belong to the certificate in ${listen.tls.cert}`)
    }
  }
  if (problems.length > 0) throw new ConfigError(problems)
  return { cert: cert as Buffer, key: key as Buffer }
}
