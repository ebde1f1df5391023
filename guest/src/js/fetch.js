// fetch, Headers, Request and Response, as the WHATWG Fetch standard and
// the WinterTC Minimum Common API define them, minus streams: a body is
// whole bytes (no ReadableStream, no Blob, no FormData), read with text(),
// json(), arrayBuffer() or bytes(). Installed on the global object; the
// lockdown freezes them with every other global.
//
// `fetch` is a host operation: the host's HTTP client makes the request
// under the host's network policy (deny by default), which refuses what it
// does not allow with a TypeError naming the rule. The signal of the
// request releases the operation (the host drops the connection), and so
// does the cancellation of the task or scope that asked.

  const stringToUpperCase = String.prototype.toUpperCase;
  const textEncoder = new TextEncoder();
  const textEncoderEncode = TextEncoder.prototype.encode;
  const utf8 = (s) => call(textEncoderEncode, textEncoder, s);
  const fromUtf8 = (bytes) => {
    let text = native.decodeUtf8(bytes, false, false)[0];
    if (call(stringCharCodeAt, text, 0) === 0xfeff) text = call(stringSlice, text, 1);
    return text;
  };
  const isObject = (v) => v !== null && (typeof v === "object" || typeof v === "function");

  // ---------------------------------------------------------------- Headers

  const tokenRe = /^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$/;
  const isToken = (s) => call(regexpTest, tokenRe, s);
  // A header value with its leading and trailing HTTP whitespace removed.
  function headerValue(v, where) {
    const s = call(stringReplace, StringCtor(v), /^[\t\n\r ]+|[\t\n\r ]+$/g, "");
    if (call(regexpTest, /[\0\r\n]/, s) || call(regexpTest, /[^\x00-\xff]/, s)) {
      throw new TypeErrorCtor(where + ": " + describe(s) + " is not a valid header value");
    }
    return s;
  }
  function headerName(n, where) {
    const s = StringCtor(n);
    if (!isToken(s)) throw new TypeErrorCtor(where + ": " + describe(s) + " is not a valid header name");
    return call(stringToLowerCase, s);
  }

  let headersList, headersFreeze;
  class Headers {
    #list = []; // [name (lower-case), value], in the order set
    #immutable = false;
    constructor(init) {
      if (init === undefined || init === null) return;
      if (!isObject(init)) throw new TypeErrorCtor("Headers: the init must be an object, an array of pairs or Headers");
      if (init[symbolIterator] !== undefined) {
        for (const pair of init) {
          if (!isObject(pair) || typeof pair[symbolIterator] !== "function") throw new TypeErrorCtor("Headers: each entry must be a [name, value] pair");
          const p = [...pair];
          if (p.length !== 2) throw new TypeErrorCtor("Headers: each entry must be a [name, value] pair, got " + p.length + " items");
          this.append(p[0], p[1]);
        }
        return;
      }
      for (const key of ownKeys(init)) {
        const desc = getOwnPropertyDescriptor(init, key);
        if (desc === undefined || !desc.enumerable) continue;
        if (typeof key === "symbol") throw new TypeErrorCtor("Headers: a header name cannot be a symbol");
        this.append(key, init[key]);
      }
    }
    #check(where) {
      if (this.#immutable) throw new TypeErrorCtor("Headers." + where + ": these headers are immutable (a fetched response's)");
    }
    append(name, value) {
      this.#check("append");
      const n = headerName(name, "Headers.append");
      const list = this.#list;
      list[list.length] = [n, headerValue(value, "Headers.append")];
    }
    delete(name) {
      this.#check("delete");
      const n = headerName(name, "Headers.delete");
      this.#list = this.#list.filter((e) => e[0] !== n);
    }
    get(name) {
      const n = headerName(name, "Headers.get");
      const values = [];
      for (const e of this.#list) if (e[0] === n) values[values.length] = e[1];
      return values.length === 0 ? null : call(arrayJoin, values, ", ");
    }
    getSetCookie() {
      const out = [];
      for (const e of this.#list) if (e[0] === "set-cookie") out[out.length] = e[1];
      return out;
    }
    has(name) {
      const n = headerName(name, "Headers.has");
      for (const e of this.#list) if (e[0] === n) return true;
      return false;
    }
    set(name, value) {
      this.#check("set");
      const n = headerName(name, "Headers.set");
      const v = headerValue(value, "Headers.set");
      const out = [];
      let done = false;
      for (const e of this.#list) {
        if (e[0] !== n) out[out.length] = e;
        else if (!done) {
          out[out.length] = [n, v];
          done = true;
        }
      }
      if (!done) out[out.length] = [n, v];
      this.#list = out;
    }
    // The "sort and combine" of the standard: names in order, the values
    // of a name joined (each set-cookie on its own).
    #sorted() {
      const names = [];
      for (const e of this.#list) if (call(arrayIndexOf, names, e[0]) < 0) names[names.length] = e[0];
      call(arraySort, names, (a, b) => (a < b ? -1 : a > b ? 1 : 0));
      const out = [];
      for (const n of names) {
        if (n === "set-cookie") {
          for (const v of this.getSetCookie()) out[out.length] = [n, v];
        } else out[out.length] = [n, this.get(n)];
      }
      return out;
    }
    forEach(callback, thisArg) {
      if (typeof callback !== "function") throw new TypeErrorCtor("Headers.forEach: the callback must be a function");
      for (const [n, v] of this.#sorted()) apply(callback, thisArg, [v, n, this]);
    }
    *entries() { yield* this.#sorted(); }
    *keys() { for (const e of this.#sorted()) yield e[0]; }
    *values() { for (const e of this.#sorted()) yield e[1]; }
    [symbolIterator]() { return this.entries(); }
    static {
      headersList = (h) => h.#list;
      headersFreeze = (h) => { h.#immutable = true; return h; };
    }
  }
  defineProperty(Headers.prototype, Symbol.toStringTag, { value: "Headers", configurable: true });

  // ---------------------------------------------------------------- bodies

  // A BodyInit as bytes and the content type it implies: `[bytes, type]`.
  function extractBody(body, where) {
    if (typeof body === "string") return [utf8(body), "text/plain;charset=UTF-8"];
    if (body instanceof URLSearchParams) return [utf8(StringCtor(body)), "application/x-www-form-urlencoded;charset=UTF-8"];
    if (branded(arrayBufferByteLength, body) || isView(body)) {
      return [call(typedArraySlice, bufferBytes(body, where)), null];
    }
    if (isObject(body)) {
      const tag = objectToString(body);
      if (tag === "[object Blob]" || tag === "[object File]" || tag === "[object FormData]" || tag === "[object ReadableStream]") {
        throw new TypeErrorCtor(where + ": a " + call(stringSlice, tag, 8, -1) + " body is not supported here (use a string, an ArrayBuffer, a typed array or URLSearchParams)");
      }
    }
    return [utf8(usv(body)), "text/plain;charset=UTF-8"];
  }
  const objectToString = (v) => call(ObjectCtor.prototype.toString, v);

  // The body mixin: `state` is `{bytes (Uint8Array or null), used}`.
  function consume(state, where) {
    if (state.used) return apply(Promise.reject, PromiseCtor, [new TypeErrorCtor(where + ": the body has already been read")]);
    if (state.bytes !== null) state.used = true;
    return promiseResolve(state.bytes === null ? emptyBytes : state.bytes);
  }
  const bodyMethods = {
    arrayBuffer(state, where) {
      return then(consume(state, where), (b) => call(arrayBufferSlice, call(typedArrayBuffer, b), call(typedArrayByteOffset, b), call(typedArrayByteOffset, b) + call(typedArrayByteLength, b)));
    },
    bytes(state, where) {
      return then(consume(state, where), (b) => call(typedArraySlice, b));
    },
    text(state, where) {
      return then(consume(state, where), fromUtf8);
    },
    json(state, where) {
      return then(consume(state, where), (b) => jsonParse(fromUtf8(b)));
    },
  };
  function unsupported(where) {
    return apply(Promise.reject, PromiseCtor, [new TypeErrorCtor(where + " is not supported here: bodies are read whole with text(), json(), arrayBuffer() or bytes()")]);
  }

  // ---------------------------------------------------------------- Request

  const forbiddenMethods = ["CONNECT", "TRACE", "TRACK"];
  const normalMethods = ["DELETE", "GET", "HEAD", "OPTIONS", "POST", "PUT", "PATCH"];
  function normalizeMethod(m) {
    const s = StringCtor(m);
    if (!isToken(s)) throw new TypeErrorCtor("Request: " + describe(s) + " is not a valid method");
    const upper = call(stringToUpperCase, s);
    if (call(arrayIndexOf, forbiddenMethods, upper) >= 0) throw new TypeErrorCtor("Request: the method " + upper + " is forbidden");
    // As the standard says, PATCH is not upper-cased; Deno and Node do
    // neither, so for them it works either way.
    return call(arrayIndexOf, normalMethods, upper) >= 0 && upper !== "PATCH" ? upper : s;
  }
  const redirectModes = ["follow", "error", "manual"];
  const neverAborted = () => new AbortController().signal;

  let requestParts;
  class Request {
    #url;
    #method = "GET";
    #headers;
    #body = { bytes: null, used: false };
    #signal;
    #redirect = "follow";
    constructor(input, init) {
      if (arguments.length === 0) throw new TypeErrorCtor("Request: a URL or a Request is required");
      const i = init === undefined || init === null ? {} : init;
      if (!isObject(i)) throw new TypeErrorCtor("Request: the init must be an object");
      let headers;
      if (input instanceof Request) {
        if (input.#body.used) throw new TypeErrorCtor("Request: the input request's body has already been read");
        this.#url = input.#url;
        this.#method = input.#method;
        headers = new Headers(input.#headers);
        this.#body = { bytes: input.#body.bytes, used: false };
        this.#signal = input.#signal;
        this.#redirect = input.#redirect;
        if (i.body === undefined && input.#body.bytes !== null) input.#body.used = true;
      } else {
        let url;
        try {
          url = new URL(usv(input));
        } catch (_) {
          throw new TypeErrorCtor("Request: " + describe(usv(input)) + " is not an absolute URL");
        }
        if (url.username !== "" || url.password !== "") throw new TypeErrorCtor("Request: the URL " + describe(url.href) + " includes credentials");
        url.hash = "";
        this.#url = url.href;
        headers = new Headers();
      }
      if (i.method !== undefined) this.#method = normalizeMethod(i.method);
      if (i.headers !== undefined) headers = new Headers(i.headers);
      if (i.redirect !== undefined) {
        const r = StringCtor(i.redirect);
        if (call(arrayIndexOf, redirectModes, r) < 0) throw new TypeErrorCtor("Request: redirect must be follow, error or manual, not " + describe(r));
        this.#redirect = r;
      }
      if (i.signal !== undefined && i.signal !== null) {
        if (!isAbortSignal(i.signal)) throw new TypeErrorCtor("Request: init.signal must be an AbortSignal");
        this.#signal = i.signal;
      } else if (i.signal === null) this.#signal = undefined;
      if (i.body !== undefined && i.body !== null) {
        if (this.#method === "GET" || this.#method === "HEAD") throw new TypeErrorCtor("Request: a " + this.#method + " request cannot have a body");
        const [bytes, type] = extractBody(i.body, "Request");
        this.#body = { bytes, used: false };
        if (type !== null && !headers.has("content-type")) headers.append("content-type", type);
      } else if (i.body === null) this.#body = { bytes: null, used: false };
      if (this.#body.bytes !== null && (this.#method === "GET" || this.#method === "HEAD")) {
        throw new TypeErrorCtor("Request: a " + this.#method + " request cannot have a body");
      }
      this.#headers = headers;
    }
    get url() { return this.#url; }
    get method() { return this.#method; }
    get headers() { return this.#headers; }
    get signal() {
      if (this.#signal === undefined) this.#signal = neverAborted();
      return this.#signal;
    }
    get redirect() { return this.#redirect; }
    get bodyUsed() { return this.#body.used; }
    get body() { return null; }
    clone() {
      if (this.#body.used) throw new TypeErrorCtor("Request.clone: the body has already been read");
      // Not `new Request(this)`, which would take this request's body.
      const r = new Request(this.#url);
      r.#method = this.#method;
      r.#headers = new Headers(this.#headers);
      r.#body = { bytes: this.#body.bytes, used: false };
      r.#signal = this.#signal;
      r.#redirect = this.#redirect;
      return r;
    }
    arrayBuffer() { return bodyMethods.arrayBuffer(this.#body, "Request.arrayBuffer"); }
    bytes() { return bodyMethods.bytes(this.#body, "Request.bytes"); }
    text() { return bodyMethods.text(this.#body, "Request.text"); }
    json() { return bodyMethods.json(this.#body, "Request.json"); }
    blob() { return unsupported("Request.blob"); }
    formData() { return unsupported("Request.formData"); }
    static {
      // What fetch sends; the body is taken (used) once sent.
      requestParts = (r) => {
        if (r.#body.used) throw new TypeErrorCtor("fetch: the request's body has already been read");
        const bytes = r.#body.bytes;
        if (bytes !== null) r.#body.used = true;
        const headers = [];
        for (const e of headersList(r.#headers)) headers[headers.length] = [e[0], e[1]];
        return { method: r.#method, url: r.#url, headers, redirect: r.#redirect, body: bytes, signal: r.#signal };
      };
    }
  }
  defineProperty(Request.prototype, Symbol.toStringTag, { value: "Request", configurable: true });

  // ---------------------------------------------------------------- Response

  const nullBodyStatus = [101, 103, 204, 205, 304];
  const redirectStatus = [301, 302, 303, 307, 308];
  const internalResponse = {}; // the token that makes a response from parts

  let responseFromHost;
  class Response {
    #type = "default";
    #status = 200;
    #statusText = "";
    #url = "";
    #redirected = false;
    #headers;
    #body = { bytes: null, used: false };
    constructor(body, init) {
      if (body === internalResponse) {
        this.#headers = new Headers();
        return;
      }
      const i = init === undefined || init === null ? {} : init;
      if (!isObject(i)) throw new TypeErrorCtor("Response: the init must be an object");
      if (i.status !== undefined) {
        const s = NumberCtor(i.status);
        if (!(s >= 200 && s <= 599) || mathFloor(s) !== s) throw new RangeErrorCtor("Response: status " + describe(i.status) + " is not in the range 200 to 599");
        this.#status = s;
      }
      if (i.statusText !== undefined) {
        const t = StringCtor(i.statusText);
        if (call(regexpTest, /[^\t\x20-\x7e\x80-\xff]/, t)) throw new TypeErrorCtor("Response: " + describe(t) + " is not a valid status text");
        this.#statusText = t;
      }
      const headers = new Headers(i.headers);
      if (body !== undefined && body !== null) {
        if (call(arrayIndexOf, nullBodyStatus, this.#status) >= 0) throw new TypeErrorCtor("Response: a response with status " + this.#status + " cannot have a body");
        const [bytes, type] = extractBody(body, "Response");
        this.#body = { bytes, used: false };
        if (type !== null && !headers.has("content-type")) headers.append("content-type", type);
      }
      this.#headers = headers;
    }
    get type() { return this.#type; }
    get url() { return this.#url; }
    get redirected() { return this.#redirected; }
    get status() { return this.#status; }
    get ok() { return this.#status >= 200 && this.#status <= 299; }
    get statusText() { return this.#statusText; }
    get headers() { return this.#headers; }
    get bodyUsed() { return this.#body.used; }
    get body() { return null; }
    clone() {
      if (this.#body.used) throw new TypeErrorCtor("Response.clone: the body has already been read");
      const r = new Response(internalResponse);
      r.#type = this.#type;
      r.#status = this.#status;
      r.#statusText = this.#statusText;
      r.#url = this.#url;
      r.#redirected = this.#redirected;
      r.#headers = new Headers(this.#headers);
      if (this.#type !== "default") headersFreeze(r.#headers);
      r.#body = { bytes: this.#body.bytes, used: false };
      return r;
    }
    arrayBuffer() { return bodyMethods.arrayBuffer(this.#body, "Response.arrayBuffer"); }
    bytes() { return bodyMethods.bytes(this.#body, "Response.bytes"); }
    text() { return bodyMethods.text(this.#body, "Response.text"); }
    json() { return bodyMethods.json(this.#body, "Response.json"); }
    blob() { return unsupported("Response.blob"); }
    formData() { return unsupported("Response.formData"); }
    static error() {
      const r = new Response(internalResponse);
      r.#type = "error";
      r.#status = 0;
      headersFreeze(r.#headers);
      return r;
    }
    static redirect(url, status) {
      let target;
      try {
        target = new URL(usv(url));
      } catch (_) {
        throw new TypeErrorCtor("Response.redirect: " + describe(usv(url)) + " is not an absolute URL");
      }
      const s = status === undefined ? 302 : NumberCtor(status);
      if (call(arrayIndexOf, redirectStatus, s) < 0) throw new RangeErrorCtor("Response.redirect: " + describe(status) + " is not a redirect status");
      const r = new Response(internalResponse);
      r.#status = s;
      r.#headers.set("location", target.href);
      headersFreeze(r.#headers);
      return r;
    }
    static json(data, init) {
      const text = jsonStringify(data);
      if (text === undefined) throw new TypeErrorCtor("Response.json: the data is not JSON-serialisable");
      const i = init === undefined || init === null ? {} : init;
      if (!isObject(i)) throw new TypeErrorCtor("Response.json: the init must be an object");
      const headers = new Headers(i.headers);
      if (!headers.has("content-type")) headers.set("content-type", "application/json");
      return new Response(text, { status: i.status, statusText: i.statusText, headers });
    }
    static {
      // The host's answer (`{status, statusText, url, redirected, headers,
      // body}`) as a fetched response: its headers are immutable.
      responseFromHost = (v) => {
        const r = new Response(internalResponse);
        r.#type = "basic";
        r.#status = v.status;
        r.#statusText = v.statusText;
        r.#url = v.url;
        r.#redirected = v.redirected;
        const list = headersList(r.#headers);
        for (const e of v.headers) list[list.length] = [e[0], e[1]];
        headersFreeze(r.#headers);
        r.#body = { bytes: new Uint8ArrayCtor(v.body), used: false };
        return r;
      };
    }
  }
  defineProperty(Response.prototype, Symbol.toStringTag, { value: "Response", configurable: true });

  // ---------------------------------------------------------------- fetch

  // The host's refusal or a network failure is a TypeError, as the
  // standard's "network error" is; a cancelled task's AbortError stays.
  function fetchError(e) {
    if (e !== null && typeof e === "object" && e.name === "TypeError") return new TypeErrorCtor(e.message);
    return e;
  }

  function fetch(input, init) {
    return new PromiseCtor((resolve, reject) => {
      let parts;
      try {
        const req = input instanceof Request && init === undefined ? input : new Request(input, init);
        if (req.signal.aborted) return reject(req.signal.reason);
        parts = requestParts(req);
      } catch (e) {
        return reject(e);
      }
      const signal = parts.signal;
      let unfollow = null;
      const what = { op: "fetch", method: parts.method, url: parts.url, headers: parts.headers, redirect: parts.redirect };
      const op = request(what, (ok, v) => {
        if (unfollow !== null) unfollow();
        if (!ok) return reject(fetchError(v));
        try {
          resolve(responseFromHost(v));
        } catch (e) {
          reject(e);
        }
      }, undefined, undefined, parts.body === null ? undefined : parts.body);
      // Aborting releases the operation: the host drops the request.
      if (op !== 0 && signal !== undefined) {
        unfollow = signalFollow(signal, (reason) => {
          release(op);
          reject(reason);
        });
      }
    });
  }

  for (const [name, value] of [["fetch", fetch], ["Headers", Headers], ["Request", Request], ["Response", Response]]) {
    installGlobal(name, value);
  }
