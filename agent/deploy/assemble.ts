// Builds the deploy side from the config: one git mirror per app, one nginx upstream per env, the container
// runtime, the pipeline and the coordinator. The only place these concrete classes meet.
import { join } from 'node:path'
import type { BackupService } from '../backup/service.js'
import type { Config } from '../config/schema.js'
import { primaryPorts, upstreamsOf } from '../config/services.js'
import type { Target } from '../config/targets.js'
import { DockerEngine } from '../docker/engine.js'
import { GitMirror } from '../git/mirror.js'
import { TagLedger } from '../git/tag-ledger.js'
import type { Notice } from '../notify/notifier.js'
import type { Logger } from '../observability/logger.js'
import type { PitrService } from '../pitr/service.js'
import { NginxUpstream, type UpstreamSwitch } from '../proxy/nginx.js'
import type { DeployStore } from '../store/deploys.js'
import { DeployCoordinator } from './coordinator.js'
import { HandOverFile, type HandOver } from './handover.js'
import type { LiveRelease } from './live.js'
import { DeployFailure, DeployPipeline, type PipelineDeps } from './pipeline.js'
import { readRegistryAuth } from './prepare.js'
import { ContainerRuntime, type Runtime } from './runtime.js'
import { SwarmRuntime } from './swarm-runtime.js'
import type { DeployListener } from './transition.js'

export interface AssembleOptions {
  docker?: DockerEngine
  /** Takes the pre-deploy backups of envs with `backupBeforeDeploy`. */
  backups?: Pick<BackupService, 'take'>
  /** Takes the restore point before each migration of envs with `database.pitr`. */
  pitr?: Pick<PitrService, 'restorePoint'>
  notify?: (notice: Notice) => void
  onDeployEvent?: DeployListener
  /** Hears the secret values read at deploy time (env file values, database password) so they are scrubbed. */
  learnSecrets?: (values: string[]) => void
  /** Judges a release by its traffic through nginx while OBSERVING (envs with proxy.accessLog). */
  watchTraffic?: PipelineDeps['watchTraffic']
}

export async function assembleDeploys(
  config: Config,
  store: DeployStore,
  logger: Logger,
  options: AssembleOptions = {},
): Promise<DeployCoordinator> {
  const docker = options.docker ?? new DockerEngine()
  const backups = options.backups
  const tags = await TagLedger.open(join(config.stateDir, 'tags.json'))
  const mirrors = new Map<string, GitMirror>()
  const repo = (app: string): GitMirror => {
    let mirror = mirrors.get(app)
    if (!mirror)
      mirrors.set(
        app,
        (mirror = new GitMirror({ url: config.apps[app]?.repo as string, dir: join(config.stateDir, 'repos', `${app}.git`) })),
      )
    return mirror
  }
  const routers = new Map<string, NginxUpstream>()
  const router = (target: Target): UpstreamSwitch => {
    const proxy = target.envConfig.proxy
    if (!proxy) throw new DeployFailure('no_proxy', `${target.app}/${target.env} has no proxy config; blue-green needs one`)
    const key = `${target.app}/${target.env}`
    let upstream = routers.get(key)
    if (!upstream) {
      upstream = new NginxUpstream({
        upstreamFile: proxy.upstreamFile,
        upstreamName: proxy.upstreamName ?? `${target.app}_${target.env}`.replace(/-/g, '_'),
        // Several web services: their upstreams share the env's one file (one nginx -t + reload switches them all).
        upstreams: target.appConfig.services ? upstreamsOf(target) : undefined,
        testCommand: proxy.test,
        reloadCommand: proxy.reload,
        pidFile: proxy.pidFile,
      })
      routers.set(key, upstream)
    }
    return upstream
  }
  // An app of workers only has no nginx: the agent records which group is live (agent/deploy/handover.ts).
  const handOver = (target: Target): HandOver => new HandOverFile(join(config.stateDir, 'handover', `${target.app}.${target.env}.json`))
  const runtime = new ContainerRuntime(docker)
  const swarm = docker.swarm()
  // A swarm env's services on the swarm this host manages; its images and migrations stay on this host.
  const runtimeFor = (target: Target): Runtime => {
    const settings = target.envConfig.swarm
    if (target.envConfig.runtime !== 'swarm' || !settings) return runtime
    const { registryAuth, ...rest } = settings
    // The registry's host: what the engine keys credentials by (`host:port`, without the path).
    const server = settings.registry.split('/')[0] as string
    return new SwarmRuntime(runtime, swarm, {
      ...rest,
      ports: primaryPorts(target),
      ...(registryAuth && { credentials: () => readRegistryAuth(registryAuth, server, options.learnSecrets) }),
    })
  }
  const pipeline = (onLive: (target: Target, live: LiveRelease) => void) =>
    new DeployPipeline({
      store,
      runtime,
      runtimeFor,
      repo,
      tags,
      router,
      handOver,
      logger,
      backup: backups && (async (target, release) => (await backups.take(target, 'predeploy', { pinnedBy: release })).id),
      restorePoint:
        options.pitr && ((target, deployId) => (options.pitr as Pick<PitrService, 'restorePoint'>).restorePoint(target, deployId)),
      onLive,
      onDeployEvent: options.onDeployEvent,
      learnSecrets: options.learnSecrets,
      watchTraffic: options.watchTraffic,
    })
  return new DeployCoordinator({
    config,
    store,
    pipeline,
    runtime,
    runtimeFor,
    router,
    handOver,
    logger,
    notify: options.notify,
    onDeployEvent: options.onDeployEvent,
  })
}
