// fetch in every host under its defaults: the Rust host's policy allows no
// origin, the Python and Node packages have no network policy; either way
// the script gets a TypeError (a real instance) and nothing is fetched.
// The Fetch API's local classes work the same in every host.
export default async function main() {
  let refused;
  try {
    await fetch("https://example.com/", { method: "POST", body: "x" });
    refused = "fetched";
  } catch (e) {
    refused = {
      name: e.name,
      isTypeError: e instanceof TypeError,
      named: e.message.startsWith("fetch refused by the policy:") || e.message.startsWith("fetch is not available from this host"),
    };
  }
  const res = Response.json({ a: [1] }, { status: 201 });
  return {
    refused,
    local: { status: res.status, type: res.headers.get("content-type"), body: await res.json() },
  };
}
