// Tool arguments against their JSON Schema (through Ajv), with errors a model
// (or a person) can act on: what is wrong and where. The wording follows the
// Rust host's (the `jsonschema` crate's), so a script sees the same message
// whichever host runs it: `"x" is not of type "number" at /a`.

import Ajv from "ajv";

/** How many compiled schemas a cache keeps before starting over. */
const CACHE_CAPACITY = 256;

/** Most problems reported for one set of arguments. */
const MAX_REPORTED = 5;

/** Compiled validators by schema text. */
export class SchemaCache {
  #ajv = new Ajv({ allErrors: true, strict: false, validateFormats: false });
  #validators = new Map();

  /**
   * Checks `args` (a value) against `schema` (a value, or its JSON text).
   * Returns null when they conform, else text naming each problem and its
   * place, or saying that the schema is unusable.
   */
  check(schema, args) {
    const key = typeof schema === "string" ? schema : JSON.stringify(schema);
    let validate = this.#validators.get(key);
    if (validate === undefined) {
      let parsed;
      try {
        parsed = typeof schema === "string" ? JSON.parse(schema) : schema;
      } catch (e) {
        return `the tool's schema is not valid JSON: ${e.message}`;
      }
      try {
        validate = this.#ajv.compile(parsed);
      } catch (e) {
        return `the tool's schema is invalid: ${e.message}`;
      }
      if (this.#validators.size >= CACHE_CAPACITY) this.#validators.clear();
      this.#validators.set(key, validate);
    }
    if (validate(args)) return null;
    return validate.errors
      .slice(0, MAX_REPORTED)
      .map((e) => {
        const what = describe(e, args);
        return e.instancePath === "" ? what : `${what} at ${e.instancePath}`;
      })
      .join("; ");
  }
}

function valueAt(root, pointer) {
  let v = root;
  for (const part of pointer.split("/").slice(1)) {
    if (v === null || typeof v !== "object") return undefined;
    v = v[part.replace(/~1/g, "/").replace(/~0/g, "~")];
  }
  return v;
}

function describe(e, root) {
  const value = JSON.stringify(valueAt(root, e.instancePath));
  const p = e.params;
  switch (e.keyword) {
    case "type":
      return `${value} is not of type ${JSON.stringify(p.type)}`;
    case "required":
      return `${JSON.stringify(p.missingProperty)} is a required property`;
    case "additionalProperties":
      return `Additional properties are not allowed (${JSON.stringify(p.additionalProperty)} was unexpected)`;
    case "enum":
      return `${value} is not one of ${JSON.stringify(p.allowedValues)}`;
    case "const":
      return `${JSON.stringify(p.allowedValue)} was expected`;
    case "minimum":
      return `${value} is less than the minimum of ${p.limit}`;
    case "maximum":
      return `${value} is greater than the maximum of ${p.limit}`;
    default:
      return `${value} ${e.message}`;
  }
}
