export interface Game {
  player: string;
  points: number;
}

export interface Summary {
  player: string;
  games: number;
  total: number;
  best: number;
}

export function summarize(player: string, games: readonly Game[]): Summary {
  const mine = games.filter((g: Game) => g.player === player);
  if (mine.length === 0) {
    throw new RangeError(`no games for ${player}`);
  }
  const points: number[] = mine.map((g) => g.points);
  return {
    player,
    games: mine.length,
    total: points.reduce((a, b) => a + b, 0),
    best: Math.max(...points),
  };
}
