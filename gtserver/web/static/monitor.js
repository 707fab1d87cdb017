// The gtserver monitor page: renders /api/events (server-sent events) and
// sends the controls to /api/control/* with the session's CSRF token.
"use strict";

let csrf = null;

function element(tag, text, className) {
  const node = document.createElement(tag);
  if (text !== undefined && text !== null) node.textContent = String(text);
  if (className) node.className = className;
  return node;
}

function seconds(value) {
  if (value === null || value === undefined) return "–";
  if (value < 60) return value.toFixed(1) + " s";
  if (value < 3600) return Math.floor(value / 60) + " min " + Math.floor(value % 60) + " s";
  return Math.floor(value / 3600) + " h " + Math.floor((value % 3600) / 60) + " min";
}

function rate(value) {
  return value === null || value === undefined ? "–" : value.toFixed(1) + "/s";
}

function button(label, onClick, className) {
  const node = element("button", label, className);
  node.type = "button";
  node.addEventListener("click", onClick);
  return node;
}

function fillTable(id, rows, render, empty) {
  const body = document.querySelector("#" + id + " tbody");
  body.replaceChildren();
  if (!rows.length) {
    const row = element("tr");
    const cell = element("td", empty || "none", "empty");
    cell.colSpan = document.querySelectorAll("#" + id + " thead th").length;
    row.append(cell);
    body.append(row);
    return;
  }
  for (const item of rows) {
    const row = element("tr");
    for (const value of render(item)) {
      const cell = element("td");
      if (value instanceof Node) cell.append(value); else cell.textContent = value;
      row.append(cell);
    }
    body.append(row);
  }
}

function notice(text, isError) {
  const node = document.getElementById("notice");
  node.textContent = text;
  node.className = isError ? "notice error" : "notice";
  node.hidden = false;
}

async function control(name, body) {
  const response = await fetch("/api/control/" + name, {
    method: "POST", credentials: "same-origin",
    headers: {"Content-Type": "application/json", "X-CSRF-Token": csrf},
    body: JSON.stringify(body),
  });
  const answer = await response.json().catch(() => ({error: "no answer"}));
  if (response.ok) notice(name + ": done");
  else notice(name + ": " + (answer.error || response.status), true);
  return response.ok;
}

function renderRooms(rooms) {
  const box = document.getElementById("rooms");
  box.replaceChildren();
  const select = document.getElementById("message-room");
  const chosen = select.value;
  select.replaceChildren();
  if (rooms === null) {
    box.append(element("p", "The VR listener is not running.", "empty"));
    return;
  }
  for (const room of rooms) {
    const option = element("option", room.name);
    option.value = room.name;
    select.append(option);
    const card = element("div", null, "room");
    card.dataset.room = room.name;
    const title = element("h3", room.name + (room.paused ? " (paused)" : ""));
    const facts = element("p",
      room.members.length + " members, " + room.connections + " connections, " +
      rate(room.messages_per_second) + " messages, " + rate(room.ticks_per_second) +
      " pose frames, history " + room.history + ", open " + seconds(room.age), "facts");
    const actions = element("p", null, "actions");
    actions.append(room.paused
      ? button("Resume ticks", () => control("resume", {room: room.name}))
      : button("Pause ticks", () => control("pause", {room: room.name})));
    if (room.name !== "lobby") {
      actions.append(button("Close room", () => {
        if (confirm("Close room " + room.name + "?")) control("close-room", {room: room.name});
      }, "danger"));
    }
    const table = element("table");
    table.innerHTML = "<thead><tr><th>Member</th><th>Connections</th><th>Address</th>" +
      "<th>Last activity</th><th>Last pose</th></tr></thead><tbody></tbody>";
    const body = table.querySelector("tbody");
    for (const member of room.members) {
      const row = element("tr");
      row.append(element("td", member.user), element("td", member.connections),
                 element("td", member.addresses.join(", ")),
                 element("td", seconds(member.idle) + " ago"),
                 element("td", member.pose_age === null ? "none" : seconds(member.pose_age) + " ago"));
      body.append(row);
    }
    card.append(title, facts, actions, table);
    box.append(card);
  }
  if ([...select.options].some((option) => option.value === chosen)) select.value = chosen;
}

