// Entries of every kind a host starts, and their console lines.
import { tools } from "marionette";

export const calculator = tools.createRegistry().register({
  name: "add",
  description: "Adds two numbers.",
  parameters: { type: "object", properties: { a: { type: "number" }, b: { type: "number" } }, required: ["a", "b"] },
  handler: async ({ a, b }) => {
    console.log(`add(${a}, ${b})`);
    return a + b;
  },
});

export function greet(name, times) {
  return Array.from({ length: times }, () => `hello ${name}`);
}

export default async function main(input) {
  console.log("start");
  await new Promise((resolve) => setTimeout(resolve, 1));
  console.error("after a timer");
  return { doubled: input.n * 2 };
}
