import t from 'tap'
import { failureLine } from '../../agent/git/mirror.js'

t.test("failureLine: git's last stderr line says what failed", async (t) => {
  t.equal(failureLine('remote: Counting objects\nfatal: repository not found\n'), 'fatal: repository not found')
  t.equal(failureLine(''), '')
})

t.test("failureLine: a full disk is named even when git's last line only says unpacking failed", async (t) => {
  const stderr = [
    'error: file write error: No space left on device',
    'fatal: unable to write loose object file',
    'fatal: unpack-objects failed',
  ].join('\n')
  t.equal(failureLine(stderr), 'fatal: unpack-objects failed (error: file write error: No space left on device)')
})
