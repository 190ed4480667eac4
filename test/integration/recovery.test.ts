// Crash recovery on real engines: the agent process is SIGKILLed while a deploy is in BUILDING, MIGRATING,
// VERIFYING, SWITCHING and OBSERVING; a new agent on the same state dir must drive each deploy to a safe end,
// with the env serving either the old release or the new one fully live, and no orphan containers.
// test/faults/engine-crash.fault.ts repeats this three times per state, ROLLING_BACK included.
import t from 'tap'
import { CRASH_RIG_OPTIONS, DEPLOY_STATE_CASES, killDuring } from '../helpers/crash-cases.js'
import { startAgentRig } from '../helpers/agent-rig.js'
import { dockerAvailable, ensureBaseImage } from '../helpers/docker.js'
import { skipUnless } from '../helpers/engines.js'
import { SAMPLE_TAGS } from '../helpers/sample-app.js'

t.test(
  'Recovery: SIGKILL in each deploy state converges after restart',
  { skip: skipUnless(await dockerAvailable(), 'docker') },
  async (t) => {
    await ensureBaseImage()
    const rig = await startAgentRig(t, CRASH_RIG_OPTIONS)
    const first = await rig.waitFinished(await rig.startDeploy(SAMPLE_TAGS.good))
    t.equal(first.state, 'SUCCEEDED', JSON.stringify(first.error))

    for (const c of DEPLOY_STATE_CASES) await t.test(`SIGKILL during ${c.state}`, (t) => killDuring(t, rig, c))
  },
)
