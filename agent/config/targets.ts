// Looking up an app+env named in a request, and the env's own rule for which refs it accepts.
import { ForbiddenError, NotFoundError, ValidationError } from '../errors.js'
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

/** A Docker tag: what an image app's deploy ref must be. */
export const IMAGE_TAG = /^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$/

/** A deploy request's ref and pins fit the kind of app: a git ref and commit, or an image tag and digest. */
export function checkPins(target: Target, request: { ref: string; commit?: string; digest?: string }): void {
  const where = `${target.app}/${target.env}`
  if (target.appConfig.image) {
    if (request.commit !== undefined)
      throw new ValidationError(`${where} deploys the image ${target.appConfig.image}: pin it with digest (sha256:…), not commit`)
    if (!IMAGE_TAG.test(request.ref))
      throw new ValidationError(`${where} deploys image tags: "${request.ref}" is not one (letters, digits, _ . -; at most 128)`)
  } else if (request.digest !== undefined) {
    throw new ValidationError(`${where} builds from git: pin it with commit, not digest (digest is for image apps)`)
  }
}

/**
 * The env's container settings: the app's, with each key the env sets replacing the app's. `service`: that
 * service's containers, whose own `volumes` (if any) replace the env's and the app's; without it, the migration's.
 */
export function containerSettings(target: Target, service?: string): ContainerSettings {
  const merged: ContainerSettings = { ...target.appConfig.container }
  for (const [key, value] of Object.entries(target.envConfig.container ?? {})) {
    if (value !== undefined) Object.assign(merged, { [key]: value })
  }
  for (const key of ['memory', 'pids'] as const) if (merged[key] === undefined) delete merged[key]
  // The most specific list wins whole (service, env, app), as a list under `container` does: lists never merge.
  const own = service === undefined ? undefined : target.appConfig.services?.[service]?.volumes
  const volumes = own ?? target.envConfig.volumes ?? target.appConfig.volumes
  if (volumes.length > 0) merged.volumes = volumes.map((v) => ({ ...v }))
  if (target.appConfig.allowDockerSocket) merged.allowDockerSocket = true
  return merged
}

/** Whether the config has this app+env (own keys only, as findTarget). */
export function hasTarget(config: Config, app: string, env: string): boolean {
  return Object.hasOwn(config.apps, app) && Object.hasOwn((config.apps[app] as AppConfig).envs, env)
}
