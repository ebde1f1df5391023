// Ways a task fails: a throw, a loop past its timeout, a cancel while waiting.
export function fails() {
  throw new RangeError("out of range");
}

export function spins() {
  for (;;) {}
}

export default async function main() {
  console.log("waiting");
  await new Promise((resolve) => setTimeout(resolve, 60000));
  return "never";
}
