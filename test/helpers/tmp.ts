import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'

/** A fresh directory under os.tmpdir(), removed in `t`'s teardown (unique even when a suite runs twice at once). */
export async function tempDir(t: { teardown: (fn: () => unknown) => void }, prefix = 'deploy-agent-test-'): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), prefix))
  t.teardown(() => rm(dir, { recursive: true, force: true }))
  return dir
}
