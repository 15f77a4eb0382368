/**
 * For test servers run as child processes: calls `stop` on SIGTERM or when the parent closes our stdin
 * (it exited or was killed), so a server never outlives the test that started it.
 */
export function stopWhenParentGoes(stop: () => void): void {
  process.once("SIGTERM", stop);
  process.stdin.on("end", stop);
  process.stdin.on("error", stop);
  process.stdin.resume();
}
