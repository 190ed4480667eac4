// The prepare phase of a deploy — RESOLVING, BACKING_UP, BUILDING, MIGRATING — which changes nothing that
// serves: the ref resolved to a commit (tags checked against the ledger), a pre-deploy backup, the release's image
// built (or reused), its migrations run in a one-off container. Also the environment the app's containers get.
// An image app resolves by pulling its tag (the digest checked against the pin and the ledger) and "builds" by
// keeping the pulled image under the release's local tag.
import { readFile } from 'node:fs/promises'
import { appDatabaseUrl } from '../config/database-url.js'
import { readEnvFile } from '../config/envfile.js'
import { servicesOf } from '../config/services.js'
import { containerSettings, IMAGE_TAG, type Target } from '../config/targets.js'
import { registryOf, type RegistryAuth } from '../docker/pull.js'
import { ConflictError } from '../errors.js'
import { envSecretValues } from '../observability/scrub.js'
import type { SourceRepo, TagMemory } from './ports.js'
import { DeployFailure, type DeployRun } from './run.js'
import type { Runtime } from './runtime.js'

export interface PrepareDeps {
  /** The host's engine: images, builds, pulls and migrations (a swarm env's too: it runs them on its manager). */
  runtime: Runtime
  /** An env's own runtime when it is not the host's containers (`runtime: swarm`). */
  runtimeFor?: (target: Target) => Runtime
  repo(app: string): SourceRepo
  tags: TagMemory
  /** Takes a verified pre-deploy backup pinned to the release and answers its id. */
  backup?: (target: Target, release: string) => Promise<string>
  /** PITR: a named restore point, answered once the WAL receiver has flushed past it; null when the env has no PITR. */
  restorePoint?: (target: Target, deployId: string) => Promise<{ restorePoint: string; lsn: string } | null>
  /** Hears the secret values read at deploy time (env file values, database password) so they are scrubbed. */
  learnSecrets?: (values: string[]) => void
}

/** A release ready to start: its image, name and commit. */
export interface Prepared {
  image: string
  release: string
  commit: string
  /** The images of services with a build of their own, by service. */
  serviceImages?: Record<string, string>
}

/** A release name usable in image tags and container labels: the tag name, or the short commit for branches. */
export function releaseName(kind: 'branch' | 'tag', ref: string, commit: string): string {
  return kind === 'tag' ? ref.replace(/[^A-Za-z0-9_.-]/g, '-') : commit.slice(0, 12)
}

/** RESOLVING → (BACKING_UP) → BUILDING → (MIGRATING): the release's image, ready to start. */
export async function prepareRelease(deps: PrepareDeps, run: DeployRun, target: Target): Promise<Prepared> {
  await run.move('RESOLVING')
  const { commit, release } = await resolve(deps, run, target)
  if (target.envConfig.backupBeforeDeploy) {
    await run.move('BACKING_UP')
    await backUp(deps, run, target, release)
  }
  await run.move('BUILDING', { commit, release })
  const image = target.appConfig.image
    ? await keepPulled(deps, run, target, commit, release)
    : await build(deps, run, target, commit, release, target.appConfig.build)
  // Every image of the release is built before anything runs: a service's failing build fails the deploy here.
  const serviceImages: Record<string, string> = {}
  for (const s of servicesOf(target)) if (s.build) serviceImages[s.name] = await build(deps, run, target, commit, release, s.build, s.name)
  if (target.appConfig.migrate) {
    const point = await deps.restorePoint?.(target, run.deploy.id)
    if (point) await run.log({ event: 'restorePoint', ...point })
    await run.move('MIGRATING', point ? { details: point } : {})
    await migrate(deps, run, target, image)
  }
  return { image, release, commit, serviceImages }
}

