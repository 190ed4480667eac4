// Reads the YAML config, applies the few documented environment overrides, and validates it completely.
import { readFile } from 'node:fs/promises'
import { dirname, resolve } from 'node:path'
import { parseDocument } from 'yaml'
import type { z } from 'zod'
import { resolveHostPath } from '../docker/mounts.js'
import { ConfigError } from '../errors.js'
import { configSchema, type Config } from './schema.js'

/** Environment variables that override config keys (useful in containers and systemd drop-ins). */
export const ENV_OVERRIDES: Record<string, (raw: Record<string, unknown>, value: string) => void> = {
  DEPLOY_AGENT_LISTEN_HOST: (raw, v) => (raw.listen = { ...(raw.listen as object), host: v }),
  DEPLOY_AGENT_LISTEN_PORT: (raw, v) => (raw.listen = { ...(raw.listen as object), port: /^\d+$/.test(v) ? Number(v) : v }),
  DEPLOY_AGENT_STATE_DIR: (raw, v) => (raw.stateDir = v),
  DEPLOY_AGENT_AUDIENCE: (raw, v) => (raw.audience = v),
}

/** `apps.lifeos.envs.production.ports[1]` from zod's path array. */
export function formatKeyPath(path: readonly PropertyKey[]): string {
  return path.reduce<string>(
    (out, part) => (typeof part === 'number' ? `${out}[${part}]` : out ? `${out}.${String(part)}` : String(part)),
    '',
  )
}

function describeIssue(issue: z.core.$ZodIssue): string[] {
  if (issue.code === 'invalid_union') {
    // A value of one option's type (a map of port pairs, not a pair) gets that option's own messages.
    const fitting = issue.errors.filter((errs) => !errs.some((e) => e.code === 'invalid_type' && e.path.length === 0))
    if (fitting.length === 1) return (fitting[0] ?? []).flatMap((e) => describeIssue({ ...e, path: [...issue.path, ...e.path] }))
  }
  if (issue.code === 'unrecognized_keys') {
    // A password written into the config: say where it goes instead.
    const hint = (key: string) => (key === 'password' ? ' (a password is never in the config: name a file holding it in passwordFile)' : '')
    return issue.keys.map((key) => `${formatKeyPath([...issue.path, key])}: unknown key${hint(key)}`)
  }
  if (issue.code === 'invalid_key') {
    return [`${formatKeyPath(issue.path)}: ${issue.issues[0]?.message ?? issue.message}`]
  }
  if (issue.code === 'invalid_type' && issue.input === undefined) {
    const message = issue.message.startsWith('is required') ? issue.message : 'is required'
    return [`${formatKeyPath(issue.path)}: ${message}`]
  }
  return [`${formatKeyPath(issue.path) || '(root)'}: ${issue.message}`]
}

/** Relative paths in the config are relative to the config file's directory, as in nginx or systemd. */
function resolvePaths(config: Config, baseDir: string): Config {
  const at = (p: string) => resolve(baseDir, p)
  const maybe = (p: string | undefined) => (p === undefined ? undefined : at(p))
  const isLocalPath = (repo: string) => repo.startsWith('./') || repo.startsWith('../')
  return {
    ...config,
    stateDir: at(config.stateDir),
    listen: { ...config.listen, tls: config.listen.tls && { cert: at(config.listen.tls.cert), key: at(config.listen.tls.key) } },
    keys: config.keys.map((k) => ({ ...k, publicKeyFile: maybe(k.publicKeyFile), secretFile: maybe(k.secretFile) })),
    statusToken: config.statusToken && { ...config.statusToken, file: maybe(config.statusToken.file) },
    backups: { ...config.backups, dir: maybe(config.backups.dir) },
    notify: config.notify.map((n) => ({ ...n, secretFile: maybe(n.secretFile) })),
    apps: Object.fromEntries(
      Object.entries(config.apps).map(([name, app]) => [
        name,
        {
          ...app,
          repo: app.repo !== undefined && isLocalPath(app.repo) ? at(app.repo) : app.repo,
          registryAuth: app.registryAuth && { ...app.registryAuth, passwordFile: at(app.registryAuth.passwordFile) },
          envs: Object.fromEntries(
            Object.entries(app.envs).map(([envName, env]) => [
              envName,
              {
                ...env,
                swarm: env.swarm && {
                  ...env.swarm,
                  ...(env.swarm.registryAuth && {
                    registryAuth: { ...env.swarm.registryAuth, passwordFile: at(env.swarm.registryAuth.passwordFile) },
                  }),
                },
                envFile: maybe(env.envFile),
                files: env.files.map(at),
                database: env.database && { ...env.database, passwordFile: maybe(env.database.passwordFile) },
                proxy: env.proxy && { ...env.proxy, upstreamFile: at(env.proxy.upstreamFile), pidFile: maybe(env.proxy.pidFile) },
              },
            ]),
          ),
        },
      ]),
    ),
  }
}

