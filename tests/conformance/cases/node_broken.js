// A module that does not parse: its load fails, located.
export default function main() {
  return 1 +;
}
