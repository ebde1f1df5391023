export function add(a, b) {
  return a + b;
}

export async function later(x) {
  await new Promise((resolve) => setTimeout(resolve, 1));
  return { x, list: [1, "two", null, true, 2.5] };
}