export function parseConfig(yamlText: string, env: NodeJS.ProcessEnv = process.env, source = 'config', baseDir = process.cwd()): Config {
  const doc = parseDocument(yamlText, { uniqueKeys: true, prettyErrors: true })
  if (doc.errors.length > 0) {
    throw new ConfigError(doc.errors.map((e) => `${source}: ${e.message.split('\n')[0]}`))
  }
  const raw = doc.toJS() ?? {}
  if (typeof raw !== 'object' || Array.isArray(raw)) throw new ConfigError([`${source}: must be a YAML mapping`])
  for (const [name, apply] of Object.entries(ENV_OVERRIDES)) {
    const value = env[name]
    if (value !== undefined && value !== '') apply(raw, value)
  }
  const result = configSchema.safeParse(raw, { reportInput: true })
  if (!result.success) throw new ConfigError(result.error.issues.flatMap(describeIssue))
  return resolvePaths(result.data, baseDir)
}

export async function loadConfig(path: string, env: NodeJS.ProcessEnv = process.env): Promise<Config> {
  let text: string
  try {
    text = await readFile(path, 'utf8')
  } catch (err) {
    throw new ConfigError([`${path}: cannot read the config file (${(err as NodeJS.ErrnoException).code ?? String(err)})`])
  }
  const config = parseConfig(text, env, path, dirname(resolve(path)))
  const problems = await volumeHostProblems(config)
  if (problems.length > 0) throw new ConfigError(problems)
  return config
}

/**
 * Host paths of `volumes` that exist, symlinks resolved, must not be the Docker socket either. A missing path is no
 * config problem (it may be created before the first deploy); the deploy refuses it (docker/mounts.ts).
 */
export async function volumeHostProblems(config: Config): Promise<string[]> {
  const problems: string[] = []
  for (const [appName, app] of Object.entries(config.apps)) {
    const lists: [string, Config['apps'][string]['volumes']][] = [[`apps.${appName}.volumes`, app.volumes]]
    for (const [envName, e] of Object.entries(app.envs)) if (e.volumes) lists.push([`apps.${appName}.envs.${envName}.volumes`, e.volumes])
    for (const [name, s] of Object.entries(app.services ?? {}))
      if (s.volumes) lists.push([`apps.${appName}.services.${name}.volumes`, s.volumes])
    for (const [where, mounts] of lists) {
      for (const [i, m] of mounts.entries()) {
        if (m.kind !== 'bind') continue
        const resolved = await resolveHostPath(m, app.allowDockerSocket)
        if ('problem' in resolved && !resolved.missing) problems.push(`${where}[${i}]: ${resolved.problem}`)
      }
    }
  }
  return problems
}

/** Where backups live when `backups.dir` is not set. */
export function backupDir(config: Config): string {
  return config.backups.dir ?? resolve(config.stateDir, 'backups')
}