async function resolve(deps: PrepareDeps, run: DeployRun, target: Target): Promise<{ commit: string; release: string }> {
  if (target.appConfig.image) return await pull(deps, run, target, target.appConfig.image)
  const { ref, commit: pinned } = run.deploy
  const rule = target.envConfig.ref
  const repo = deps.repo(target.app)
  await repo.fetch()
  let commit: string
  if (rule.kind === 'tag') {
    commit = (await repo.resolveTag(ref)).commit
    if (pinned && pinned !== commit) throw new ConflictError('commit_mismatch', `tag ${ref} is ${commit}, not the requested ${pinned}`)
    deps.tags.check(target.app, ref, commit)
    await deps.tags.record(target.app, ref, commit)
  } else {
    const head = await repo.resolveBranch(ref)
    if (pinned && pinned !== head && !(await repo.isAncestor(pinned, head))) {
      throw new ConflictError('commit_not_on_branch', `commit ${pinned} is not on branch ${ref}`)
    }
    commit = pinned ?? head
  }
  const release = releaseName(rule.kind, ref, commit)
  await run.log({ event: 'resolved', ref, commit, release })
  return { commit, release }
}

/**
 * Pulls `<image>:<ref>` and answers its digest as the release's commit. The deploy's `commit` is the pinned
 * digest, if any; the ledger remembers each tag's first digest, so a tag pushed again is refused, not deployed.
 */
async function pull(deps: PrepareDeps, run: DeployRun, target: Target, image: string): Promise<{ commit: string; release: string }> {
  const { ref: tag, commit: pinned } = run.deploy
  if (!IMAGE_TAG.test(tag)) throw new DeployFailure('invalid_tag', `"${tag}" is not an image tag (${IMAGE_TAG.source})`)
  const { digest } = await deps.runtime.pullImage({
    image,
    tag,
    auth: await registryAuth(deps, target, image),
    timeoutMs: target.appConfig.pullTimeoutSec * 1000,
    onLine: (line) => run.note({ event: 'pull', line }),
  })
  if (pinned && pinned !== digest)
    throw new ConflictError('digest_mismatch', `${image}:${tag} is ${digest}, not the pinned ${pinned}; refusing to deploy it`)
  deps.tags.check(target.app, tag, digest)
  await deps.tags.record(target.app, tag, digest)
  const release = releaseName('tag', tag, digest)
  await run.log({ event: 'resolved', ref: tag, digest, image: `${image}@${digest}`, release })
  return { commit: digest, release }
}

/** The registry credentials of the app, the password read now (so a rotated one is used) and learnt as a secret. */
async function registryAuth(deps: PrepareDeps, target: Target, image: string): Promise<RegistryAuth | undefined> {
  const auth = target.appConfig.registryAuth
  return auth && readRegistryAuth(auth, registryOf(image), deps.learnSecrets)
}

/** Credentials for `serveraddress` from config (`registryAuth`), the password read from its file and learnt as a secret. */
export async function readRegistryAuth(
  auth: { username: string; passwordFile: string },
  serveraddress: string,
  learnSecrets?: (values: string[]) => void,
): Promise<RegistryAuth> {
  const password = (await readFile(auth.passwordFile, 'utf8')).trim()
  learnSecrets?.([password])
  return { username: auth.username, password, serveraddress }
}

/** The pulled image under the release's local tag, labelled with its digest; kept, rolled back to and pruned like a built one. */
async function keepPulled(deps: PrepareDeps, run: DeployRun, target: Target, digest: string, release: string): Promise<string> {
  const image = target.appConfig.image as string
  const existing = await deps.runtime.releaseImage(target, release)
  const kept =
    existing && existing.commit === digest
      ? existing
      : await deps.runtime.keepPulled({
          app: target.app,
          env: target.env,
          release,
          digest,
          source: `${image}@${digest}`,
          timeoutMs: target.appConfig.pullTimeoutSec * 1000,
          onLine: (line) => run.note({ event: 'build', line }),
        })
  await run.log({ event: 'build', pulled: true, image: kept.ref, digest, ...(kept === existing && { cached: true }) })
  // The kept image holds the pulled content (as its parent): the pull's own names go, so pruning a release frees
  // its layers and no registry name is left behind per tag.
  for (const ref of [`${image}:${run.deploy.ref}`, `${image}@${digest}`])
    await deps.runtime.removeImage(ref).catch((err: unknown) => run.logger.warn({ err, image: ref }, 'could not untag the pulled image'))
  return runnableImage(target, kept)
}

