// Recovery after a crash, the compose way: observe what Docker and nginx really show for an unfinished deploy,
// decide a plan in a pure function (each step with its cause), then execute it without further decisions.
import type { Deploy } from '../store/deploys.js'
import type { Instance } from './runtime.js'
import type { DeployState } from './states.js'

export interface Observed {
  /** The port nginx sends traffic to now. */
  routedPort: number | null
  /** Web instances created by this deploy (its candidate), newest first. */
  candidates: Instance[]
  /** The release that was live before this deploy, if its instance still exists. */
  previous: Instance | null
  /** Whether the candidate answers its health check now (only asked when nginx routes to it). */
  candidateHealthy: boolean
}

export type RecoveryStep =
  | { do: 'remove'; instance: Instance; cause: string }
  | { do: 'retire'; instance: Instance; cause: string }
  | { do: 'revive'; instance: Instance; cause: string }
  /** nginx may not run what its upstream file says (a crash between writing it and the reload): apply it again. */
  | { do: 'switch'; instance: Instance; cause: string }

export interface RecoveryPlan {
  steps: RecoveryStep[]
  /** States to pass through, the last one terminal (empty: leave the deploy as it is). */
  path: DeployState[]
  error: { code: string; message: string } | null
  requeue: boolean
}

const BEFORE_SWITCH: ReadonlySet<string> = new Set(['RESOLVING', 'BACKING_UP', 'BUILDING', 'MIGRATING', 'STARTING', 'VERIFYING'])

export function planRecovery(deploy: Deploy, o: Observed): RecoveryPlan {
  const interrupted = { code: 'interrupted', message: `the agent stopped during ${deploy.state}; recovered at start-up` }
  if (deploy.state === 'AWAITING_APPROVAL') return { steps: [], path: [], error: null, requeue: false }
  if (deploy.state === 'QUEUED') return { steps: [], path: [], error: null, requeue: true }

  const removeCandidates = o.candidates.map((instance) => ({ do: 'remove' as const, instance, cause: 'candidate of an interrupted deploy' }))
  if (BEFORE_SWITCH.has(deploy.state)) {
    // Nothing was switched: the old release still serves; only the candidate has to go.
    return { steps: removeCandidates, path: ['FAILED'], error: interrupted, requeue: false }
  }

  const candidate = o.candidates[0] ?? null
  const routedToCandidate = candidate !== null && o.routedPort === candidate.port
  if (routedToCandidate && o.candidateHealthy && deploy.state !== 'ROLLING_BACK') {
    // The new release is live and healthy: finish the deploy; the old one stops as it would have.
    const steps: RecoveryStep[] = [{ do: 'switch', instance: candidate, cause: 'make sure nginx runs the upstream file' }]
    if (o.previous?.running) steps.push({ do: 'retire', instance: o.previous, cause: 'replaced by the live release' })
    return { steps, path: ['SUCCEEDED'], error: null, requeue: false }
  }
  if (deploy.kind === 'rollback' && !routedToCandidate) {
    // A manual rollback that never got its switch: the release it revived goes back to standby.
    const steps = o.candidates.filter((c) => c.running).map((instance) => ({ do: 'retire' as const, instance, cause: 'the rollback did not switch to it' }))
    return { steps, path: ['FAILED'], error: interrupted, requeue: false }
  }
  const rollbackPath: DeployState[] = deploy.state === 'ROLLING_BACK' ? ['ROLLED_BACK'] : ['ROLLING_BACK', 'ROLLED_BACK']
  if (!routedToCandidate) {
    // nginx still (or again) routes to the old release: make sure it runs, drop the candidate.
    const steps: RecoveryStep[] = []
    if (o.previous) {
      if (!o.previous.running) steps.push({ do: 'revive', instance: o.previous, cause: 'nginx routes to it but it is stopped' })
      steps.push({ do: 'switch', instance: o.previous, cause: 'make sure nginx runs the upstream file' })
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
      { do: 'revive', instance: o.previous, cause: 'the new release is unhealthy' },
      { do: 'switch', instance: o.previous, cause: 'back to the previous release' },
      ...removeCandidates.map((s) => ({ ...s, do: 'retire' as const, cause: 'unhealthy release, kept stopped for inspection' })),
    ],
    path: rollbackPath,
    error: { code: 'interrupted', message: `${interrupted.message}; the new release was unhealthy, so it was rolled back` },
    requeue: false,
  }
}

/** A plan as text, one line a step, for the log and for tests. */
export function describePlan(plan: RecoveryPlan): string {
  const lines = plan.steps.map((s) => `${s.do} ${s.instance.release}@${s.instance.port}: ${s.cause}`)
  if (plan.requeue) lines.push('requeue')
  if (plan.path.length > 0) lines.push(`→ ${plan.path.join(' → ')}${plan.error ? ` (${plan.error.code})` : ''}`)
  return lines.join('\n')
}
