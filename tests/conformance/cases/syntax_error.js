export default function main() {
  const a = 1;
  let x = ;
  return a;
}
