// Tool arguments against their JSON Schema (through Ajv), with errors a model
// (or a person) can act on: what is wrong and where. The wording is the Rust
// host's (the `jsonschema` crate's), so a script sees the same message
// whichever host runs it: `"x" is not of type "number" at /a`
// (tests/conformance/cases/tool_argument_errors.json checks it).

import Ajv from "ajv";

/** How many compiled schemas a cache keeps before starting over. */
const CACHE_CAPACITY = 256;

/** Most problems reported for one set of arguments. */
const MAX_REPORTED = 5;

/** Compiled validators by schema text. */
export class SchemaCache {
  // verbose: each error carries the value (`data`) and the keyword's schema.
  #ajv = new Ajv({ allErrors: true, strict: false, validateFormats: false, verbose: true });
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
    return problems(validate.errors)
      .slice(0, MAX_REPORTED)
      .map(({ what, where }) => (where === "" ? what : `${what} at ${where}`))
      .join("; ");
  }
}

/**
 * Ajv's errors as the Rust crate reports them: the errors of an `anyOf` or
 * `oneOf` branch, or inside `contains`, `if` or `not`, are not problems of
 * their own (the keyword's error is); the unexpected properties of one
 * object are one problem.
 */
function problems(errors) {
  const out = [];
  const unexpected = new Map();
  for (const e of errors) {
    if (/\/(anyOf|oneOf)\/\d+\/|\/(contains|if|not)\//.test(e.schemaPath)) continue;
    if (e.keyword === "additionalProperties") {
      let names = unexpected.get(e.instancePath);
      if (names === undefined) {
        names = [];
        unexpected.set(e.instancePath, names);
        out.push({ names, where: e.instancePath });
      }
      names.push(e.params.additionalProperty);
      continue;
    }
    out.push({ what: describe(e), where: e.instancePath });
  }
  for (const p of out) {
    if (p.names === undefined) continue;
    const listed = p.names
      .sort()
      .map((n) => `'${n}'`)
      .join(", ");
    p.what = `Additional properties are not allowed (${listed} ${p.names.length === 1 ? "was" : "were"} unexpected)`;
  }
  return out;
}

/** A value as the Rust crate writes it: compact JSON, object keys sorted. */
function json(value) {
  return JSON.stringify(value, (_key, v) =>
    v !== null && typeof v === "object" && !Array.isArray(v)
      ? Object.fromEntries(
          Object.keys(v)
            .sort()
            .map((k) => [k, v[k]]),
        )
      : v,
  );
}

/** `n` and its noun, singular for 1. */
function count(n, one, many) {
  return `${n} ${n === 1 ? one : many}`;
}

/** The order the Rust crate lists several types in. */
const TYPE_ORDER = ["null", "boolean", "integer", "number", "string", "array", "object"];

/** Enum options written out before "or N other candidates". */
const MAX_ENUM_OPTIONS = 3;

function enumeration(options) {
  const shown = options.map(json);
  if (shown.length <= MAX_ENUM_OPTIONS) {
    return shown.length === 1 ? shown[0] : `${shown.slice(0, -1).join(", ")} or ${shown.at(-1)}`;
  }
  const keep = MAX_ENUM_OPTIONS - 1;
  return `${shown.slice(0, keep).join(", ")} or ${shown.length - keep} other candidates`;
}

/** One Ajv error in the Rust crate's words (its `ValidationError` display). */
function describe(e) {
  const value = json(e.data);
  const p = e.params;
  switch (e.keyword) {
    case "type": {
      const types = Array.isArray(p.type) ? p.type : String(p.type).split(",");
      if (types.length === 1) return `${value} is not of type "${types[0]}"`;
      const ordered = [...TYPE_ORDER.filter((t) => types.includes(t)), ...types.filter((t) => !TYPE_ORDER.includes(t))];
      return `${value} is not of types ${ordered.map((t) => `"${t}"`).join(", ")}`;
    }
    case "required":
      return `${json(p.missingProperty)} is a required property`;
    case "enum":
      return `${value} is not one of ${enumeration(p.allowedValues)}`;
    case "const":
      return `${json(p.allowedValue)} was expected`;
    case "minimum":
      return `${value} is less than the minimum of ${json(p.limit)}`;
    case "maximum":
      return `${value} is greater than the maximum of ${json(p.limit)}`;
    case "exclusiveMinimum":
      return `${value} is less than or equal to the minimum of ${json(p.limit)}`;
    case "exclusiveMaximum":
      return `${value} is greater than or equal to the maximum of ${json(p.limit)}`;
    case "minLength":
      return `${value} is shorter than ${count(p.limit, "character", "characters")}`;
    case "maxLength":
      return `${value} is longer than ${count(p.limit, "character", "characters")}`;
    case "minItems":
      return `${value} has less than ${count(p.limit, "item", "items")}`;
    case "maxItems":
      return `${value} has more than ${count(p.limit, "item", "items")}`;
    case "minProperties":
      return `${value} has less than ${count(p.limit, "property", "properties")}`;
    case "maxProperties":
      return `${value} has more than ${count(p.limit, "property", "properties")}`;
    case "pattern":
      return `${value} does not match "${p.pattern}"`;
    case "multipleOf":
      return `${value} is not a multiple of ${json(p.multipleOf)}`;
    case "uniqueItems":
      return `${value} has non-unique elements`;
    case "format":
      return `${value} is not a "${p.format}"`;
    case "contains":
      return `None of ${value} are valid under the given schema`;
    case "not":
      return `${json(e.schema)} is not allowed for ${value}`;
    case "anyOf":
      return `${value} is not valid under any of the schemas listed in the 'anyOf' keyword`;
    case "oneOf":
      return Array.isArray(p.passingSchemas)
        ? `${value} is valid under more than one of the schemas listed in the 'oneOf' keyword`
        : `${value} is not valid under any of the schemas listed in the 'oneOf' keyword`;
    case "false schema":
      return `False schema does not allow ${value}`;
    default:
      // A keyword the Rust crate words some other way: Ajv's own sentence.
      return `${value} ${e.message}`;
  }
}
