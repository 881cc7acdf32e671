// chat.js: the support chat's live part. The page shows the room's last messages and
// carries the position of the newest one in the hub's room; the hub's client
// (/realtime.js) follows the room from there, through reconnections to any instance,
// and this script adds each message it receives. Without script the page still works:
// the form posts, and the page shows the room when it loads.
(function () {
  "use strict";
  var list = document.getElementById("messages");
  var live = document.getElementById("live");
  var online = document.getElementById("online");
  var form = document.getElementById("chatform");
  var input = document.getElementById("body");
  var problem = document.getElementById("chat-error");
  var room = list.dataset.room;

  function show(m) {
    if (list.querySelector('[data-id="' + m.id + '"]')) return; // shown already
    var empty = document.getElementById("empty");
    if (empty) empty.remove();
    var p = document.createElement("p"), b = document.createElement("b"), small = document.createElement("small");
    p.className = "msg";
    p.dataset.id = m.id;
    b.textContent = m.user;
    small.textContent = m.at.replace("T", " ").replace(/\.\d+/, "").replace("Z", " UTC") + ", via instance " + m.by;
    p.append(b, " " + m.body + " ", small);
    list.append(p);
    list.scrollTop = list.scrollHeight;
  }

  function whoIsOnline() {
    fetch("/chat/online", {headers: {Accept: "application/json"}})
      .then(function (r) { return r.ok ? r.json() : null; })
      .then(function (v) { if (v) online.textContent = v.online.length ? v.online.join(", ") : "nobody yet"; })
      .catch(function () {});
  }

  var rt = new TwiceRealtime("/realtime", {
    onMessage: function (r, m) { if (r === room) show(m); },
    onLost: function () {
      // The room's history no longer reaches back to this page's position (a day
      // without messages, or a reset): what came in between is not shown.
      problem.textContent = "Some messages may be missing here: reload the page to see them.";
    },
    onStatus: function (s) {
      live.dataset.status = s;
      live.textContent = s === "open" ? "live" : s === "connecting" ? "connecting…" : "reconnecting…";
      if (s === "open") setTimeout(whoIsOnline, 300);
    },
  });
  // Follow the room after the newest message the page shows, not from the moment the
  // socket opens, so that a message posted in between is not missed.
  rt.subscribe(room, {offset: list.dataset.offset, epoch: list.dataset.epoch});
  setInterval(whoIsOnline, 5000);
  list.scrollTop = list.scrollHeight;

  form.addEventListener("submit", function (ev) {
    ev.preventDefault();
    var body = input.value;
    fetch("/chat", {method: "POST", headers: {Accept: "application/json"}, body: new URLSearchParams({body: body})})
      .then(function (r) { return r.json(); })
      .then(function (v) {
        if (v.error) { problem.textContent = v.error; return; }
        problem.textContent = "";
        input.value = "";
        show(v); // the hub brings it too; whichever comes first shows it
      })
      .catch(function () { problem.textContent = "Not sent: the shop did not answer. Try again."; });
  });
})();
