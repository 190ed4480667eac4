// Reads an env file the way `docker run --env-file` does: KEY=VALUE per line, `#` comments and blank lines
// skipped, no quote processing. Returns `KEY=VALUE` strings for the container's Env.
import { readFile } from 'node:fs/promises'
import { ValidationError } from '../errors.js'

const KEY = /^[A-Za-z_][A-Za-z0-9_]*$/

export function parseEnvFile(text: string, source: string): string[] {
  const out: string[] = []
  text.split(/\r?\n/).forEach((line, index) => {
    const trimmed = line.trimStart()
    if (trimmed === '' || trimmed.startsWith('#')) return
    const eq = trimmed.indexOf('=')
    const key = eq === -1 ? trimmed.trimEnd() : trimmed.slice(0, eq)
    // Only the line number: a bad line is often a value pasted on its own (a key's base64), never to be echoed.
    if (!KEY.test(key))
      throw new ValidationError(`${source}:${index + 1}: not a KEY=VALUE line (a name is letters, digits and _, not starting with a digit)`)
    if (eq === -1) return // docker would take it from its own environment; the agent's is not the app's
    out.push(`${key}=${trimmed.slice(eq + 1)}`)
  })
  return out
}

export async function readEnvFile(path: string | undefined): Promise<string[]> {
  if (!path) return []
  return parseEnvFile(await readFile(path, 'utf8'), path)
}
