// The CLI's surface without an agent: every command's help has an example, every command that prints data has
// --json, and the colour decision (NO_COLOR, FORCE_COLOR, a terminal).
import type { Command } from 'commander'
import t from 'tap'
import { colorEnabled, painter } from '../../agent/cli/log-format.js'
import { buildProgram } from '../../agent/cli/program.js'

function allCommands(command: Command): Command[] {
  return [command, ...command.commands.flatMap(allCommands)]
}

function fullName(command: Command): string {
  const names: string[] = []
  for (let c: Command | null = command; c; c = c.parent) names.unshift(c.name())
  return names.join(' ')
}

/** What `<command> --help` prints, including the text added after the options. */
function helpOf(command: Command): string {
  let out = ''
  command.configureOutput({ writeOut: (s) => (out += s), writeErr: (s) => (out += s) })
  command.outputHelp()
  return out
}

const ESC = '\x1b['

t.test('CLI help: every command, nested ones too, ends with an example', async (t) => {
  const commands = allCommands(buildProgram())
  t.ok(commands.length >= 17, `the whole tree is walked (${commands.length} commands)`)
  for (const command of commands) {
    t.match(helpOf(command), /\nExample:\n {2}(\S.*)?deploy-agent \S/, `${fullName(command)} --help has an example`)
  }
})

t.test('CLI --json: every command that prints data has it', async (t) => {
  // serve prints its log (pino JSON already); the root only dispatches.
  const withoutData = new Set(['deploy-agent', 'deploy-agent serve'])
  for (const command of allCommands(buildProgram())) {
    const name = fullName(command)
    if (withoutData.has(name)) continue
    t.ok(
      command.options.some((o) => o.long === '--json'),
      `${name} has --json`,
    )
  }
})

t.test('CLI colour: NO_COLOR always wins, FORCE_COLOR forces, else only a terminal', async (t) => {
  const tty = { isTTY: true }
  const pipe = { isTTY: false }
  const cases: Array<[{ isTTY?: boolean }, NodeJS.ProcessEnv, boolean, string]> = [
    [tty, {}, true, 'a terminal'],
    [pipe, {}, false, 'a pipe or file'],
    [{}, {}, false, 'a stream that does not say'],
    [tty, { NO_COLOR: '1' }, false, 'NO_COLOR=1 on a terminal'],
    [tty, { NO_COLOR: 'false' }, false, 'NO_COLOR with any non-empty value'],
    [tty, { NO_COLOR: '' }, true, 'an empty NO_COLOR is unset'],
    [pipe, { FORCE_COLOR: '1' }, true, 'FORCE_COLOR=1 into a pipe'],
    [pipe, { FORCE_COLOR: 'true' }, true, 'FORCE_COLOR=true'],
    [pipe, { FORCE_COLOR: '' }, false, 'an empty FORCE_COLOR is unset'],
    [tty, { FORCE_COLOR: '0' }, false, 'FORCE_COLOR=0 turns it off on a terminal'],
    [tty, { FORCE_COLOR: 'false' }, false, 'FORCE_COLOR=false too'],
    [pipe, { FORCE_COLOR: '1', NO_COLOR: '1' }, false, 'NO_COLOR beats FORCE_COLOR'],
  ]
  for (const [stream, env, expected, why] of cases) t.equal(colorEnabled(stream, env), expected, why)

  t.equal(painter(false).state('FAILED'), 'FAILED', 'no colour: the bare word')
  t.equal(painter(true).state('FAILED'), `${ESC}31mFAILED${ESC}0m`, 'colour: red for a failure')
  t.equal(painter(true).state('SUCCEEDED'), `${ESC}32mSUCCEEDED${ESC}0m`, 'green for success')
})

t.test("CLI options: a subcommand's options after its arguments are its own, not its parent's", async (t) => {
  const program = buildProgram()
  const backups = program.commands.find((c) => c.name() === 'backups') as Command
  const verify = backups.commands.find((c) => c.name() === 'verify') as Command
  let seen: Record<string, unknown> | undefined
  verify.action(async () => {
    seen = verify.opts()
  })
  await program.parseAsync(['backups', 'verify', '1a2b3c4d', '--json', '--url', 'http://127.0.0.1:9'], { from: 'user' })
  t.match(seen, { json: true, url: 'http://127.0.0.1:9' }, '`backups verify <id> --json --url …` reaches verify')
})
