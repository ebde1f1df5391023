// The web basics in every host: what needs the host (randomness, the
// monotonic clock, timers for AbortSignal.timeout) and what is native in the
// guest (URL, base64, UTF-8) give the same answers whoever runs the guest.
export default async function main() {
  const url = new URL("../b?q=a b#f", "https://user@EXAMPLE.com:443/a/c");
  url.searchParams.append("n", "é");
  const uuid = crypto.randomUUID();
  const bytes = crypto.getRandomValues(new Uint8Array(32));
  let quota;
  try {
    crypto.getRandomValues(new Uint8Array(65537));
  } catch (e) {
    quota = e.name;
  }
  const decoder = new TextDecoder();
  const text = decoder.decode(new Uint8Array([0xef, 0xbb, 0xbf, 0xe2, 0x82]), { stream: true }) + decoder.decode(new Uint8Array([0xac, 0xff]));
  const timeout = AbortSignal.timeout(1);
  const reason = await new Promise((resolve) => timeout.addEventListener("abort", () => resolve(timeout.reason.name)));
  const start = performance.now();
  const clone = structuredClone(new Map([["d", new Date(0)]]));
  return {
    href: url.href,
    base64: [btoa("héllo"), atob(" aGk= ")],
    uuid: /^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/.test(uuid),
    randomBytes: bytes.some((b) => b !== 0),
    quota,
    text,
    timeout: reason,
    clock: typeof start === "number" && performance.now() >= start,
    clone: clone.get("d").toISOString(),
  };
}
