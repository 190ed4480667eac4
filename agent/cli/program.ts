// The `deploy-agent` commands: each parses its flags, then calls the module that does the work.
import { readFile } from 'node:fs/promises'
import { fileURLToPath } from 'node:url'
import { Command, Option } from 'commander'
import { HEADER, signRequest } from '../auth/canonical.js'
import { loadKeyring } from '../auth/keyring.js'
import { loadConfig } from '../config/load.js'
import { VERSION } from '../version.js'
import { addBackupCommands } from './backup-commands.js'
import { addDeployCommands } from './deploy-commands.js'
import { generateKeyFiles, generateStatusToken, readSigningKey, writeKeyFiles, type KeyAlg } from './keys.js'
import { clientFrom, UsageError, withClientOptions, type ClientFlags } from './options.js'
import { serve } from './serve.js'
import { formatTable } from './table.js'

export { UsageError } from './options.js'

/** The embedded default: a local config with state in ./.deploy-agent and no external database. */
export const LOCAL_CONFIG = fileURLToPath(new URL('../../config/agent.local.yaml', import.meta.url))

function configPath(flag: string | undefined): string {
  return flag ?? process.env.DEPLOY_AGENT_CONFIG ?? LOCAL_CONFIG
}

/** Single-quotes a word for a POSIX shell (for the printed curl command only; nothing here runs a shell). */
function shellQuote(word: string): string {
  return `'${word.replaceAll("'", `'\\''`)}'`
}

interface StatusBody {
  apps: Record<
    string,
    { envs: Record<string, { live: { release: string; port: number } | null; deploying: { id: string; state: string } | null; lastBackup: { id: string; createdAt: string } | null }> }
  >
}

export function buildProgram(): Command {
  const program = new Command('deploy-agent')
    .description('Signed blue-green deploys and verified PostgreSQL backups for one server')
    .version(VERSION)
    .showHelpAfterError()
    // Usage errors (a missing argument, an unknown option) exit 2 in every command; help and version exit 0.
    .exitOverride((err) => process.exit(err.exitCode === 0 ? 0 : 2))

  program
    .command('serve')
    .description('run the agent (HTTP API, deploys, scheduled backups)')
    .option('-c, --config <path>', 'config file (default: $DEPLOY_AGENT_CONFIG, else the embedded local config)')
    .addHelpText('after', '\nExample:\n  deploy-agent serve --config /etc/deploy-agent/agent.yaml')
    .action(async (opts: { config?: string }) => serve(configPath(opts.config)))

  program
    .command('check-config')
    .description('validate the config and the key files it names; prints every problem with its key path')
    .option('-c, --config <path>', 'config file')
    .addHelpText('after', '\nExample:\n  deploy-agent check-config --config /etc/deploy-agent/agent.yaml')
    .action(async (opts: { config?: string }) => {
      const path = configPath(opts.config)
      const config = await loadConfig(path)
      const keyring = await loadKeyring(config)
      const envs = Object.values(config.apps).reduce((n, app) => n + Object.keys(app.envs).length, 0)
      console.log(`${path}: OK (${Object.keys(config.apps).length} apps, ${envs} envs, ${keyring.keys.size} keys)`)
    })

  program
    .command('keygen')
    .description('create an Ed25519 key pair (PEM) or an HMAC secret, and optionally a status token')
    .addOption(new Option('--alg <alg>', 'key algorithm').choices(['ed25519', 'hmac-sha256']).default('ed25519'))
    .option('--name <name>', 'file name stem', 'ci')
    .option('--out-dir <dir>', 'write files here (0600 for secrets; existing files are kept); default: print them')
    .option('--status-token', 'also create status.token')
    .addHelpText('after', '\nExample:\n  deploy-agent keygen --alg ed25519 --name ci-main --out-dir /etc/deploy-agent/keys')
    .action(async (opts: { alg: KeyAlg; name: string; outDir?: string; statusToken?: boolean }) => {
      const files = generateKeyFiles(opts.alg, opts.name)
      if (opts.statusToken) files.push(generateStatusToken())
      if (!opts.outDir) {
        for (const f of files) process.stdout.write(`# ${f.name}\n${f.content}`)
        return
      }
      for (const path of await writeKeyFiles(opts.outDir, files)) console.log(`wrote ${path}`)
    })

  withClientOptions(
    program
      .command('sign')
      .description('print the signature headers for a request (or a ready curl command)')
      .option('-X, --method <method>', 'HTTP method', 'POST')
      .requiredOption('--path <path>', 'request path, e.g. /v1/apps/web/envs/production/deploys')
      .option('--body <json>', 'request body exactly as it will be sent')
      .option('--body-file <path>', 'read the body from a file')
      .option('--curl', 'print a full curl command instead of headers'),
  )
    .addHelpText('after', `\nExample:\n  deploy-agent sign --key-id ci-main --key-file ci-main.key --audience web-1 \\\n    --path /v1/apps/web/envs/production/deploys --body '{"ref":"v1.2.3"}' --curl`)
    .action(async (opts: ClientFlags & { method: string; path: string; body?: string; bodyFile?: string; curl?: boolean }) => {
      if (!opts.keyId || !opts.keyFile) throw new UsageError('sign needs --key-id and --key-file')
      const body = opts.bodyFile ? await readFile(opts.bodyFile, 'utf8') : (opts.body ?? '')
      const method = opts.method.toUpperCase()
      const key = await readSigningKey(opts.keyFile)
      const audience = opts.audience ?? new URL(opts.url).hostname
      const headers = signRequest({ keyId: opts.keyId, key, audience, method, path: opts.path, body })
      const names: Record<string, string> = {
        [HEADER.keyId]: 'Deploy-Key-Id',
        [HEADER.timestamp]: 'Deploy-Timestamp',
        [HEADER.nonce]: 'Deploy-Nonce',
        [HEADER.signature]: 'Deploy-Signature',
      }
      const lines = Object.entries(headers).map(([name, value]) => `${names[name]}: ${value}`)
      if (!opts.curl) {
        console.log(lines.join('\n'))
        return
      }
      const parts = ['curl', '-sS', '-X', method, shellQuote(new URL(opts.path, opts.url).toString())]
      for (const line of lines) parts.push('-H', shellQuote(line))
      if (body !== '') parts.push('-H', shellQuote('Content-Type: application/json'), '--data-binary', shellQuote(body))
      console.log(parts.join(' '))
    })

  withClientOptions(program.command('status').description('apps, envs, live releases, running deploys, last backups').option('--json', 'print JSON'))
    .addHelpText('after', '\nExample:\n  DEPLOY_AGENT_STATUS_TOKEN_FILE=/etc/deploy-agent/status.token deploy-agent status')
    .action(async (opts: ClientFlags) => {
      const status = await (await clientFrom(opts)).get<StatusBody>('/v1/status')
      if (opts.json) {
        console.log(JSON.stringify(status, null, 2))
        return
      }
      const rows = [['APP', 'ENV', 'LIVE', 'PORT', 'DEPLOYING', 'LAST BACKUP']]
      for (const [appName, app] of Object.entries(status.apps)) {
        for (const [envName, env] of Object.entries(app.envs)) {
          rows.push([
            appName,
            envName,
            env.live?.release ?? '-',
            env.live ? String(env.live.port) : '-',
            env.deploying ? `${env.deploying.id} ${env.deploying.state}` : '-',
            env.lastBackup?.createdAt ?? '-',
          ])
        }
      }
      console.log(formatTable(rows))
    })

  addDeployCommands(program)
  addBackupCommands(program)
  return program
}

