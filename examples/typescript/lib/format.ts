import type { Summary } from "./stats.ts";

export function describe(s: Summary): string {
  const plural = s.games === 1 ? "game" : "games";
  return `${s.player}: ${s.total} points in ${s.games} ${plural} (best ${s.best})`;
}
