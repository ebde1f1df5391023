export default async function main() {
  const order = [];
  setTimeout(() => order.push("30"), 30);
  setTimeout(() => order.push("10"), 10);
  setTimeout(() => order.push("20"), 20);
  const never = setTimeout(() => order.push("cleared"), 35);
  clearTimeout(never);
  await new Promise((resolve) => setTimeout(resolve, 40));
  return order;
}
