// Fault: the agent is SIGKILLed in every deploy state it passes through — BUILDING, MIGRATING, VERIFYING,
// SWITCHING, OBSERVING and ROLLING_BACK — three rounds in a row on one env, each kill followed by a restart on the
// same state dir. Every time the env must end serving the old release or the new one fully live, with no orphan
// container and a deploy record that says what happened; later rounds start from what earlier recoveries left.
import t from 'tap'
import { startAgentRig } from '../helpers/agent-rig.js'
import { CRASH_RIG_OPTIONS, DEPLOY_STATE_CASES, killDuring, type CrashCase } from '../helpers/crash-cases.js'
import { dockerAvailable, ensureBaseImage } from '../helpers/docker.js'
import { skipUnless } from '../helpers/engines.js'
import { SAMPLE_TAGS } from '../helpers/sample-app.js'

const ROUNDS = 3
// Eighteen kills and restarts take longer than the suite's default ten minutes on a loaded box.
t.setTimeout(30 * 60_000)

t.test(
  'Engine fault: SIGKILL of the agent in each deploy state, three times each',
  { skip: skipUnless(await dockerAvailable(), 'docker') },
  async (t) => {
    await ensureBaseImage()
    const rig = await startAgentRig(t, CRASH_RIG_OPTIONS)
    const first = await rig.waitFinished(await rig.startDeploy(SAMPLE_TAGS.good))
    t.equal(first.state, 'SUCCEEDED', JSON.stringify(first.error))

    const cases: CrashCase[] = [
      ...DEPLOY_STATE_CASES,
      // The release breaks after the switch; the kill lands while the agent is switching back to the old one.
      { state: 'ROLLING_BACK', ref: SAMPLE_TAGS.failsAfterSwitch, expect: 'ROLLED_BACK', serves: 'old' },
    ]
    for (let round = 1; round <= ROUNDS; round++) {
      for (const c of cases) await t.test(`round ${round}: SIGKILL during ${c.state}`, (t) => killDuring(t, rig, c))
    }
  },
)
