// One tool per JSON Schema keyword: every host words a bad argument the
// way the Rust host (the jsonschema crate) does.
import { tools } from "marionette";

export const checks = tools.createRegistry()
  .register({ name: "types", parameters: {"type": "object", "properties": {"v": {"type": ["string", "null"]}}}, handler: () => "ok" })
  .register({ name: "enum_few", parameters: {"type": "object", "properties": {"v": {"enum": ["a", "b"]}}}, handler: () => "ok" })
  .register({ name: "enum_many", parameters: {"type": "object", "properties": {"v": {"enum": [1, 2, 3, 4]}}}, handler: () => "ok" })
  .register({ name: "constant", parameters: {"type": "object", "properties": {"v": {"const": {"k": 1, "a": [1]}}}}, handler: () => "ok" })
  .register({ name: "minimum", parameters: {"type": "object", "properties": {"v": {"minimum": 3}}}, handler: () => "ok" })
  .register({ name: "exclusive_maximum", parameters: {"type": "object", "properties": {"v": {"exclusiveMaximum": 3}}}, handler: () => "ok" })
  .register({ name: "max_length", parameters: {"type": "object", "properties": {"v": {"maxLength": 1}}}, handler: () => "ok" })
  .register({ name: "min_length", parameters: {"type": "object", "properties": {"v": {"minLength": 3}}}, handler: () => "ok" })
  .register({ name: "min_items", parameters: {"type": "object", "properties": {"v": {"minItems": 2}}}, handler: () => "ok" })
  .register({ name: "max_properties", parameters: {"type": "object", "properties": {"v": {"maxProperties": 1}}}, handler: () => "ok" })
  .register({ name: "pattern", parameters: {"type": "object", "properties": {"v": {"pattern": "^x"}}}, handler: () => "ok" })
  .register({ name: "multiple_of", parameters: {"type": "object", "properties": {"v": {"multipleOf": 2}}}, handler: () => "ok" })
  .register({ name: "unique", parameters: {"type": "object", "properties": {"v": {"uniqueItems": true}}}, handler: () => "ok" })
  .register({ name: "negated", parameters: {"type": "object", "properties": {"v": {"not": {"type": "string"}}}}, handler: () => "ok" })
  .register({ name: "any_of", parameters: {"type": "object", "properties": {"v": {"anyOf": [{"type": "string"}, {"type": "null"}]}}}, handler: () => "ok" })
  .register({ name: "closed", parameters: {"type": "object", "properties": {"a": {}}, "additionalProperties": false}, handler: () => "ok" })
  .register({ name: "escaped", parameters: {"type": "object", "properties": {"a/b": {"properties": {"c~d": {"type": "string"}}}}}, handler: () => "ok" });
