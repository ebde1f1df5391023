import { tools } from "marionette";

export const registry = tools.createRegistry().useHostTools(["lookup"]);

export default async function main(input) {
  const found = await registry.call("lookup", { q: input.q });
  let missing;
  try {
    await registry.call("lookup", { q: "nothing" });
  } catch (e) {
    missing = e.message;
  }
  return { found, missing };
}