function render(state) {
  const server = state.server;
  document.getElementById("server").textContent =
    "version " + server.version + ", up " + seconds(server.uptime);
  fillTable("listeners", state.listeners, (l) => [l.name + " (" + l.description + ")",
    l.endpoint, l.where, l.connections === null ? "–" : l.connections]);
  const store = state.store;
  fillTable("store", [store], (s) => [s.engine,
    s.reachable === null ? "checking" : (s.reachable ? "yes" : "no: " + (s.error || "")),
    s.backlog, s.written, s.dropped, s.refused, s.lost]);
  renderRooms(state.rooms);
  fillTable("matches", state.matches, (m) => [m.game, m.source, m.players.join(", "),
    m.turn.join(", ") || "–", m.moves, seconds(m.age),
    m.last_move_age === null ? "no move yet" : seconds(m.last_move_age) + " ago",
    button("End", () => {
      if (confirm("End this match without a result?")) control("end-match", {match: m.id});
    }, "danger")], "no live match");
  const uttt = state.uttt;
  document.getElementById("uttt").textContent = uttt === null
    ? "The ultimate tic-tac-toe listener is not running."
    : "Waiting for a random opponent: " + (uttt.queue.map((entry) =>
        entry.user + " (" + seconds(entry.waiting) + ")").join(", ") || "nobody") +
      ". Challenges start a match at once" +
      (uttt.creating ? " (" + uttt.creating + " being created)." : ".");
  const eot = state.eot || {waiting: [], parked: []};
  fillTable("eot-waiting", eot.waiting, (w) => [w.game, w.session,
    w.players.length + " of " + w.size + (w.players.length ? " (" + w.players.join(", ") + ")" : ""),
    seconds(w.idle)]);
  fillTable("eot-parked", eot.parked, (p) => [p.game, p.session, p.requests]);
  fillTable("connected", state.presence.connected, (c) => [c.user, c.source, c.address || "",
    seconds(c.seconds), button("Disconnect", () => {
      if (confirm("Disconnect " + c.user + "?")) control("disconnect", {user: c.user, listener: c.source});
    }, "danger")], "nobody");
  document.getElementById("dropouts-title").textContent =
    "Disconnected in the last " + state.presence.window_minutes + " minutes";
  fillTable("dropouts", state.presence.dropouts, (d) => [d.user, d.source, d.address || "",
    seconds(d.ago) + " ago", seconds(d.stayed)], "nobody");
}

async function start() {
  const response = await fetch("/api/session", {credentials: "same-origin"});
  if (!response.ok) { window.location = "/login"; return; }
  csrf = (await response.json()).csrf;
  document.getElementById("logout-csrf").value = csrf || "";
  document.getElementById("message-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    const text = document.getElementById("message-text");
    if (await control("message", {room: document.getElementById("message-room").value,
                                  text: text.value})) text.value = "";
  });
  listen();
}

function listen() {
  const live = document.getElementById("live");
  const events = new EventSource("/api/events");
  events.addEventListener("state", (event) => {
    live.textContent = "live";
    live.className = "badge live";
    render(JSON.parse(event.data));
  });
  events.addEventListener("error", async () => {
    live.textContent = "reconnecting";
    live.className = "badge";
    if (events.readyState === EventSource.CLOSED) {
      // Refused (the session ended, the daemon restarted): log in again, or retry.
      const check = await fetch("/api/session", {credentials: "same-origin"}).catch(() => null);
      if (check && check.status === 401) window.location = "/login";
      else setTimeout(listen, 2000);
    }
  });
}

document.addEventListener("DOMContentLoaded", start);
