export default function main() {
  console.log("spinning");
  for (;;) {}
}
