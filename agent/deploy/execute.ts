// Runs a plan's steps in order, making no decisions of its own: what to do, and why, was decided by plan.ts.
import { routeTo, type EnvSwitch } from './observe-env.js'
import { describeSteps, type Step } from './plan.js'
import type { Instance, Runtime } from './runtime.js'

export interface StepExecutor {
  runtime: Runtime
  /** nginx's upstream, or an env of workers only: its hand-over record. */
  router: EnvSwitch
  /** Health and smoke checks of an instance; throws when it fails them. */
  verify(instance: Instance): Promise<void>
  /** Hears each step once it is done, with its text. */
  done?(step: Step, text: string): Promise<void> | void
}

export async function executeSteps(steps: Step[], x: StepExecutor): Promise<void> {
  for (const step of steps) {
    switch (step.do) {
      case 'remove':
        await x.runtime.remove(step.instance)
        break
      case 'retire':
        await x.runtime.retire(step.instance)
        break
      case 'revive':
        if (!(await x.runtime.isAlive(step.instance))) await x.runtime.revive(step.instance)
        break
      case 'verify':
        await x.verify(step.instance)
        break
      case 'switch':
        await routeTo(x.router, step.instance)
        // A candidate recovery keeps live gets a serving release's CPU weight (a no-op for one that has it).
        await x.runtime.promote(step.instance).catch(() => undefined)
        break
      case 'stop-singletons':
        await x.runtime.stopSingletons(step.instance)
        break
      case 'start-singletons':
        await x.runtime.startSingletons(step.instance)
        break
      case 'remove-one-off':
        await x.runtime.removeOneOff(step.id)
        break
    }
    await x.done?.(step, describeSteps([step])[0] as string)
  }
}
