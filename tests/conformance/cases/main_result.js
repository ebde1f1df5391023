export default async function main(input, ctx) {
  console.log("hello", input.name);
  return { greeting: "hello " + input.name, doubled: input.n * 2, hasTask: typeof ctx.taskId === "number" };
}
