export default async function main(input) {
  await new Promise((resolve) => setTimeout(resolve, 1));
  const who = input.name;
  throw new TypeError("boom: " + who);
}
