// Converting a task's value runs JavaScript: a getter of the error it
// throws, the toJSON of what it returns. That code is the task's.
export function throws() {
  throw {
    get message() {
      for (;;) {}
    },
  };
}

export function returns() {
  return {
    toJSON() {
      for (;;) {}
    },
  };
}

export const ok = () => "fine";
