// `deploy-agent` entry point. Exit codes (the README's table): 0 success, 1 the agent refused or the operation
// failed (a followed deploy that did not succeed, a failed verification), 2 bad usage or bad config, 3 the agent
// could not be reached (worth a retry).
import { AgentError, ConfigError } from '../errors.js'
import { AgentRequestError, AgentUnreachableError } from './client.js'
import { buildProgram, UsageError } from './program.js'

/** Prints an error the way an operator wants to read it and picks the exit code. */
function report(err: unknown): number {
  if (err instanceof ConfigError) {
    console.error(err.message)
    return 2
  }
  if (err instanceof UsageError) {
    console.error(`error: ${err.message}`)
    return 2
  }
  if (err instanceof AgentUnreachableError) {
    console.error(`error: ${err.message}`)
    return 3
  }
  if (err instanceof AgentRequestError || err instanceof AgentError) {
    console.error(`error: ${err.code}: ${err.message}`)
    return 1
  }
  console.error(`error: ${err instanceof Error ? err.message : String(err)}`)
  return 1
}

try {
  await buildProgram().parseAsync(process.argv)
} catch (err) {
  process.exitCode = report(err)
}
