// Conformance client for the market hub: the official @microsoft/signalr JavaScript client.
//
//   node tests/js/market_conformance.mjs <hubUrl> <token> <contractId> [--skip-negotiation]
//
// Prints one JSON object per line on stdout:
//   {"kind":"connected","connectionId":...}   once started
//   {"kind":"subscribed"}                     after the three Subscribe* invocations completed
//   {"kind":"event","target":"GatewayQuote","contractId":...,"data":{...}}
//   {"kind":"stopped"}                        when it exits normally
// It runs until its standard input closes, or 30 s at most (exit code 2).

import * as signalR from "@microsoft/signalr";

const [hubUrl, token, contractId, ...flags] = process.argv.slice(2);
if (!hubUrl || !token || !contractId) {
  console.error("usage: market_conformance.mjs <hubUrl> <token> <contractId> [--skip-negotiation]");
  process.exit(64);
}
const skipNegotiation = flags.includes("--skip-negotiation");

function emit(record) {
  process.stdout.write(`${JSON.stringify(record)}\n`);
}

const connection = new signalR.HubConnectionBuilder()
  .withUrl(hubUrl, {
    accessTokenFactory: () => token,
    skipNegotiation,
    transport: signalR.HttpTransportType.WebSockets,
    timeout: 10000,
  })
  .configureLogging(signalR.LogLevel.Warning)
  .build();

for (const target of ["GatewayQuote", "GatewayTrade", "GatewayDepth"]) {
  // Market events carry two arguments: (contractId, data). Block bodies: see conformance.mjs.
  connection.on(target, (eventContractId, data) => {
    emit({ kind: "event", target, contractId: eventContractId, data });
  });
}

let stopping = false;
async function stop(exitCode) {
  if (stopping) {
    return;
  }
  stopping = true;
  try {
    await connection.stop();
  } catch (error) {
    emit({ kind: "error", error: String(error) });
  }
  emit({ kind: "stopped" });
  process.exit(exitCode);
}

const deadline = setTimeout(() => {
  emit({ kind: "timeout" });
  stop(2);
}, 30000);
deadline.unref();

process.stdin.on("end", () => {
  stop(0);
});
process.stdin.resume();

try {
  await connection.start();
  emit({ kind: "connected", connectionId: connection.connectionId ?? null });
  await connection.invoke("SubscribeContractQuotes", contractId);
  await connection.invoke("SubscribeContractTrades", contractId);
  await connection.invoke("SubscribeContractMarketDepth", contractId);
  emit({ kind: "subscribed" });
} catch (error) {
  emit({ kind: "error", error: String(error) });
  process.exit(1);
}
