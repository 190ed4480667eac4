// What every client command shares: the connection flags, the client built from them, and the usage error.
import { readFile } from 'node:fs/promises'
import { Option, type Command } from 'commander'
import { AgentClient } from './client.js'
import { readSigningKey } from './keys.js'

export const DEFAULT_URL = 'http://127.0.0.1:8787'

/** Bad usage (exit 2), as opposed to a refusal by the agent or a failed operation (exit 1). */
export class UsageError extends Error {}

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

export async function clientFrom(flags: ClientFlags): Promise<AgentClient> {
  const token = process.env.DEPLOY_AGENT_STATUS_TOKEN ?? (flags.tokenFile ? (await readFile(flags.tokenFile, 'utf8')).trim() : undefined)
  return new AgentClient({
    url: flags.url,
    audience: flags.audience ?? new URL(flags.url).hostname,
    keyId: flags.keyId,
    key: flags.keyFile ? await readSigningKey(flags.keyFile) : undefined,
    token,
  })
}
