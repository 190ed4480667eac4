// Plans, the compose way: observe what the engine and nginx really show, decide in pure functions (each step with
// its cause), then execute the steps without further decisions (execute.ts). Recovery of an interrupted deploy at
// start-up, the start-up clean-up of an env, and the keeper's look every few seconds are all plans.
import type { Deploy } from '../store/deploys.js'
import type { LiveRelease } from './live.js'
import { isRouted, type EnvView } from './observe-env.js'
import { singletonsOf, type Instance } from './runtime.js'
import type { DeployState } from './states.js'

export type Step =
  | { do: 'remove'; instance: Instance; cause: string }
  | { do: 'retire'; instance: Instance; cause: string }
  /** Starts a stopped instance (a running one is left as it is). */
  | { do: 'revive'; instance: Instance; cause: string }
  /** Health and smoke checks; a failure stops the plan. */
  | { do: 'verify'; instance: Instance; cause: string }
  /** nginx may not run what its upstream file says (a crash between writing it and the reload): apply it again. */
  | { do: 'switch'; instance: Instance; cause: string }
  | { do: 'remove-one-off'; id: string; cause: string }
  /** A group's stop-first workers (never two of an env at once: the other group's are stopped first). */
  | { do: 'stop-singletons'; instance: Instance; cause: string }
  | { do: 'start-singletons'; instance: Instance; cause: string }

/** Stop-first worker steps only for groups that have such workers: other plans read exactly as before. */
function singletons(what: 'stop-singletons' | 'start-singletons', instance: Instance | null | undefined, cause: string): Step[] {
  return instance && singletonsOf(instance).length > 0 ? [{ do: what, instance, cause }] : []
}

export interface Observed {
  /** The port nginx sends traffic to now. */
  routedPort: number | null
  /** An app of workers only: the deploy id of the group the hand-over record names (its groups have no port). */
  handedTo?: string | null
  /** Web instances created or revived by this deploy (its candidate), newest first. */
  candidates: Instance[]
  /** The release that was live before this deploy, if its instance still exists. */
  previous: Instance | null
  /** Whether the candidate answers its health check now (only asked when nginx routes to it). */
  candidateHealthy: boolean
}

export interface RecoveryPlan {
  steps: Step[]
  /** States to pass through, the last one terminal (empty: leave the deploy as it is). */
  path: DeployState[]
  error: { code: string; message: string } | null
  requeue: boolean
}

const BEFORE_SWITCH: ReadonlySet<DeployState> = new Set(['RESOLVING', 'BACKING_UP', 'BUILDING', 'MIGRATING', 'STARTING', 'VERIFYING'])
const AFTER_SWITCH: ReadonlySet<DeployState> = new Set(['OBSERVING', 'ROLLING_BACK'])

/** An unfinished deploy found at start-up, planned from what runs now. */
export function planRecovery(deploy: Deploy, o: Observed): RecoveryPlan {
  const interrupted = { code: 'interrupted', message: `the agent stopped during ${deploy.state}; recovered at start-up` }
  if (deploy.state === 'AWAITING_APPROVAL') return { steps: [], path: [], error: null, requeue: false }
  if (deploy.state === 'QUEUED') return { steps: [], path: [], error: null, requeue: true }

  const candidate = o.candidates[0] ?? null
  const routedToCandidate = candidate !== null && isRouted(candidate, o)
  const rollback = deploy.kind === 'rollback'
  // A rollback in OBSERVING or ROLLING_BACK got its switch: it is recovered like a deploy there.
  if (rollback && !routedToCandidate && !AFTER_SWITCH.has(deploy.state)) {
    // A manual rollback that never got its switch: the kept release it started goes back to standby, stopped —
    // never removed, as the normal path does when a rollback fails.
    const steps: Step[] = o.candidates
      .filter((c) => c.running)
      .map((instance) => ({ do: 'retire' as const, instance, cause: 'the rollback did not switch to it' }))
    // A crash inside SWITCHING may have stopped the live release's stop-first workers: they run again.
    if (o.previous?.running) steps.push(...singletons('start-singletons', o.previous, 'the live release keeps its workers'))
    return { steps, path: ['FAILED'], error: interrupted, requeue: false }
  }
  // The kept release a rollback switched to stays, stopped, as a standby; a deploy's candidate goes.
  const removeCandidates = o.candidates.map((instance) =>
    rollback
      ? { do: 'retire' as const, instance, cause: 'kept release of an interrupted rollback, back to standby' }
      : { do: 'remove' as const, instance, cause: 'candidate of an interrupted deploy' },
  )
  if (BEFORE_SWITCH.has(deploy.state)) {
    // Nothing was switched: the old release still serves; only the candidate has to go.
    return { steps: removeCandidates, path: ['FAILED'], error: interrupted, requeue: false }
  }

  if (routedToCandidate && o.candidateHealthy && deploy.state !== 'ROLLING_BACK') {
    // The new release is live and healthy: finish the deploy; the old one stops as it would have.
    const steps: Step[] = [{ do: 'switch', instance: candidate, cause: switchAgain(candidate) }]
    if (o.previous?.running) steps.push({ do: 'retire', instance: o.previous, cause: 'replaced by the live release' })
    // Its stop-first workers start once the replaced release's are stopped (a crash in SWITCHING may have left them off).
    steps.push(...singletons('start-singletons', candidate, 'the live release runs its workers'))
    return { steps, path: ['SUCCEEDED'], error: null, requeue: false }
  }
  const rollbackPath: DeployState[] = deploy.state === 'ROLLING_BACK' ? ['ROLLED_BACK'] : ['ROLLING_BACK', 'ROLLED_BACK']
  if (!routedToCandidate) {
    // nginx still (or again) routes to the old release: make sure it runs, drop the candidate.
    const steps: Step[] = o.candidates.flatMap((c) => singletons('stop-singletons', c, 'the candidate is not live'))
    if (o.previous) {
      if (!o.previous.running) {
        steps.push({ do: 'revive', instance: o.previous, cause: 'nginx routes to it but it is stopped' })
        steps.push({ do: 'verify', instance: o.previous, cause: 'it must answer before nginx is reloaded for it' })
      }
      steps.push({ do: 'switch', instance: o.previous, cause: switchAgain(o.previous) })
      steps.push(...singletons('start-singletons', o.previous, 'the live release runs its workers'))
    }
    return { steps: [...steps, ...removeCandidates], path: rollbackPath, error: interrupted, requeue: false }
  }
  // nginx routes to a candidate that is unhealthy (or a rollback was under way): go back to the old release.
  if (!o.previous) {
    return {
      steps: [],
      path: deploy.state === 'ROLLING_BACK' ? ['FAILED'] : ['ROLLING_BACK', 'FAILED'],
      error: { code: 'rollback_failed', message: `${interrupted.message}; the new release is unhealthy and there is no previous release` },
      requeue: false,
    }
  }
  return {
    steps: [
      ...o.candidates.flatMap((c) => singletons('stop-singletons', c, 'the new release is unhealthy')),
      { do: 'revive', instance: o.previous, cause: 'the new release is unhealthy' },
      { do: 'verify', instance: o.previous, cause: 'it must answer before nginx goes back to it' },
      { do: 'switch', instance: o.previous, cause: 'back to the previous release' },
      ...singletons('start-singletons', o.previous, 'the live release runs its workers'),
      ...removeCandidates.map((s) => ({ ...s, do: 'retire' as const, cause: 'unhealthy release, kept stopped for inspection' })),
    ],
    path: rollbackPath,
    error: { code: 'interrupted', message: `${interrupted.message}; the new release was unhealthy, so it was rolled back` },
    requeue: false,
  }
}

