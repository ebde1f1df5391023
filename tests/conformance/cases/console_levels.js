export default function main() {
  console.debug("d");
  console.log("l", 1, { a: 2 });
  console.info("i");
  console.warn("w");
  console.error("e");
  console.trace("t");
  return null;
}
