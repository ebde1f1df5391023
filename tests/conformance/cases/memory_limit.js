export default function main() {
  const hoard = [];
  for (;;) hoard.push("x".repeat(1 << 16) + hoard.length);
}
