// The `deploy-agent` commands: each parses its flags, then calls the module that does the work.
import { readFile } from 'node:fs/promises'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { Command, Option } from 'commander'
import { HEADER, signRequest } from '../auth/canonical.js'
import { loadKeyring } from '../auth/keyring.js'
import { loadConfig } from '../config/load.js'
import { ConfigError } from '../errors.js'
import { loadTlsFiles } from '../http/tls.js'
import { VERSION } from '../version.js'
import { addBackupCommands } from './backup-commands.js'
import { addDeployCommands } from './deploy-commands.js'
import { generateKeyFiles, generateStatusToken, readSigningKey, writeKeyFiles, type KeyAlg } from './keys.js'
import { painter } from './log-format.js'
import { clientFrom, example, fromFlagFile, UsageError, withClientOptions, type ClientFlags } from './options.js'
import { serve } from './serve.js'
import { formatTable } from './table.js'

export { UsageError } from './options.js'

/** The embedded default: a local config with state in ./.deploy-agent and no external database. */
export const LOCAL_CONFIG = fileURLToPath(new URL('../../config/agent.local.yaml', import.meta.url))

function configPath(flag: string | undefined): string {
  return flag ?? process.env.DEPLOY_AGENT_CONFIG ?? LOCAL_CONFIG
}

const octal = (mode: number) => `0${mode.toString(8)}`

