// The live order desk. One rule keeps the tables right whatever the network does: a row is
// replaced only by a newer version of itself. On every (re)connect the page subscribes first,
// holds the updates that arrive, loads a snapshot, then applies the held updates by that rule.
(function () {
  "use strict";
  const cfg = window.DESK;
  const orders = new Map();     // order id -> row
  const positions = new Map();  // "account:contract" -> row
  const marks = new Map();      // "account:contract" -> the newest price mark
  const accounts = new Map();   // broker account id -> header row
  const WORKING = new Set(["open", "partially_filled"]);
  const LIVE = new Set(["created", "submitting", "open", "partially_filled", "pending_cancel", "unknown"]);
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
  const shortId = (id) => String(id).slice(0, 8);
  // "CON.F.US.MNQ.Z26" -> "MNQ.Z26": the rest is the same for every contract on the desk.
  const shortContract = (id) => String(id).replace(/^CON\.F\.[A-Z]+\./, "");

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
    toast.timer = setTimeout(() => { box.hidden = true; }, 5000);
  }

  function age(since) {
    const seconds = Math.max(0, Math.floor((Date.now() - Date.parse(since)) / 1000));
    if (seconds < 60) return seconds + "s";
    if (seconds < 3600) return Math.floor(seconds / 60) + "m " + (seconds % 60) + "s";
    return Math.floor(seconds / 3600) + "h " + Math.floor((seconds % 3600) / 60) + "m";
  }

  function errorText(data, fallback) {
    const error = data && data.error;
    if (!error) return fallback;
    const fields = error.fields ? Object.entries(error.fields)
      .map(([name, why]) => `${name}: ${Array.isArray(why) ? why.join(" ") : why}`).join("; ") : "";
    return error.message + (fields && !error.message.includes(fields) ? ` (${fields})` : "");
  }

  // --- The confirmation dialog: names what will happen; resolves true only on Confirm ---------

  function confirmAction({ title, text, items = [], confirmLabel = "Confirm" }) {
    const dialog = $("#confirm");
    $("#confirm-title").textContent = title;
    $("#confirm-text").textContent = text;
    $("#confirm-list").replaceChildren(...items.map((line) => el("li", {}, line)));
    $("#confirm-ok").textContent = confirmLabel;
    const opener = document.activeElement;
    return new Promise((resolve) => {
      dialog.addEventListener("close", () => {
        if (opener && opener.focus) opener.focus();  // keyboard users land where they were
        resolve(dialog.returnValue === "ok");
      }, { once: true });
      dialog.returnValue = "";
      dialog.showModal();
      $("#confirm-back").focus();
    });
  }

  // --- Applying rows: only ever forward ------------------------------------------------------

  function applyOrder(row) {
    const known = orders.get(row.id);
    if (known && known.version >= row.version) return false;  // stale or repeated
    orders.set(row.id, row);
    renderOrder(row, Boolean(known));
    if (selected === row.id) loadDetail(row.id);
    noteContract(row.contract_id);
    chart.ordersChanged(row, known);
    renderWorkingCounts();
    return true;
  }

  function applyPosition(row) {
    const known = positions.get(row.key);
    if (known && known.version >= row.version) return false;
    // A position's frame may be built before its first quote reached the cache, and that
    // quote's marks may arrive before the frame: they are kept and given to the row.
    const mark = marks.get(row.key);
    if (row.last_price == null && mark) {
      row.last_price = mark.last_price;
      row.unrealized_pnl = mark.unrealized_pnl;
    }
    if (row.size === 0 || row.type === "flat") { positions.delete(row.key); marks.delete(row.key); }
    else positions.set(row.key, row);
    renderPositions();
    noteContract(row.contract_id);
    return true;
  }

  // Bracket groups read as one block: a child goes under its entry (after its siblings), an
  // entry or a plain order goes on top; an entry that arrives after its children gathers them.
  function placeRow(tr, row) {
    const body = $("#orders tbody");
    if (row.parent) {
      const group = [...body.querySelectorAll(`tr[data-group="${row.parent}"]`)].filter((r) => r !== tr);
      const last = group[group.length - 1];
      if (last) { last.after(tr); return; }
      body.prepend(tr);
      return;
    }
    body.prepend(tr);
    let anchor = tr;
    body.querySelectorAll(`tr[data-parent="${row.id}"]`).forEach((child) => { anchor.after(child); anchor = child; });
  }

  function renderOrder(row, changed) {
    let tr = document.querySelector(`tr[data-order-id="${row.id}"]`);
    const isNew = !tr;
    if (isNew) {
      tr = el("tr", { class: "order", "data-order-id": row.id, tabindex: "0" });
      tr.addEventListener("click", (event) => {
        if (event.target.tagName !== "BUTTON") select(row.id);
      });
      tr.addEventListener("keydown", (event) => {
        if (event.key === "Enter" && event.target === tr) select(row.id);
      });
    }
    tr.dataset.status = row.status;
    tr.dataset.version = row.version;
    tr.dataset.filled = row.filled_size;
    tr.dataset.overfilled = row.overfilled;
    if (row.role) tr.dataset.group = row.parent || row.id;
    if (row.parent) { tr.dataset.parent = row.parent; tr.classList.add("bracket-child"); }
    const result = tr.querySelector('[data-field="result"]');
    tr.replaceChildren(
      el("td", { class: "id", title: row.id }, shortId(row.id)),
      el("td", {}, String(row.account)),
      el("td", { title: row.contract_id }, shortContract(row.contract_id)),
      el("td", { class: row.side }, row.side),
      typeCell(row),
      el("td", { class: "status status-" + row.status, "data-field": "status", title: row.status_reason || "" },
        row.status.replace("_", " ")),
      filledCell(row),
      el("td", { class: "num" }, row.avg_fill_price ?? "–"),
      el("td", { class: "num" }, priceText(row)),
      el("td", { class: "age", "data-since": row.state_entered_at }, age(row.state_entered_at)),
      el("td", { class: "num", title: row.broker_order_id ? `broker order ${row.broker_order_id}` : "" },
        row.broker_order_id ? String(row.broker_order_id) : "–"),
      actionCell(row, result),
    );
    if (isNew) placeRow(tr, row);
    if (changed) {
      tr.classList.remove("flash");
      void tr.offsetWidth;  // restart the animation
      tr.classList.add("flash");
    }
    $("#no-orders").hidden = orders.size > 0;
  }

  function priceText(row) {
    if (row.limit_price && row.stop_price) return `${row.stop_price} / ${row.limit_price}`;
    return row.limit_price ?? row.stop_price ?? "mkt";
  }

  // A bracket group shows together: the entry and its children carry the group's id (the
  // entry's), each its role; an entry whose stop the broker lost is flagged.
  const ROLES = { entry: "entry", stop_loss: "SL", take_profit: "TP" };
  function typeCell(row) {
    const td = el("td", {}, row.type.replace("_", " "));
    if (row.role) {
      const group = shortId(row.parent || row.id);
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

  function describeOrder(row) {
    const price = priceText(row);
    return `${row.side} ${row.size - row.filled_size} ${shortContract(row.contract_id)} ${row.type.replace("_", " ")}` +
      (price === "mkt" ? "" : ` @ ${price}`) + ` (order ${shortId(row.id)}, account ${row.account})`;
  }

  function actionCell(row, previousResult) {
    const td = el("td", { class: "actions" });
    if (WORKING.has(row.status)) {
      const button = el("button", { type: "button", class: "cancel", "data-order-id": row.id }, "Cancel");
      button.setAttribute("aria-describedby", `result-${row.id}`);
      button.addEventListener("click", () => cancel(row.id, button));
      td.append(button);
    }
    // The answer to the last action on this row stays in the row until the next one.
    const result = previousResult || el("span", { class: "result", "data-field": "result", id: `result-${row.id}`, role: "status" });
    td.append(result);
    return td;
  }

  function setResult(node, text, refused = false) {
    if (!node) return;
    node.textContent = text;
    node.title = text;
    node.classList.toggle("refused", refused);
  }

  function renderPositions() {
    const body = $("#positions tbody");
    const results = new Map([...body.querySelectorAll("tr")].map((tr) => [tr.dataset.position, tr.querySelector('[data-field="result"]')]));
    body.replaceChildren();
    for (const row of positions.values()) {
      const tr = el("tr", { "data-position": row.key });
      const close = el("button", { type: "button", class: "close" }, "Close");
      close.addEventListener("click", () => closePosition(row, close));
      const action = el("td", { class: "actions" });
      action.append(close, results.get(row.key) || el("span", { class: "result", "data-field": "result", role: "status" }));
      tr.append(
        el("td", {}, String(row.account)), el("td", { title: row.contract_id }, shortContract(row.contract_id)),
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
  function pnlClass(pnl) {
    return pnl == null || /^-?0(\.0*)?$/.test(pnl) ? "" : pnl.startsWith("-") ? " loss" : " gain";
  }
  function pnlCell(pnl) {
    return el("td", { class: "num pnl" + pnlClass(pnl), "data-field": "unrealized_pnl" }, pnl ?? "–");
  }

  function applyMarks(rows) {
    for (const mark of rows) {
      marks.set(mark.key, mark);
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

  // --- The account header: trading state, P&L, working orders --------------------------------

  const STATE_WORDS = { active: "active", reduce_only: "reduce only", halted: "halted" };
  function applyAccount(row) {
    accounts.set(row.id, row);
    const box = document.querySelector(`li.account[data-account="${row.id}"]`);
    if (!box) return;
    const badge = box.querySelector('[data-field="trading_state"]');
    badge.dataset.state = row.trading_state || "";
    badge.textContent = row.trading_state ? (STATE_WORDS[row.trading_state] || row.trading_state) : "–";
    badge.title = row.trading_state ? `Trading state: ${badge.textContent}${row.trading_state_reason ? " (" + row.trading_state_reason + ")" : ""}` : "Trading state not known";
    for (const name of ["realized_pnl_today", "unrealized_pnl"]) {
      const cell = box.querySelector(`[data-field="${name}"]`);
      cell.textContent = row[name] ?? "–";
      cell.className = "num pnl" + pnlClass(row[name]);
    }
  }

  function workingOf(account) {
    return [...orders.values()].filter((o) => o.account === account && WORKING.has(o.status));
  }

  function renderWorkingCounts() {
    document.querySelectorAll("li.account").forEach((box) => {
      box.querySelector('[data-field="working_orders"]').textContent = String(workingOf(Number(box.dataset.account)).length);
    });
  }

  async function cancelAll(button) {
    const account = Number(button.dataset.account);
    const working = workingOf(account);
    const box = button.closest("li.account");
    const result = box.querySelector('[data-field="result"]');
    if (!working.length) { setResult(result, "No working orders to cancel."); return; }
    const ok = await confirmAction({
      title: `Cancel all working orders of ${button.dataset.name} (${account})?`,
      text: `This cancels these ${working.length} working orders at the broker. Positions stay open.`,
      items: working.map(describeOrder),
      confirmLabel: `Cancel ${working.length} orders`,
    });
    if (!ok) return;
    button.disabled = true;
    setResult(result, "Cancelling…");
    const { status, data } = await post(`/desk/accounts/${account}/cancel-all/`, {
      orders: working.map((o) => ({ id: o.id, version: o.version })),
    });
    button.disabled = false;
    if (status !== 200) { setResult(result, `Cancel all failed: ${errorText(data, status)}`, true); return; }
    data.cancelled.forEach(applyOrder);
    data.refused.forEach((r) => {
      applyOrder(r.row);
      setResult(document.getElementById(`result-${r.row.id}`), `Not cancelled: ${errorText(r, "refused")}`, true);
    });
    data.cancelled.forEach((r) => setResult(document.getElementById(`result-${r.id}`),
      r.status === "pending_cancel" ? "Cancel sent, not yet confirmed" : "Cancelled (Cancel all)"));
    const extra = data.not_shown.length ? `; ${data.not_shown.length} not shown here were left working` : "";
    setResult(result, `Cancelled ${data.cancelled.length}, refused ${data.refused.length}${extra}.`, data.refused.length > 0);
  }

  // The kill switch: halt the account, cancel every working order, close every position.
  async function flattenAccount(button) {
    const account = Number(button.dataset.account);
    const name = button.dataset.name;
    const box = button.closest("li.account");
    const result = box.querySelector('[data-field="result"]');
    const working = workingOf(account);
    const open = [...positions.values()].filter((p) => p.account === account);
    const ok = await confirmAction({
      title: `Flatten ${name} (${account})?`,
      text: "This halts the account (no new orders until it is resumed), cancels every working order and closes every position at market.",
      items: [
        ...working.map((o) => "Cancel " + describeOrder(o)),
        ...open.map((p) => `Close ${p.type} ${p.size} ${shortContract(p.contract_id)} at market`),
      ],
      confirmLabel: "Flatten account now",
    });
    if (!ok) return;
    button.disabled = true;
    setResult(result, "Flattening…");
    const { status, data } = await post(`/desk/accounts/${account}/flatten/`, {});
    button.disabled = false;
    if (status === 200) {
      if (data.account) applyAccount(data.account);
      else applyAccount({ ...(accounts.get(account) || { id: account }), trading_state: "halted" });
      const done = `cancelled ${data.cancelled.length} orders, closed ${data.closed.length} positions`;
      setResult(result, data.status === "flat" ? `Account flat and halted: ${done}.`
        : `Flatten pending (the broker has not confirmed yet; press again): ${done}.`, data.status !== "flat");
    } else setResult(result, `Flatten failed: ${errorText(data, status)}`, true);
    pollHealth();
  }

  document.querySelectorAll("button.cancel-all").forEach((b) => b.addEventListener("click", () => cancelAll(b)));
  document.querySelectorAll("button.flatten").forEach((b) => b.addEventListener("click", () => flattenAccount(b)));

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
    $("#detail-id").textContent = shortId(id);
    $("#detail-id").title = id;
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
    const row = orders.get(id);
    const ok = await confirmAction({
      title: `Cancel order ${shortId(id)}?`,
      text: `This cancels ${describeOrder(row)} at the broker.`,
      confirmLabel: "Cancel the order",
    });
    if (!ok) return;
    button.disabled = true;
    const result = document.getElementById(`result-${id}`);
    setResult(result, "Cancelling…");
    const { status, data } = await post(`/desk/orders/${id}/cancel/`, { version: row.version });
    if (data.row) applyOrder(data.row);
    const now = document.getElementById(`result-${id}`);
    if (status === 412) setResult(now, "Not cancelled: the order changed meanwhile; shown as it is now.", true);
    else if (status === 202) setResult(now, `Cancel sent, not yet confirmed${data.row.status_reason ? ": " + data.row.status_reason : ""}`);
    else if (status >= 400) setResult(now, `Not cancelled: ${errorText(data, "cancel failed")}`, true);
    else setResult(now, "Cancelled");
    button.disabled = false;
  }

  async function closePosition(row, button) {
    const ok = await confirmAction({
      title: `Close ${row.type} ${row.size} ${shortContract(row.contract_id)}?`,
      text: `This closes account ${row.account}'s ${row.type} position of ${row.size} ${row.contract_id} at market.`,
      confirmLabel: "Close at market",
    });
    if (!ok) return;
    button.disabled = true;
    const { status, data } = await post("/desk/positions/close/", { account: row.account, contract_id: row.contract_id });
    const result = document.querySelector(`tr[data-position="${row.key}"] [data-field="result"]`) ||
      document.querySelector(`li.account[data-account="${row.account}"] [data-field="result"]`);
    if (status === 200) setResult(result, `Closed: ${data.detail}`);
    else setResult(result, `Close failed: ${data.detail || errorText(data, status)}`, true);
    button.disabled = false;
  }

  // --- The order ticket ------------------------------------------------------------------------
  // One idempotency key per ticket submission: made when the ticket is sent, kept while no
  // definite answer came back (a double click, or Place order again after the network failed,
  // sends the same key, and the server answers it from the first request), dropped once the
  // ticket was answered or changed, so the next Place order is a new order.

  const ticket = $("#ticket");
  const placeButton = $("#ticket-place");
  let ticketKey = null;
  let placing = false;

  function newKey() {
    if (window.crypto && crypto.randomUUID) return "desk-" + crypto.randomUUID();
    return "desk-" + Date.now().toString(36) + "-" + Math.random().toString(36).slice(2);
  }

  function clearTicketErrors() {
    ticket.querySelectorAll(".field-error").forEach((p) => { p.textContent = ""; });
    ticket.querySelectorAll("[aria-invalid]").forEach((n) => n.removeAttribute("aria-invalid"));
    const result = $("#ticket-result");
    result.textContent = "";
    result.className = "ticket-result";
  }

  function ticketResult(text, kind) {
    const result = $("#ticket-result");
    result.textContent = text;
    result.className = "ticket-result " + kind;
  }

  // Field names are the API's; a refusal's own field (a risk limit's name) is said at the button.
  const RISK_FIELD = { maxOrderSize: "size", maxPositionSize: "size" };
  function showTicketErrors(data) {
    const error = (data && data.error) || {};
    let placedAtField = false;
    for (const [name, why] of Object.entries(error.fields || {})) {
      const target = ticket.querySelector(`#ticket-error-${name}`) ? name
        : (name === "limit" && RISK_FIELD[why]) ? RISK_FIELD[why] : null;
      if (!target) continue;
      const words = Array.isArray(why) ? why.join(" ") : (target === name ? String(why) : error.message);
      ticket.querySelector(`#ticket-error-${target}`).textContent = words;
      ticket.querySelector(`[name="${target}"]`).setAttribute("aria-invalid", "true");
      placedAtField = true;
    }
    ticketResult(placedAtField ? `Not placed: ${error.message || "see the fields above"}` : `Not placed: ${errorText(data, "refused")}`, "refused");
  }

  function ticketBody() {
    const body = {};
    for (const [name, value] of new FormData(ticket).entries()) {
      if (value === "") continue;
      body[name] = ["account", "size", "stop_loss_ticks", "take_profit_ticks"].includes(name) && /^\d+$/.test(value) ? Number(value) : value;
    }
    return body;
  }

  ticket.addEventListener("input", () => { if (!placing) ticketKey = null; });
  ticket.addEventListener("submit", async (event) => {
    event.preventDefault();
    if (placing) return;  // a second click while the first is in flight: the first answers
    placing = true;
    placeButton.disabled = true;
    ticketKey = ticketKey || newKey();
    $("#ticket-key").value = ticketKey;
    clearTicketErrors();
    ticketResult("Placing…", "");
    let answer;
    try {
      answer = await post(cfg.ticketUrl, ticketBody());
    } catch (e) {
      // No answer: the key is kept, so Place order again resends this very submission.
      ticketResult("No answer from the desk. Place order again resends this ticket; it is placed once.", "refused");
      placing = false;
      placeButton.disabled = false;
      return;
    }
    const { status, data } = answer;
    // Still in progress, or not sent (rate limited, the broker unreachable): same key next time.
    const keep = status === 409 && data.error && data.error.code === "request_in_progress" || status === 429 || status === 503;
    if (!keep) ticketKey = null;
    if (data.row) applyOrder(data.row);
    if (status === 201 || status === 200) {
      ticketResult(`Placed: order ${shortId(data.row.id)} ${data.row.status}${data.replayed ? " (already placed by this ticket)" : ""}`, "placed");
      chart.show(data.row.contract_id);
    } else if (status === 202) {
      ticketResult(`Sent; the broker's answer is not known yet (order ${shortId(data.row.id)} ${data.row.status}). It is being verified.`, "");
    } else if (data.error) {
      showTicketErrors(data);  // a refusal (validation, risk), or one replayed for this key
    } else if (data.row && data.row.status === "rejected") {
      ticketResult(`Rejected by the broker: ${data.row.status_reason || "no reason given"}`, "refused");
    } else {
      showTicketErrors(data);
    }
    placing = false;
    placeButton.disabled = false;
  });

  const knownContracts = new Set();
  function noteContract(contractId) {
    if (!contractId || knownContracts.has(contractId)) return;
    knownContracts.add(contractId);
    $("#contracts").append(el("option", { value: contractId }));
    $("#chart-contract").append(el("option", { value: contractId }, shortContract(contractId)));
    const input = $("#ticket-contract_id");
    if (!input.value) input.value = contractId;
    if (!chart.contract) chart.show(contractId);
  }

  // --- The chart: the broker's candles, the account's fills and working orders' levels ---------

  const chart = (function () {
    const box = $("#chart");
    const LW = window.LightweightCharts;
    const state = { contract: null, minutes: 1, bars: [], fills: [], lines: [], series: null, api: null, reload: null };
    if (LW) {
      state.api = LW.createChart(box, {
        height: 260, autoSize: true,
        layout: { background: { color: "#ffffff" }, textColor: "#1d1d1b", fontSize: 11 },
        grid: { vertLines: { color: "#f0f0ec" }, horzLines: { color: "#f0f0ec" } },
        timeScale: { timeVisible: true, secondsVisible: false, rightOffset: 6 },
        rightPriceScale: { borderColor: "#dcdcd6" },
        localization: { priceFormatter: (p) => String(Math.round(p * 1e6) / 1e6) },
      });
      state.series = state.api.addCandlestickSeries({
        upColor: "#17663a", downColor: "#a3261f", borderVisible: false,
        wickUpColor: "#17663a", wickDownColor: "#a3261f",
      });
    } else {
      $("#chart-status").textContent = "chart library not loaded";
    }
    const step = () => state.minutes * 60;
    const bucket = (seconds) => Math.floor(seconds / step()) * step();

    function setStatus(text) { $("#chart-status").textContent = text; }

    async function load() {
      if (!state.contract) return;
      const contract = state.contract;
      const url = `${cfg.chartUrl}?contract_id=${encodeURIComponent(contract)}&minutes=${state.minutes}`;
      let data;
      try {
        const response = await fetch(url, { credentials: "same-origin" });
        data = await response.json();
        if (!response.ok) { setStatus(errorText(data, "chart unavailable")); return; }
      } catch (e) { setStatus("chart unavailable"); return; }
      if (contract !== state.contract) return;
      state.bars = data.bars.map((b) => ({ time: b.time, open: +b.open, high: +b.high, low: +b.low, close: +b.close }));
      state.fills = data.fills;
      if (state.series) state.series.setData(state.bars);
      setStatus(data.bars_error ? `no candles: ${data.bars_error}` : `${shortContract(contract)} · ${state.bars.length} candles`);
      drawFills();
      drawLevels();
    }

    // A marker sits on a candle: the fill's own, else the newest one before it (a quiet minute
    // has no candle), else the first.
    function candleAt(time) {
      let found = state.bars.length ? state.bars[0].time : time;
      for (const bar of state.bars) {
        if (bar.time > time) break;
        found = bar.time;
      }
      return found;
    }

    function drawFills() {
      const markers = state.fills.map((f) => {
        const time = candleAt(bucket(Math.floor(Date.parse(f.at) / 1000)));
        const buy = f.side === "buy";
        return {
          time, position: buy ? "belowBar" : "aboveBar", color: buy ? "#17663a" : "#a3261f",
          shape: buy ? "arrowUp" : "arrowDown", text: `${buy ? "B" : "S"} ${f.size} @ ${f.price}`,
        };
      }).sort((a, b) => a.time - b.time);
      if (state.series) state.series.setMarkers(markers);
      $("#chart-fills").replaceChildren(...state.fills.map((f) => el("li", {
        "data-trade-id": String(f.trade_id), "data-order": f.order || "",
      }, `${f.side} ${f.size} @ ${f.price} · ${new Date(f.at).toLocaleTimeString()} · account ${f.account}`)));
    }

    // Working orders' levels: an entry's limit or stop, a stop loss, a take profit.
    const LEVEL_COLOURS = { stop_loss: "#a3261f", take_profit: "#17663a", entry: "#1f4fa8" };
    function drawLevels() {
      for (const line of state.lines) state.series && state.series.removePriceLine(line);
      state.lines = [];
      const levels = [];
      for (const row of orders.values()) {
        if (row.contract_id !== state.contract || !LIVE.has(row.status)) continue;
        const role = row.role || "entry";
        const name = ROLES[row.role] || "order";
        for (const [kind, price] of [["limit", row.limit_price], ["stop", row.stop_price]]) {
          if (!price) continue;
          levels.push({ row, price, text: `${name} ${row.side} ${row.size - row.filled_size} ${kind} ${price} (${shortId(row.parent || row.id)})`, role });
        }
      }
      for (const level of levels) {
        if (state.series) {
          state.lines.push(state.series.createPriceLine({
            price: +level.price, color: LEVEL_COLOURS[level.role] || "#1f4fa8", lineWidth: 1,
            lineStyle: 2, axisLabelVisible: true, title: level.text.split(" (")[0],
          }));
        }
      }
      $("#chart-levels").replaceChildren(...levels.map((l) => el("li", { "data-order-id": l.row.id, "data-role": l.role }, l.text)));
    }

    // A quote moves the newest candle (or opens the next one) until the next load.
    function price(contract, value) {
      if (contract !== state.contract || !state.series) return;
      const p = +value;
      const time = bucket(Math.floor(Date.now() / 1000));
      const last = state.bars[state.bars.length - 1];
      if (last && last.time === time) {
        last.high = Math.max(last.high, p); last.low = Math.min(last.low, p); last.close = p;
        state.series.update(last);
      } else if (!last || time > last.time) {
        const bar = { time, open: last ? last.close : p, high: p, low: p, close: p };
        state.bars.push(bar);
        state.series.update(bar);
      }
    }

    function ordersChanged(row, known) {
      if (row.contract_id !== state.contract) return;
      drawLevels();
      if (!known || row.filled_size !== known.filled_size) {  // a fill: its marker
        clearTimeout(state.reload);
        state.reload = setTimeout(load, 300);
      }
    }

    function show(contract) {
      if (!contract) return;
      state.contract = contract;
      const select = $("#chart-contract");
      if (select.value !== contract) select.value = contract;
      $("#chart").setAttribute("aria-label", `Candles of ${contract} with the account's fills and working orders`);
      load();
    }

    $("#chart-contract").addEventListener("change", (e) => show(e.target.value));
    $("#chart-minutes").addEventListener("change", (e) => { state.minutes = Number(e.target.value); load(); });
    setInterval(() => { if (state.contract && document.visibilityState === "visible") load(); }, 60000);
    return {
      show, price, ordersChanged, load,
      get contract() { return state.contract; },
      markers: () => state.fills.slice(), levels: () => [...document.querySelectorAll("#chart-levels li")].map((li) => li.textContent),
    };
  })();

  // --- The health strip: polled, so it says "red" even when nothing else moves ----------------

  let openLight = null;
  let lastHealth = null;
  function renderHealth(health) {
    lastHealth = health;
    for (const light of health.lights) {
      const button = document.getElementById(`light-${light.name}`);
      if (!button) continue;
      button.dataset.level = light.level;
      button.querySelector(".light-summary").textContent = light.summary;
      button.title = `${light.label}: ${light.level}, ${light.summary}`;
      button.setAttribute("aria-label", `${light.label}: ${light.level}, ${light.summary}`);
    }
    (health.accounts || []).forEach(applyAccount);
    if (openLight) showLightDetail(openLight);
  }

  function showLightDetail(name) {
    const light = lastHealth && lastHealth.lights.find((l) => l.name === name);
    const panel = $("#health-detail");
    if (!light) return;
    $("#health-detail-title").textContent = `${light.label}: ${light.level}, ${light.summary}`;
    $("#health-detail-lines").replaceChildren(...(light.detail.length ? light.detail : ["nothing to report"]).map((line) => el("li", {}, line)));
    panel.hidden = false;
  }

  document.querySelectorAll("button.light").forEach((button) => button.addEventListener("click", () => {
    const name = button.dataset.light;
    const closing = openLight === name;
    document.querySelectorAll("button.light").forEach((b) => b.setAttribute("aria-expanded", "false"));
    openLight = closing ? null : name;
    if (closing) { $("#health-detail").hidden = true; return; }
    button.setAttribute("aria-expanded", "true");
    showLightDetail(name);
  }));

  async function pollHealth() {
    try {
      const response = await fetch(cfg.healthUrl, { credentials: "same-origin" });
      if (!response.ok) throw new Error(String(response.status));
      renderHealth(await response.json());
    } catch (e) {
      renderHealth({
        lights: ["broker", "listener", "stuck", "protection"].map((name) => ({
          name, label: document.querySelector(`#light-${name} .light-label`).textContent.replace(/:$/, ""),
          level: "red", summary: "desk server unreachable", detail: [`health request failed: ${e.message}`],
        })),
      });
    }
  }
  // The server pushes the strip over the socket every few seconds; the page asks for it itself
  // once at load and while the socket is down (then it says so: the server may be gone).
  pollHealth();
  setInterval(() => { if (!socket || socket.readyState !== WebSocket.OPEN) pollHealth(); }, 5000);

  // --- The socket: reconnect with backoff, snapshot on every (re)connect ----------------------

  async function loadSnapshot() {
    const response = await fetch(cfg.snapshotUrl, { credentials: "same-origin" });
    if (!response.ok) throw new Error("snapshot " + response.status);
    const snapshot = await response.json();
    (snapshot.contracts || []).forEach(noteContract);
    snapshot.orders.slice().reverse().forEach(applyOrder);
    const fresh = new Set(snapshot.positions.map((p) => p.key));
    for (const key of [...positions.keys()]) if (!fresh.has(key)) positions.delete(key);
    snapshot.positions.forEach(applyPosition);
    snapshot.accounts.forEach(applyAccount);
    renderPositions();
    renderWorkingCounts();
  }

  function handle(message) {
    if (message.type === "order") applyOrder(message.row);
    else if (message.type === "position") {
      applyPosition(message.row);
      if (message.account) applyAccount(message.account);
    }
    else if (message.type === "marks") {
      applyMarks(message.rows);
      // The last prices of the contracts the account trades: the chart's newest candle.
      for (const [contract, value] of Object.entries(message.prices || {})) chart.price(contract, value);
    }
    else if (message.type === "health") renderHealth(message);
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
  window.deskState = { orders, positions, accounts, chart, reconnect: () => socket && socket.close() };
  connect();
})();
