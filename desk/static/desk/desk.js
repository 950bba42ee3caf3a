// The live order desk. One rule keeps the table right whatever the network does: a row is
// replaced only by a newer version of itself. On every (re)connect the page subscribes first,
// holds the updates that arrive, loads a snapshot, then applies the held updates by that rule.
(function () {
  "use strict";
  const cfg = window.DESK;
  const orders = new Map();     // order id -> row
  const positions = new Map();  // "account:contract" -> row
  const WORKING = new Set(["open", "partially_filled"]);
  let selected = null;
  let socket = null;
  let attempt = 0;
  let held = null;              // updates received while the snapshot loads

  const $ = (sel) => document.querySelector(sel);
  const el = (tag, attrs = {}, text = "") => {
    const node = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, v);
    if (text !== "") node.textContent = text;
    return node;
  };

  function setConnection(state, label) {
    const badge = $("#connection");
    badge.className = "connection " + state;
    badge.textContent = label;
    badge.dataset.state = state;
  }

  function toast(message) {
    const box = $("#toast");
    box.textContent = message;
    box.hidden = false;
    clearTimeout(toast.timer);
    toast.timer = setTimeout(() => { box.hidden = true; }, 4000);
  }

  function age(since) {
    const seconds = Math.max(0, Math.floor((Date.now() - Date.parse(since)) / 1000));
    if (seconds < 60) return seconds + "s";
    if (seconds < 3600) return Math.floor(seconds / 60) + "m " + (seconds % 60) + "s";
    return Math.floor(seconds / 3600) + "h " + Math.floor((seconds % 3600) / 60) + "m";
  }

  // --- Applying rows: only ever forward ------------------------------------------------------

  function applyOrder(row) {
    const known = orders.get(row.id);
    if (known && known.version >= row.version) return false;  // stale or repeated
    orders.set(row.id, row);
    renderOrder(row, Boolean(known));
    if (selected === row.id) loadDetail(row.id);
    return true;
  }

  function applyPosition(row) {
    const known = positions.get(row.key);
    if (known && known.version >= row.version) return false;
    if (row.size === 0 || row.type === "flat") positions.delete(row.key);
    else positions.set(row.key, row);
    renderPositions();
    return true;
  }

  function renderOrder(row, changed) {
    let tr = document.querySelector(`tr[data-order-id="${row.id}"]`);
    if (!tr) {
      tr = el("tr", { class: "order", "data-order-id": row.id });
      tr.addEventListener("click", (event) => {
        if (event.target.tagName !== "BUTTON") select(row.id);
      });
      $("#orders tbody").prepend(tr);
    }
    tr.dataset.status = row.status;
    tr.dataset.version = row.version;
    tr.dataset.filled = row.filled_size;
    tr.dataset.overfilled = row.overfilled;
    tr.replaceChildren(
      el("td", {}, String(row.account)),
      el("td", {}, row.contract_id),
      el("td", { class: row.side }, row.side),
      typeCell(row),
      el("td", { class: "status status-" + row.status, "data-field": "status" }, row.status.replace("_", " ")),
      filledCell(row),
      el("td", { class: "num" }, row.avg_fill_price ?? "–"),
      el("td", { class: "num" }, row.limit_price ?? row.stop_price ?? "mkt"),
      el("td", { class: "age", "data-since": row.state_entered_at }, age(row.state_entered_at)),
      el("td", {}, row.broker_order_id ?? "–"),
      actionCell(row),
    );
    if (changed) {
      tr.classList.remove("flash");
      void tr.offsetWidth;  // restart the animation
      tr.classList.add("flash");
    }
    $("#no-orders").hidden = orders.size > 0;
  }

  // A bracket group shows together: the entry and its children carry the group's id (the
  // entry's), each its role; an entry whose stop the broker lost is flagged.
  const ROLES = { entry: "entry", stop_loss: "SL", take_profit: "TP" };
  function typeCell(row) {
    const td = el("td", {}, row.type);
    if (row.role) {
      const group = (row.parent || row.id).slice(0, 8);
      td.append(" ", el("span", {
        class: "badge badge-bracket", "data-field": "role", "data-group": row.parent || row.id,
        title: `Bracket group ${group}`,
      }, `${ROLES[row.role] || row.role} ${group}`));
    }
    if (row.unprotected) {
      td.append(" ", el("span", {
        class: "badge badge-unprotected", "data-field": "unprotected",
        title: "Filled without a working stop loss at the broker (brackets.onUnprotected)",
      }, "unprotected"));
    }
    return td;
  }

  // An overfill is kept as the broker reported it: the badge says the numbers are not a typo.
  function filledCell(row) {
    const td = el("td", { class: "num" });
    if (row.overfilled) {
      td.append(el("span", {
        class: "badge badge-overfilled", "data-field": "overfilled",
        title: "The broker filled more than the order's size; kept as reported",
      }, "overfilled"), " ");
    }
    td.append(el("span", { "data-field": "filled" }, `${row.filled_size} / ${row.size}`));
    return td;
  }

  function actionCell(row) {
    const td = el("td");
    if (WORKING.has(row.status)) {
      const button = el("button", { type: "button", class: "cancel", "data-order-id": row.id }, "Cancel");
      button.addEventListener("click", () => cancel(row.id, button));
      td.append(button);
    }
    return td;
  }

  function renderPositions() {
    const body = $("#positions tbody");
    body.replaceChildren();
    for (const row of positions.values()) {
      const tr = el("tr", { "data-position": row.key });
      const close = el("button", { type: "button", class: "close" }, "Close");
      close.addEventListener("click", () => closePosition(row, close));
      const action = el("td");
      action.append(close);
      tr.append(
        el("td", {}, String(row.account)), el("td", {}, row.contract_id),
        el("td", { class: row.type === "long" ? "buy" : "sell" }, row.type),
        el("td", { class: "num" }, String(row.size)),
        el("td", { class: "num" }, row.average_price ?? "–"),
        el("td", { class: "num", "data-field": "last_price" }, row.last_price ?? "–"),
        pnlCell(row.unrealized_pnl), action,
      );
      body.append(tr);
    }
    $("#no-positions").hidden = positions.size > 0;
  }

  // Prices move without a new version of the position: their cells are patched in place.
  function pnlCell(pnl) {
    const sign = pnl == null || pnl === "0" ? "" : pnl.startsWith("-") ? " loss" : " gain";
    return el("td", { class: "num pnl" + sign, "data-field": "unrealized_pnl" }, pnl ?? "–");
  }

  function applyMarks(rows) {
    for (const mark of rows) {
      const known = positions.get(mark.key);
      if (!known) continue;
      known.last_price = mark.last_price;
      known.unrealized_pnl = mark.unrealized_pnl;
      const tr = document.querySelector(`tr[data-position="${mark.key}"]`);
      if (!tr) continue;
      tr.querySelector('[data-field="last_price"]').textContent = mark.last_price ?? "–";
      tr.querySelector('[data-field="unrealized_pnl"]').replaceWith(pnlCell(mark.unrealized_pnl));
    }
  }

  // --- The order's story ---------------------------------------------------------------------

  function select(id) {
    selected = id;
    document.querySelectorAll("tr.order.selected").forEach((tr) => tr.classList.remove("selected"));
    document.querySelector(`tr[data-order-id="${id}"]`)?.classList.add("selected");
    loadDetail(id);
  }

  async function loadDetail(id) {
    const response = await fetch(`/desk/orders/${id}/`, { credentials: "same-origin" });
    if (!response.ok || selected !== id) return;
    const detail = await response.json();
    $("#detail").hidden = false;
    $("#detail-id").textContent = id.slice(0, 8);
    const fills = detail.fills.map((f) =>
      el("li", {}, `${f.size} @ ${f.price}${f.voided ? " (voided)" : ""} · ${new Date(f.at).toLocaleTimeString()}`));
    $("#detail-fills").replaceChildren(...(fills.length ? fills : [el("li", { class: "muted" }, "no fills")]));
    $("#detail-transitions").replaceChildren(...detail.transitions.map((t) => {
      const move = t.from === t.to ? `${t.to} (updated)` : `${t.from} → ${t.to}`;
      const who = t.actor ? ` by ${t.actor}` : "";
      return el("li", {}, `${new Date(t.at).toLocaleTimeString()} ${move} · ${t.trigger}${who}${t.reason ? " · " + t.reason : ""}`);
    }));
  }

  // --- Buttons: the same services as the API, with the version the page shows -----------------

  async function post(url, body) {
    const response = await fetch(url, {
      method: "POST", credentials: "same-origin",
      headers: { "Content-Type": "application/json", "X-CSRFToken": cfg.csrfToken },
      body: JSON.stringify(body),
    });
    let data = {};
    try { data = await response.json(); } catch (e) { /* an empty or HTML body */ }
    return { status: response.status, data };
  }

  async function cancel(id, button) {
    button.disabled = true;
    const row = orders.get(id);
    const { status, data } = await post(`/desk/orders/${id}/cancel/`, { version: row.version });
    if (data.row) applyOrder(data.row);
    if (status === 412) toast("The order changed meanwhile; it is shown as it is now.");
    else if (status === 202) toast(`Cancel sent, not yet confirmed: ${data.row.status_reason || ""}`);
    else if (status >= 400) toast((data.error && data.error.message) || "Cancel failed");
    button.disabled = false;
  }

  async function closePosition(row, button) {
    if (!confirm(`Close ${row.size} ${row.type} ${row.contract_id} at market?`)) return;
    button.disabled = true;
    const { status, data } = await post("/desk/positions/close/", { account: row.account, contract_id: row.contract_id });
    toast(status === 200 ? `Closed: ${data.detail}` : `Close failed: ${data.detail || (data.error && data.error.message)}`);
    button.disabled = false;
  }

  // The kill switch: halt the account, cancel every working order, close every position.
  async function flattenAccount(button) {
    const { account, name } = button.dataset;
    if (!confirm(`Flatten ${name} (${account})? This halts the account, cancels every working order and closes every position at market.`)) return;
    button.disabled = true;
    const { status, data } = await post(`/desk/accounts/${account}/flatten/`, {});
    if (status === 200) {
      button.parentElement.querySelector(".trading-state").textContent = "halted";
      const done = `cancelled ${data.cancelled.length} orders, closed ${data.closed.length} positions`;
      toast(data.status === "flat" ? `Account flat: ${done}` : `Flatten pending (the broker has not confirmed yet; press again): ${done}`);
    } else toast(`Flatten failed: ${(data.error && data.error.message) || status}`);
    button.disabled = false;
  }
  document.querySelectorAll("button.flatten").forEach((button) =>
    button.addEventListener("click", () => flattenAccount(button)));

  // --- The socket: reconnect with backoff, snapshot on every (re)connect ----------------------

  async function loadSnapshot() {
    const response = await fetch(cfg.snapshotUrl, { credentials: "same-origin" });
    if (!response.ok) throw new Error("snapshot " + response.status);
    const snapshot = await response.json();
    snapshot.orders.slice().reverse().forEach(applyOrder);
    const fresh = new Set(snapshot.positions.map((p) => p.key));
    for (const key of [...positions.keys()]) if (!fresh.has(key)) positions.delete(key);
    snapshot.positions.forEach(applyPosition);
    renderPositions();
  }

  function handle(message) {
    if (message.type === "order") applyOrder(message.row);
    else if (message.type === "position") applyPosition(message.row);
    else if (message.type === "marks") applyMarks(message.rows);
  }

  function connect() {
    setConnection("connecting", attempt ? "reconnecting…" : "connecting…");
    const scheme = location.protocol === "https:" ? "wss" : "ws";
    socket = new WebSocket(`${scheme}://${location.host}${cfg.socketPath}`);
    held = [];
    socket.onmessage = (event) => {
      const message = JSON.parse(event.data);
      if (held) held.push(message); else handle(message);
    };
    socket.onopen = async () => {
      try {
        await loadSnapshot();
      } catch (e) {
        socket.close();
        return;
      }
      const waiting = held;
      held = null;
      waiting.forEach(handle);
      attempt = 0;
      setConnection("live", "live");
      // Linked from the admin's change page: /desk/#order-<id> opens that order's story.
      const linked = location.hash.startsWith("#order-") ? location.hash.slice(7) : null;
      if (linked && orders.has(linked) && selected === null) select(linked);
    };
    socket.onclose = (event) => {
      held = null;
      if (event.code === 4401) {
        setConnection("offline", "signed out");
        return;
      }
      attempt += 1;
      const delay = Math.min(15000, 500 * 2 ** Math.min(attempt, 5)) * (0.5 + Math.random() / 2);
      setConnection("offline", `offline · retrying in ${Math.ceil(delay / 1000)}s`);
      setTimeout(connect, delay);
    };
  }

  setInterval(() => {
    document.querySelectorAll("td.age").forEach((td) => { td.textContent = age(td.dataset.since); });
  }, 1000);
  window.deskState = { orders, positions, reconnect: () => socket && socket.close() };
  connect();
})();