/**
 * What a container of a kept release is created from: an image app's by image id, so what runs is exactly the
 * content pulled by digest (a tag, even a local one, can be moved); a built app's by its tag, as operators read it.
 */
export function runnableImage(target: Target, kept: { ref: string; id?: string }): string {
  return target.appConfig.image && kept.id ? kept.id : kept.ref
}

/** The deploy stops here, before any change, if the backup fails. */
async function backUp(deps: PrepareDeps, run: DeployRun, target: Target, release: string): Promise<void> {
  if (!deps.backup) throw new DeployFailure('backup_unavailable', 'backupBeforeDeploy is set but this agent has no backup service')
  const backupId = await deps.backup(target, release)
  await run.log({ event: 'backup', backupId, pinnedBy: release })
}

async function build(
  deps: PrepareDeps,
  run: DeployRun,
  target: Target,
  commit: string,
  release: string,
  build: Target['appConfig']['build'],
  service?: string,
): Promise<string> {
  const existing = await deps.runtime.releaseImage(target, release, service)
  if (existing && existing.commit === commit) {
    await run.log({ event: 'build', cached: true, image: existing.ref })
    return existing.ref
  }
  let lines = 0 // only counted: a long build's output is in its log, not held here
  const image = await deps.runtime.buildRelease({
    app: target.app,
    env: target.env,
    release,
    service,
    commit,
    context: deps.repo(target.app).archive(commit, build.context),
    dockerfile: build.dockerfile,
    buildArgs: { ...build.args, VERSION: release },
    timeoutMs: build.timeoutSec * 1000,
    cpuShares: build.cpuShares,
    onLine: (line) => {
      lines += 1
      run.note({ event: 'build', ...(service ? { service } : {}), line })
    },
  })
  await run.log({ event: 'build', image, lines })
  return image
}

export async function appEnvironment(deps: Pick<PrepareDeps, 'learnSecrets'>, target: Target): Promise<string[]> {
  const vars = await readEnvFile(target.envConfig.envFile)
  // The values just read may be newer than the scrubber's (an env file edited since the start or the last reload).
  const secrets = envSecretValues(vars)
  const db = target.envConfig.database
  if (db) {
    const password = db.passwordFile ? (await readFile(db.passwordFile, 'utf8')).trim() : undefined
    secrets.push(password ?? decodeURIComponent(new URL(db.url).password))
    vars.push(`${db.envName}=${appDatabaseUrl(db, password)}`)
  }
  deps.learnSecrets?.(secrets)
  return vars
}

async function migrate(deps: PrepareDeps, run: DeployRun, target: Target, image: string): Promise<void> {
  const migrate = target.appConfig.migrate as NonNullable<Target['appConfig']['migrate']>
  const result = await deps.runtime.runMigration({
    app: target.app,
    env: target.env,
    deployId: run.deploy.id,
    image,
    command: migrate.command,
    variables: await appEnvironment(deps, target),
    timeoutMs: migrate.timeoutSec * 1000,
    onLine: (line) => run.note({ event: 'migrate', line }),
    container: containerSettings(target),
    cpuShares: migrate.cpuShares,
  })
  if (result.timedOut)
    throw new DeployFailure(
      'migration_timeout',
      `migration ran past ${migrate.timeoutSec} s and was killed; last lines:\n${result.logTail.join('\n')}`,
    )
  if (result.exitCode !== 0)
    throw new DeployFailure('migration_failed', `migration exited with ${result.exitCode}; last lines:\n${result.logTail.join('\n')}`)
  await run.log({ event: 'migrate', exitCode: 0 })
}
