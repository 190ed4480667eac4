// Probes of what a process in a container may do, for the container-hardening tests: busybox only.

/** Dockerfile line: a setuid-root copy of busybox whose `su` needs its setuid bit to work. */
export const SETUID_SU = 'RUN mkdir /suid && cp /bin/busybox /suid/busybox && chmod 4755 /suid/busybox && ln -s busybox /suid/su'

/**
 * A shell script (run as root in the container) printing one `key=value` line per check:
 * - raw-socket: busybox traceroute opens a SOCK_RAW ICMP socket with no datagram fallback, so it fails exactly
 *   when the container lacks NET_RAW (ping may fall back to ICMP datagram sockets where ping_group_range allows);
 * - setuid: as nobody, the setuid-root `su` either gets euid 0 (and asks for a password) or, under
 *   no-new-privileges, keeps nobody's and says it "must be suid to work properly";
 * - no-new-privs: the kernel's own flag for the process.
 */
export const PROBE = [
  'if traceroute -m 1 -w 1 -q 1 127.0.0.1 >/dev/null 2>/tmp/tr; then echo raw-socket=opened; else echo "raw-socket=refused $(cat /tmp/tr)"; fi',
  "out=$(su -s /bin/sh nobody -c '/suid/su -c true root </dev/null' 2>&1)",
  'case "$out" in *"must be suid"*) echo setuid=blocked ;; *) echo "setuid=escalated $out" ;; esac',
  'echo "no-new-privs=$(sed -n "s/^NoNewPrivs:[[:space:]]*//p" /proc/self/status)"',
].join('\n')

/** The probe's `key=value` lines as an object (the value's first word). */
export function probeResults(lines: string[]): Record<string, string> {
  const results: Record<string, string> = {}
  for (const line of lines) {
    const match = /^(raw-socket|setuid|no-new-privs)=(\S*)/.exec(line)
    if (match) results[match[1] as string] = match[2] as string
  }
  return results
}
