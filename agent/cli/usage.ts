/** Bad usage (exit 2), as opposed to a refusal by the agent or a failed operation (exit 1). */
export class UsageError extends Error {}
