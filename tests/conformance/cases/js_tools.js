import { tools } from "marionette";

export const calculator = tools.createRegistry()
  .register({
    name: "add",
    description: "add two numbers",
    parameters: {
      type: "object",
      properties: { a: { type: "number" }, b: { type: "number" } },
      required: ["a", "b"],
    },
    handler: async ({ a, b }) => {
      await new Promise((resolve) => setTimeout(resolve, 1));
      return a + b;
    },
  })
  .register({
    name: "whoami",
    description: "what the handler is told about its call",
    handler: (_args, ctx) => ({ toolName: ctx.toolName, callId: ctx.callId }),
  })
  .register({
    name: "fail",
    handler: () => {
      throw new RangeError("out of range");
    },
  });
