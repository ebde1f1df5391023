export default async function main() {
  console.log("started");
  await new Promise((resolve) => setTimeout(resolve, 600000));
  console.log("never");
  return "finished";
}