/** Why a switch to the group already routed to is applied again (a group of workers only has no nginx). */
function switchAgain(group: Instance): string {
  return group.port === null ? 'make sure the hand-over record names it' : 'make sure nginx runs the upstream file'
}

/** An unfinished deploy whose app or env left the config: nothing of it can be looked at, so it just ends. */
export function planUnknownEnv(deploy: Deploy): RecoveryPlan {
  const waiting = deploy.state === 'QUEUED' || deploy.state === 'AWAITING_APPROVAL'
  return {
    steps: [],
    path: [waiting ? 'CANCELLED' : 'FAILED'],
    error: { code: 'unknown_env', message: `${deploy.app}/${deploy.env} is no longer in the config` },
    requeue: false,
  }
}

/** Start-up, before any deploy runs: every one-off (migration) container is a crash's leftover. */
export function planStartup(oneOffs: string[]): Step[] {
  return oneOffs.map((id) => ({
    do: 'remove-one-off' as const,
    id,
    cause: 'leftover migration container (no deploy runs at start-up)',
  }))
}

/**
 * The keeper, every few seconds, for an env where no deploy runs: the live release found stopped (a dockerd
 * restarted without live-restore does not always start it again) is started; a release that still runs out of
 * nginx (its retire after a switch failed) is stopped. Only the release the agent knows is live is started.
 */
export function planKeep(view: EnvView, live: LiveRelease | null): Step[] {
  if (!live || !isRouted(live, view)) return []
  const liveInstance = view.instances.find((i) => i.deployId === live.deployId && i.port === live.port)
  if (!liveInstance) return []
  if (!liveInstance.running)
    return [
      { do: 'revive', instance: liveInstance, cause: 'the live release was found stopped (dockerd restarted?)' },
      ...singletons('start-singletons', liveInstance, 'the live release runs its workers'),
    ]
  return view.instances
    .filter((i) => i.running && i !== liveInstance)
    .map((instance) => ({
      do: 'retire' as const,
      instance,
      cause:
        live.port === null
          ? 'runs beside the live group (its retire after the hand-over failed)'
          : 'runs out of nginx (its retire after the switch failed)',
    }))
}

/** Steps as text, one line a step, for the log and for tests. */
export function describeSteps(steps: Step[]): string[] {
  return steps.map((s) =>
    s.do === 'remove-one-off'
      ? `remove-one-off ${s.id}: ${s.cause}`
      : `${s.do} ${s.instance.release}@${s.instance.port ?? s.instance.deployId}: ${s.cause}`,
  )
}

/** A plan as text, one line a step, for the log and for tests. */
export function describePlan(plan: RecoveryPlan): string {
  const lines = describeSteps(plan.steps)
  if (plan.requeue) lines.push('requeue')
  if (plan.path.length > 0) lines.push(`→ ${plan.path.join(' → ')}${plan.error ? ` (${plan.error.code})` : ''}`)
  return lines.join('\n')
}
