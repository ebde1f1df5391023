// A task started in the guest, as its caller holds it: a promise of its
// result (`await task`) and the stream of its events (`for await (const
// event of task)`). Events are kept from the start, so none is lost to a
// caller that begins iterating late.

export class Task {
  #promise;
  #events = [];
  #waiting = [];
  #ended = false;

  /** @internal */
  constructor(id, promise) {
    this.id = id;
    this.#promise = promise;
  }

  then(onFulfilled, onRejected) {
    return this.#promise.then(onFulfilled, onRejected);
  }

  catch(onRejected) {
    return this.#promise.catch(onRejected);
  }

  finally(onFinally) {
    return this.#promise.finally(onFinally);
  }

  /** @internal An event of the task. */
  push(event) {
    if (this.#ended) return;
    const waiter = this.#waiting.shift();
    if (waiter !== undefined) waiter({ value: event, done: false });
    else this.#events.push(event);
  }

  /** @internal The task settled: iterators end after the events kept. */
  end() {
    this.#ended = true;
    for (const waiter of this.#waiting.splice(0)) waiter({ value: undefined, done: true });
  }

  [Symbol.asyncIterator]() {
    return {
      next: () => {
        if (this.#events.length > 0) return Promise.resolve({ value: this.#events.shift(), done: false });
        if (this.#ended) return Promise.resolve({ value: undefined, done: true });
        return new Promise((resolve) => this.#waiting.push(resolve));
      },
      return: () => Promise.resolve({ value: undefined, done: true }),
      [Symbol.asyncIterator]() {
        return this;
      },
    };
  }
}
