// What every client command shares: the connection flags, the client built from them, and the usage error.
import { readFile } from 'node:fs/promises'
import { Option, type Command } from 'commander'
import { AgentClient } from './client.js'
import { readSigningKey } from './keys.js'
import { UsageError } from './usage.js'

export { UsageError } from './usage.js'

export const DEFAULT_URL = 'http://127.0.0.1:8787'

/** The `--help` epilogue every command has: one or more example command lines. */
export const example = (...lines: string[]) => `\nExample:\n${lines.map((l) => `  ${l}`).join('\n')}`

export interface ClientFlags {
  url: string
  audience?: string
  keyId?: string
  keyFile?: string
  tokenFile?: string
  json?: boolean
}

export function withClientOptions(command: Command): Command {
  return command
    .addOption(new Option('--url <url>', 'agent URL').env('DEPLOY_AGENT_URL').default(DEFAULT_URL))
    .addOption(new Option('--audience <host>', 'audience signed into requests (default: the URL host)').env('DEPLOY_AGENT_AUDIENCE'))
    .addOption(new Option('--key-id <id>', 'signing key id').env('DEPLOY_AGENT_KEY_ID'))
    .addOption(new Option('--key-file <path>', 'Ed25519 private key (PEM) or HMAC secret file').env('DEPLOY_AGENT_KEY_FILE'))
    .addOption(new Option('--token-file <path>', 'status token file for read-only commands').env('DEPLOY_AGENT_STATUS_TOKEN_FILE'))
}

/** A file named by a flag; a file that cannot be read is the caller's mistake (exit 2), named by its flag. */
export async function fromFlagFile<T>(flag: string, path: string, read: (path: string) => Promise<T>): Promise<T> {
  try {
    return await read(path)
  } catch (err) {
    const e = err as NodeJS.ErrnoException
    throw new UsageError(`${flag}: ${e.code && e.path ? `cannot read ${e.path} (${e.code})` : e.message}`)
  }
}

function parseUrl(url: string): URL {
  try {
    const parsed = new URL(url)
    if (parsed.protocol === 'http:' || parsed.protocol === 'https:') return parsed
  } catch {
    // reported below
  }
  throw new UsageError(`--url must be an http:// or https:// URL, not "${url}"`)
}

export async function clientFrom(flags: ClientFlags): Promise<AgentClient> {
  const url = parseUrl(flags.url)
  const token =
    process.env.DEPLOY_AGENT_STATUS_TOKEN ??
    (flags.tokenFile ? await fromFlagFile('--token-file', flags.tokenFile, async (p) => (await readFile(p, 'utf8')).trim()) : undefined)
  return new AgentClient({
    url: flags.url,
    audience: flags.audience ?? url.hostname,
    keyId: flags.keyId,
    key: flags.keyFile ? await fromFlagFile('--key-file', flags.keyFile, readSigningKey) : undefined,
    token,
  })
}
