// The recovery instance's work dir goes into PostgreSQL's config and its restore_command (run by /bin/sh): a temp
// dir with a space or a quote in it is refused before anything is made.
import t from 'tap'
import { recoverToDump, type RecoverOptions } from '../../agent/pitr/recover.js'

t.test('recoverToDump: a TMPDIR that is not a plain path is refused, naming it', async (t) => {
  const saved = process.env.TMPDIR
  t.teardown(() => {
    if (saved === undefined) delete process.env.TMPDIR
    else process.env.TMPDIR = saved
  })
  process.env.TMPDIR = "/tmp/it's here"
  await t.rejects(recoverToDump({ workPrefix: 'deploy-agent-pitr-test-' } as RecoverOptions), {
    code: 'pitr_failed',
    message: /temp dir "\/tmp\/it's here" \(TMPDIR\) must be a path of letters/,
  })
})
