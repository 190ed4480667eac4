// Looking up an app+env named in a request, and the env's own rule for which refs it accepts.
import { ForbiddenError, NotFoundError } from '../errors.js'
import type { ContainerSettings } from '../docker/types.js'
import { matchesGlob } from './glob.js'
import type { AppConfig, Config, EnvConfig, RefRule } from './schema.js'

export interface Target {
  app: string
  env: string
  appConfig: AppConfig
  envConfig: EnvConfig
}

/** The app+env a request names. Only the config's own keys count: `constructor` is an unknown app, not Object's. */
export function findTarget(config: Config, app: string, env: string): Target {
  const appConfig = Object.hasOwn(config.apps, app) ? config.apps[app] : undefined
  if (!appConfig) throw new NotFoundError(`unknown app "${app}"`)
  const envConfig = Object.hasOwn(appConfig.envs, env) ? appConfig.envs[env] : undefined
  if (!envConfig) throw new NotFoundError(`app "${app}" has no env "${env}"`)
  return { app, env, appConfig, envConfig }
}

/** `branch:main` accepts the ref "main"; `tag:v*.*.*` accepts refs matching the glob. */
export function checkRefAllowed(rule: RefRule, ref: string, where: string): void {
  if (!matchesGlob(ref, rule.pattern)) {
    throw new ForbiddenError(`${where} deploys only ${rule.kind} refs matching "${rule.pattern}", not "${ref}"`)
  }
}

/** The env's container settings: the app's, with each key the env sets replacing the app's. */
export function containerSettings(target: Target): ContainerSettings {
  const merged: ContainerSettings = { ...target.appConfig.container }
  for (const [key, value] of Object.entries(target.envConfig.container ?? {})) {
    if (value !== undefined) Object.assign(merged, { [key]: value })
  }
  for (const key of ['memory', 'pids'] as const) if (merged[key] === undefined) delete merged[key]
  // The env's list replaces the app's, as a list under `container` does.
  const volumes = target.envConfig.volumes ?? target.appConfig.volumes
  if (volumes.length > 0) merged.volumes = volumes.map((v) => ({ ...v }))
  if (target.appConfig.allowDockerSocket) merged.allowDockerSocket = true
  return merged
}

/** Whether the config has this app+env (own keys only, as findTarget). */
export function hasTarget(config: Config, app: string, env: string): boolean {
  return Object.hasOwn(config.apps, app) && Object.hasOwn((config.apps[app] as AppConfig).envs, env)
}