/** Single-quotes a word for a POSIX shell (for the printed curl command only; nothing here runs a shell). */
function shellQuote(word: string): string {
  return `'${word.replaceAll("'", `'\\''`)}'`
}

interface StatusBody {
  apps: Record<
    string,
    {
      envs: Record<
        string,
        {
          /** port: null for an app of workers only. */
          live: { release: string; port: number | null } | null
          deploying: { id: string; state: string } | null
          lastBackup: { id: string; createdAt: string } | null
        }
      >
    }
  >
}

export function buildProgram(): Command {
  const program = new Command('deploy-agent')
    .description('Signed blue-green deploys and verified PostgreSQL backups for one server')
    .version(VERSION)
    .showHelpAfterError()
    // Needed for `backups`' own positional options to work: commander honours them only when every ancestor has
    // them, else `backups verify <id> --json` (or --url, --key-id) was taken by `backups` and verify never saw it.
    .enablePositionalOptions()
    // Usage errors (a missing argument, an unknown option) exit 2 in every command; help and version exit 0.
    .exitOverride((err) => process.exit(err.exitCode === 0 ? 0 : 2))
    .addHelpText(
      'after',
      example(
        'deploy-agent check-config --config /etc/deploy-agent/agent.yaml',
        'deploy-agent deploy shop production v1.4.2 --follow',
        'deploy-agent status --json',
      ) +
        '\n\nExit codes: 0 ok, 1 refused or failed, 2 bad usage or config, 3 agent unreachable. `deploy-agent <command> --help` for more.',
    )

  program
    .command('serve')
    .description('run the agent (HTTP API, deploys, scheduled backups)')
    .option('-c, --config <path>', 'config file (default: $DEPLOY_AGENT_CONFIG, else the embedded local config)')
    .addHelpText('after', example('deploy-agent serve --config /etc/deploy-agent/agent.yaml'))
    .action(async (opts: { config?: string }) => serve(configPath(opts.config)))

  program
    .command('check-config')
    .description('validate the config and the files it names (keys, TLS); prints every problem with its key path')
    .option('-c, --config <path>', 'config file')
    .option('--json', 'print { ok, config, apps, envs, keys } or { ok: false, config, problems } (exit 2)')
    .addHelpText('after', example('deploy-agent check-config --config /etc/deploy-agent/agent.yaml', 'deploy-agent check-config --json'))
    .action(async (opts: { config?: string; json?: boolean }) => {
      const path = configPath(opts.config)
      let summary: { apps: number; envs: number; keys: number }
      try {
        const config = await loadConfig(path)
        const keyring = await loadKeyring(config)
        await loadTlsFiles(config.listen)
        const envs = Object.values(config.apps).reduce((n, app) => n + Object.keys(app.envs).length, 0)
        summary = { apps: Object.keys(config.apps).length, envs, keys: keyring.keys.size }
      } catch (err) {
        if (!opts.json || !(err instanceof ConfigError)) throw err
        console.log(JSON.stringify({ ok: false, config: path, problems: err.problems }, null, 2))
        process.exitCode = 2
        return
      }
      if (opts.json) console.log(JSON.stringify({ ok: true, config: path, ...summary }, null, 2))
      else console.log(`${path}: OK (${summary.apps} apps, ${summary.envs} envs, ${summary.keys} keys)`)
    })

  program
    .command('keygen')
    .description('create an Ed25519 key pair (PEM) or an HMAC secret, and optionally a status token')
    .addOption(new Option('--alg <alg>', 'key algorithm').choices(['ed25519', 'hmac-sha256']).default('ed25519'))
    .option('--name <name>', 'file name stem', 'ci')
    .option('--out-dir <dir>', 'write files here (0600 for secrets; existing files are kept); default: print them')
    .option('--status-token', 'also create status.token')
    .option('--json', 'print JSON: { written, kept } with --out-dir, else { files: [{ name, mode, content }] }')
    .addHelpText(
      'after',
      example(
        'deploy-agent keygen --alg ed25519 --name ci-main --out-dir /etc/deploy-agent/keys',
        'deploy-agent keygen --alg hmac-sha256 --name ci-legacy --json',
      ),
    )
    .action(async (opts: { alg: KeyAlg; name: string; outDir?: string; statusToken?: boolean; json?: boolean }) => {
      const files = generateKeyFiles(opts.alg, opts.name)
      if (opts.statusToken) files.push(generateStatusToken())
      if (!opts.outDir) {
        if (opts.json)
          console.log(JSON.stringify({ files: files.map((f) => ({ name: f.name, mode: octal(f.mode), content: f.content })) }, null, 2))
        else for (const f of files) process.stdout.write(`# ${f.name}\n${f.content}`)
        return
      }
      const written = await writeKeyFiles(opts.outDir, files)
      const kept = files.map((f) => join(opts.outDir as string, f.name)).filter((path) => !written.includes(path))
      if (opts.json) console.log(JSON.stringify({ written, kept }, null, 2))
      else for (const path of written) console.log(`wrote ${path}`)
    })

  withClientOptions(
    program
      .command('sign')
      .description('print the signature headers for a request (or a ready curl command)')
      .option('-X, --method <method>', 'HTTP method', 'POST')
      .requiredOption('--path <path>', 'request path, e.g. /v1/apps/web/envs/production/deploys')
      .option('--body <json>', 'request body exactly as it will be sent')
      .option('--body-file <path>', 'read the body from a file')
      .option('--curl', 'print a full curl command instead of headers')
      .option('--json', 'print JSON: { method, url, headers, body }'),
  )
    .addHelpText(
      'after',
      example(
        `deploy-agent sign --key-id ci-main --key-file ci-main.key --audience web-1 \\\n    --path /v1/apps/web/envs/production/deploys --body '{"ref":"v1.2.3"}' --curl`,
      ),
    )
    .action(async (opts: ClientFlags & { method: string; path: string; body?: string; bodyFile?: string; curl?: boolean }) => {
      if (!opts.keyId || !opts.keyFile) throw new UsageError('sign needs --key-id and --key-file')
      const body = opts.bodyFile ? await readFile(opts.bodyFile, 'utf8') : (opts.body ?? '')
      const method = opts.method.toUpperCase()
      const key = await fromFlagFile('--key-file', opts.keyFile, readSigningKey)
      const audience = opts.audience ?? new URL(opts.url).hostname
      const headers = signRequest({ keyId: opts.keyId, key, audience, method, path: opts.path, body })
      const names: Record<string, string> = {
        [HEADER.keyId]: 'Deploy-Key-Id',
        [HEADER.timestamp]: 'Deploy-Timestamp',
        [HEADER.nonce]: 'Deploy-Nonce',
        [HEADER.signature]: 'Deploy-Signature',
      }
      const named = Object.fromEntries(Object.entries(headers).map(([name, value]) => [names[name] ?? name, value]))
      if (opts.json) {
        console.log(JSON.stringify({ method, url: new URL(opts.path, opts.url).toString(), headers: named, body }, null, 2))
        return
      }
      const lines = Object.entries(named).map(([name, value]) => `${name}: ${value}`)
      if (!opts.curl) {
        console.log(lines.join('\n'))
        return
      }
      const parts = ['curl', '-sS', '-X', method, shellQuote(new URL(opts.path, opts.url).toString())]
      for (const line of lines) parts.push('-H', shellQuote(line))
      if (body !== '') parts.push('-H', shellQuote('Content-Type: application/json'), '--data-binary', shellQuote(body))
      console.log(parts.join(' '))
    })

  withClientOptions(
    program.command('status').description('apps, envs, live releases, running deploys, last backups').option('--json', 'print JSON'),
  )
    .addHelpText(
      'after',
      example(
        'DEPLOY_AGENT_STATUS_TOKEN_FILE=/etc/deploy-agent/status.token deploy-agent status',
        'deploy-agent status --json --key-id ci-main --key-file ci-main.key',
      ),
    )
    .action(async (opts: ClientFlags) => {
      const status = await (await clientFrom(opts)).get<StatusBody>('/v1/status')
      if (opts.json) {
        console.log(JSON.stringify(status, null, 2))
        return
      }
      const paint = painter()
      const rows = [['APP', 'ENV', 'LIVE', 'PORT', 'DEPLOYING', 'LAST BACKUP']]
      for (const [appName, app] of Object.entries(status.apps)) {
        for (const [envName, env] of Object.entries(app.envs)) {
          rows.push([
            appName,
            envName,
            env.live?.release ?? '-',
            env.live?.port != null ? String(env.live.port) : '-',
            env.deploying ? `${env.deploying.id} ${paint.state(env.deploying.state)}` : '-',
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
