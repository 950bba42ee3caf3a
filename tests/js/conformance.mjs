// Conformance client: the official @microsoft/signalr JavaScript client against the simulator.
//
//   node tests/js/conformance.mjs <hubUrl> <token> <accountId> [--skip-negotiation]
//
// Prints one JSON object per line on stdout:
//   {"kind":"connected","connectionId":...}   once started
//   {"kind":"subscribed"}                     after every Subscribe* invocation completed
//   {"kind":"event","target":"GatewayUserOrder","argument":{"action":0,"data":{...}}}
//   {"kind":"reconnecting"} / {"kind":"reconnected"} / {"kind":"closed","error":...}
//   {"kind":"stopped"}                        when it exits normally
// It runs until its standard input closes (the test's "stop"), or 30 s at most (exit code 2).
// Subscriptions are redone after an automatic reconnect, as the ProjectX docs' sample does.

import * as signalR from "@microsoft/signalr";

const [hubUrl, token, accountIdText, ...flags] = process.argv.slice(2);
if (!hubUrl || !token || !accountIdText) {
  console.error("usage: conformance.mjs <hubUrl> <token> <accountId> [--skip-negotiation]");
  process.exit(64);
}
const accountId = Number.parseInt(accountIdText, 10);
const skipNegotiation = flags.includes("--skip-negotiation");
const events = ["GatewayUserAccount", "GatewayUserOrder", "GatewayUserPosition", "GatewayUserTrade"];

function emit(record) {
  process.stdout.write(`${JSON.stringify(record)}\n`);
}

const options = {
  accessTokenFactory: () => token,
  skipNegotiation,
  transport: signalR.HttpTransportType.WebSockets,
  timeout: 10000,
};

const connection = new signalR.HubConnectionBuilder()
  .withUrl(hubUrl, options)
  .withAutomaticReconnect([0, 200, 500, 1000, 2000])
  .configureLogging(signalR.LogLevel.Warning)
  .build();

for (const target of events) {
  // Block bodies: a handler that returns a value makes the client log a protocol warning.
  connection.on(target, (argument) => {
    emit({ kind: "event", target, argument });
  });
}

async function subscribe() {
  await connection.invoke("SubscribeAccounts");
  await connection.invoke("SubscribeOrders", accountId);
  await connection.invoke("SubscribePositions", accountId);
  await connection.invoke("SubscribeTrades", accountId);
  emit({ kind: "subscribed" });
}

connection.onreconnecting((error) => {
  emit({ kind: "reconnecting", error: error ? String(error) : null });
});
connection.onreconnected(async (connectionId) => {
  emit({ kind: "reconnected", connectionId: connectionId ?? null });
  try {
    await subscribe();
  } catch (error) {
    emit({ kind: "error", error: String(error) });
  }
});
connection.onclose((error) => {
  emit({ kind: "closed", error: error ? String(error) : null });
});

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
  await subscribe();
} catch (error) {
  emit({ kind: "error", error: String(error) });
  process.exit(1);
}
